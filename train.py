"""Fine-tuning (steps 5-6): `python train.py [overrides]`; see conf/train.yaml."""

import hydra
from omegaconf import DictConfig

from mvqa.config import setup

setup()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from mvqa.data.auto import resolve_dataset
    from mvqa.tracking import job_run
    from mvqa.train.recipe import run_training

    cfg = resolve_dataset(cfg)  # dataset=auto -> curated or synthetic, before W&B records the config
    with job_run(cfg, "train") as run:
        result = run_training(cfg, cfg.paths.output_dir, run)
    return result.get("val_acc")  # the metric hparams_search sweeps optimise


if __name__ == "__main__":
    main()
