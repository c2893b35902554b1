"""The three entries (`mvqa-generate`, `mvqa-train`, `mvqa-evaluate`; the top-level generate.py, train.py and
evaluate.py call these). Configs come from the checkout's conf/ when there is one, else from the installed
package (`pkg://mvqa._conf`, where the wheel puts conf/); see mvqa/config.py."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from mvqa.config import HYDRA_CONFIG_PATH, setup

setup()


@hydra.main(version_base="1.3", config_path=HYDRA_CONFIG_PATH, config_name="generate")
def generate(cfg: DictConfig) -> float | None:
    """Curation (steps 1-4); see conf/generate.yaml."""
    from mvqa.curate.pipeline import run_curation
    from mvqa.tracking import job_run

    with job_run(cfg, "generate") as run:
        summary = run_curation(cfg, Path(cfg.paths.output_dir), run)
    # What hparams_search sweeps over sampler weights optimise: a diversity figure of the curated set.
    return ((summary.get("diversity") or {}).get("output") or {}).get(cfg.optimized_metric)


@hydra.main(version_base="1.3", config_path=HYDRA_CONFIG_PATH, config_name="train")
def train(cfg: DictConfig) -> float | None:
    """Fine-tuning (steps 5-6); see conf/train.yaml."""
    from mvqa.data.auto import resolve_dataset
    from mvqa.tracking import job_run
    from mvqa.train.recipe import run_training

    cfg = resolve_dataset(cfg)  # dataset=auto -> curated or synthetic, before W&B records the config
    with job_run(cfg, "train") as run:
        result = run_training(cfg, cfg.paths.output_dir, run)
    return result.get("val_acc")  # the best val/acc: what hparams_search sweeps optimise


@hydra.main(version_base="1.3", config_path=HYDRA_CONFIG_PATH, config_name="evaluate")
def evaluate(cfg: DictConfig) -> float | None:
    """Evaluation (step 7); see conf/evaluate.yaml."""
    from mvqa.eval.runner import run_evaluation
    from mvqa.tracking import job_run

    with job_run(cfg, "evaluate") as run:
        result = run_evaluation(cfg, cfg.paths.output_dir, run)
    return result.get("best_accuracy")
