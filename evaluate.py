"""Evaluation (step 7): `python evaluate.py [overrides]`; see conf/evaluate.yaml."""

import hydra
from omegaconf import DictConfig

from mvqa.config import setup

setup()


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    from mvqa.eval.runner import run_evaluation
    from mvqa.tracking import job_run

    with job_run(cfg, "evaluate") as run:
        result = run_evaluation(cfg, cfg.paths.output_dir, run)
    return result.get("best_accuracy")


if __name__ == "__main__":
    main()
