"""Curation (steps 1-4): `python generate.py [overrides]`; see conf/generate.yaml."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from mvqa.config import setup

setup()


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> float | None:
    from mvqa.curate.pipeline import run_curation
    from mvqa.tracking import job_run

    with job_run(cfg, "generate") as run:
        summary = run_curation(cfg, Path(cfg.paths.output_dir), run)
    # What hparams_search sweeps over sampler weights optimise: a diversity figure of the curated set.
    return ((summary.get("diversity") or {}).get("output") or {}).get(cfg.optimized_metric)


if __name__ == "__main__":
    main()
