"""Schema of the `callbacks/` group: checkpointing, early stopping and which weights a training run saves."""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "callbacks"


@dataclass
class CallbacksConf:
    # The metric the best checkpoints are ranked by. Runs without validation (no val items, or
    # trainer.limit_val_batches=0) rank by `step` instead, so `keep` then keeps the newest checkpoints.
    monitor: str = "val/acc"
    mode: str = "max"  # max | min
    keep: int = "${oc.select:checkpoint_keep,1}"  # type: ignore[assignment]  # best N besides last.ckpt; -1: all
    every_n_steps: int = "${oc.select:checkpoint_every_n_steps,0}"  # type: ignore[assignment]  # 0: per epoch
    save_last: bool = True
    # Stop when `monitor` has not improved by min_delta over `patience` validations; needs validation.
    early_stopping: bool = False
    patience: int = 3
    min_delta: float = 0.0
    lr_monitor: bool = True
    # Every N seconds, one console line: epoch, step of all steps, elapsed time and ETA (for runs whose output
    # goes to a log file, where the progress bar does not show; the demo's bootstraps). null: off.
    progress_every_s: float | None = None
    # What RUN_DIR/adapter (or model/) and export_dir hold: best (the best checkpoint by `monitor`, the last
    # weights when none was ranked) | last (the weights training ended with).
    weights: str = "best"


SCHEMAS = {"schema_callbacks": CallbacksConf}
