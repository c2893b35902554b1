"""Lightning callbacks from the `callbacks` config group, and the choice of the weights a run saves."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class ProgressLine(pl.Callback):
    """A plain line every `every_s` seconds: `progress: epoch 2/3, step 410/750, 02:10 elapsed, ETA 01:48`."""

    def __init__(self, every_s: float) -> None:
        self.every_s, self.start, self.shown = every_s, 0.0, 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = self.shown = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.monotonic()
        if now - self.shown < self.every_s or not trainer.is_global_zero:
            return
        self.shown = now
        total, step = int(trainer.estimated_stepping_batches), trainer.global_step
        elapsed = now - self.start
        eta = elapsed / max(step, 1) * max(total - step, 0)
        print(f"progress: epoch {trainer.current_epoch + 1}/{trainer.max_epochs}, step {step}/{total}, "
              f"{_mmss(elapsed)} elapsed, ETA {_mmss(eta)}", flush=True)


def _mmss(seconds: float) -> str:
    return f"{int(seconds) // 60:02d}:{int(seconds) % 60:02d}"


def build_callbacks(conf: DictConfig, checkpoint_dir: Path, validates: bool,
                    logs: bool = True) -> list[pl.Callback]:
    """ModelCheckpoint (best `keep` by `monitor`, plus last), optional EarlyStopping, LearningRateMonitor.

    Lightning accepts save_top_k > 1 only with a monitor. Without validation nothing is logged to rank by, so
    checkpoints rank by `step` (always among the candidates), which keeps the newest `keep` of them.
    """
    if conf.mode not in ("max", "min"):
        raise ValueError(f"callbacks.mode must be 'max' or 'min', got {conf.mode!r}")
    if conf.weights not in ("best", "last"):
        raise ValueError(f"callbacks.weights must be 'best' or 'last', got {conf.weights!r}")
    monitor, mode = (conf.monitor, conf.mode) if validates else ("step", "max")
    # A metric name with a slash would make a sub-directory: val/acc is written val_acc.
    name = "epoch={epoch}-step={step}"
    if monitor != "step":
        name += f"-{monitor.replace('/', '_')}={{{monitor}:.4f}}"
    callbacks: list[pl.Callback] = [
        pl.callbacks.ModelCheckpoint(
            dirpath=checkpoint_dir,
            filename=name,
            auto_insert_metric_name=False,
            monitor=monitor,
            mode=mode,
            save_top_k=conf.keep,
            save_last=False,
            every_n_train_steps=conf.every_n_steps or None,
        )
    ]
    if conf.save_last:
        # A callback of its own: Lightning's save_last rewrites last.ckpt only when a checkpoint enters the
        # top
        # k, so after an epoch that did not improve, last.ckpt would be an older step than the run's last.
        callbacks.append(
            pl.callbacks.ModelCheckpoint(
                dirpath=checkpoint_dir,
                filename="last",
                monitor=None,
                save_top_k=1,
                enable_version_counter=False,
                every_n_train_steps=conf.every_n_steps or None,
            )
        )
    if conf.early_stopping:
        if not validates:
            raise ValueError(
                "callbacks.early_stopping needs validation (val items and trainer.limit_val_batches "
                "other than 0)"
            )
        callbacks.append(
            pl.callbacks.EarlyStopping(
                monitor=conf.monitor, mode=conf.mode, patience=conf.patience, min_delta=conf.min_delta
            )
        )
    if conf.progress_every_s:
        callbacks.append(ProgressLine(conf.progress_every_s))
    if conf.lr_monitor and logs:  # logger=none: no logger to take the learning rate (Lightning refuses)
        callbacks.append(pl.callbacks.LearningRateMonitor())
    return callbacks


def restore_best(
    module: pl.LightningModule, trainer: pl.Trainer, conf: DictConfig, last_score: float | None
) -> dict[str, Any]:
    """Load the best checkpoint's weights into `module` when callbacks.weights=best and it beats the weights
    in
    memory; returns which weights the module holds and the best score seen.

    `last_score` is the monitored value of the weights in memory when a validation after fit measured them
    (max_steps can stop training between two validations); those weights win when they score better.
    """
    ckpt = next((c for c in trainer.checkpoint_callbacks if c.monitor == conf.monitor), None)
    ranked = ckpt is not None and bool(ckpt.best_model_path)
    best_score = float(ckpt.best_model_score) if ranked and ckpt.best_model_score is not None else None
    better = (lambda a, b: a > b) if conf.mode == "max" else (lambda a, b: a < b)
    scores = [s for s in (best_score, last_score) if s is not None]
    best_seen = (max if conf.mode == "max" else min)(scores) if scores else None
    info = {
        "weights": "last",
        "best_checkpoint": ckpt.best_model_path if ranked else None,
        "best_score": best_seen,
        "last_score": last_score,
    }
    if conf.weights == "last" or best_score is None:
        return info
    if last_score is not None and not better(best_score, last_score):
        return info  # the final weights are at least as good as the best checkpoint
    state = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=False)["state_dict"]
    missing, unexpected = module.load_state_dict(state, strict=False)
    trainable = {f"model.{n}" for n, p in module.model.named_parameters() if p.requires_grad}
    if unexpected or trainable & set(missing):
        raise RuntimeError(
            f"{ckpt.best_model_path}: does not hold this run's trainable weights "
            f"(missing {sorted(trainable & set(missing))[:3]}, unexpected {unexpected[:3]})"
        )
    log.info(
        "saving the best checkpoint's weights (%s=%.4f): %s", conf.monitor, best_score, ckpt.best_model_path
    )
    return {**info, "weights": "best"}
