"""The fine-tuning recipe behind `train.py`, top to bottom: model -> data -> Wait formatting -> fit ->
save."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mvqa.data.auto import AUTO
from mvqa.data.collators import VQACollator
from mvqa.data.datamodule import VQADataModule
from mvqa.data.loading import load_dataset, split_for
from mvqa.data.records import VQAItem
from mvqa.data.stats import StageStats
from mvqa.data.storage import write_json
from mvqa.models.load import load_model
from mvqa.models.lora import count_parameters, prepare_trainable, save_adapter
from mvqa.tracking import log_artifact, wants_model_artifact
from mvqa.train.callbacks import build_callbacks, restore_best
from mvqa.train.module import VQAFineTuner

log = logging.getLogger(__name__)


def split_train_val(cfg: DictConfig) -> tuple[list[VQAItem], list[VQAItem], StageStats]:
    """Validation comes from the dataset's own split when it has one (`dataset.val_split`), else a seeded
    hold-out of `data.val_fraction` of the items."""
    items, stats = load_dataset(cfg.dataset)
    val_split = split_for(cfg.dataset, "val")
    if val_split:
        val, _ = load_dataset(cfg.dataset, split=val_split)
        return items, val, stats
    order = list(range(len(items)))
    random.Random(cfg.seed).shuffle(order)
    n_val = round(len(items) * cfg.data.val_fraction)
    held = set(order[:n_val])
    return [it for i, it in enumerate(items) if i not in held], [items[i] for i in sorted(held)], stats


def delimiter_ids(bundle) -> list[int]:
    """Ids of the think/answer delimiters that are single tokens of the vocabulary."""
    t = bundle.special_tokens
    ids = [bundle.tokenizer.convert_tokens_to_ids(s)
           for s in (t.think_start, t.think_end, t.answer_start, t.answer_end)]
    return [i for i in ids if i is not None and i != bundle.tokenizer.unk_token_id]


def trainable_token_rows(recipe, bundle, train_items: list[VQAItem]) -> list[int] | None:
    """Token ids whose embedding and LM-head rows train beside the adapters (recipe.train_delimiter_rows,
    recipe.train_target_rows), or None."""
    ids = set(delimiter_ids(bundle)) if recipe.train_delimiter_rows else set()
    if recipe.train_target_rows:
        texts = ["".join(it.extra["target"].values()) for it in train_items]
        ids |= {i for row in bundle.tokenizer(texts, add_special_tokens=False)["input_ids"] for i in row}
    return sorted(ids) or None


def _loggers(kind: str, output_dir: Path, run: Any) -> list:
    """Lightning's metric loggers: none for logger=none, RUN_DIR/csv/metrics.csv for csv, and for wandb both
    (the CSV keeps the step metrics on disk whatever W&B's mode)."""
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    if kind == "none":
        loggers = []
    else:
        # Lightning's CSV logger deletes a metrics.csv it finds, so a resumed run writes its own
        # csv/attempt-N/
        # and the steps logged before the kill stay in csv/metrics.csv; flushed at every logged step, so a
        # killed run keeps the metrics of the steps it finished.
        attempt = 1
        while (output_dir / "csv" / _attempt_dir(attempt) / "metrics.csv").exists():
            attempt += 1
        loggers = [
            CSVLogger(output_dir, name="csv", version=_attempt_dir(attempt), flush_logs_every_n_steps=1)]
    if run is not None:
        loggers.append(WandbLogger(experiment=run, log_model=False))
    return loggers


def _attempt_dir(attempt: int) -> str:
    return "" if attempt == 1 else f"attempt-{attempt}"


def run_training(cfg: DictConfig, output_dir: str | Path, run: Any = None) -> dict[str, Any]:
    output_dir = Path(output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.dataset.name == AUTO:
        raise ValueError(
            "run_training: dataset=auto is not resolved; pass mvqa.data.auto.resolve_dataset(cfg) "
            "(train.py does, before W&B records the config)")

    # 1. Data, with traces formatted as targets (Waits inserted; unparseable or mismatched traces rejected).
    bundle = load_model(cfg.model)
    train_items, val_items, load_stats = split_train_val(cfg)
    formatter = instantiate(cfg.trace_format)
    train_items, format_stats = formatter(train_items, bundle.special_tokens)
    val_items, val_format_stats = formatter(val_items, bundle.special_tokens)
    for stats in (load_stats, format_stats, val_format_stats):
        log.info(stats.summary())
    if not train_items:
        raise RuntimeError(f"no training items left after formatting: {format_stats.drop_reasons}")

    # 2. What is trained on the base: LoRA adapters (plus any token rows) or the full language model.
    model = prepare_trainable(bundle.model, cfg.recipe, trainable_token_rows(cfg.recipe, bundle, train_items))
    trainable, total = count_parameters(model)
    log.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / max(total, 1))
    collate = {"processor": bundle.processor, "prompt_template": cfg.data.prompt,
               "max_length": cfg.data.max_length}
    train_collator = VQACollator(mode="train", **collate)
    datamodule = VQADataModule(train_items, val_items, train_collator,
                               VQACollator(mode="generate", **collate),
                               batch_size=cfg.data.batch_size, eval_batch_size=cfg.data.eval_batch_size,
                               num_workers=cfg.data.num_workers, seed=cfg.seed,
                               val_generate_limit=OmegaConf.select(cfg, "data.val_generate_limit"))

    # 3. Fit. Checkpoints are ranked by val/acc (conf/callbacks); the best one's weights are what is saved.
    module = VQAFineTuner(model, bundle.tokenizer, cfg.recipe, max_new_tokens=cfg.data.val_max_new_tokens,
                          gradient_checkpointing=cfg.gradient_checkpointing)
    validates = bool(val_items) and cfg.trainer.limit_val_batches != 0
    loggers = _loggers(cfg.logger.kind, output_dir, run)
    callbacks = build_callbacks(cfg.callbacks, output_dir / "checkpoints", validates, logs=bool(loggers))
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers, callbacks=callbacks)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.resume_from)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if validates and module.validated_at_step != trainer.global_step:
        # max_steps stopped between validations
        trainer.validate(module, datamodule=datamodule, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    last_score = metrics.get(cfg.callbacks.monitor) if validates else None
    chosen = restore_best(module, trainer, cfg.callbacks, last_score)

    # 4. Save: the adapter alone for LoRA runs, the whole model for full fine-tunes; both with the processor.
    if not trainer.is_global_zero:
        return {}
    saved = _save(model, bundle, cfg, output_dir / ("adapter" if module.adapter_only else "model"))
    if cfg.export_dir:
        _save(model, bundle, cfg, Path(cfg.export_dir))
    result = {
        # val_acc: the best validation accuracy seen (what hparams_search maximises); val_acc_last:
        # the final one.
        "metrics": metrics, "val_acc": _best_val_acc(chosen, cfg.callbacks, metrics),
        "val_acc_last": metrics.get("val/acc"), "global_step": trainer.global_step,
        "weights": chosen["weights"], "best_checkpoint": chosen["best_checkpoint"],
        "saved": str(saved), "trainable_parameters": trainable, "total_parameters": total,
        "n_train": len(train_items), "n_val": len(val_items),
        "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
        "stats": {"load": load_stats.to_dict(), "format": format_stats.to_dict(),
                  "format_val": val_format_stats.to_dict(),
                  "encoding": {"truncated": train_collator.stats.truncated,
                               "too_long": train_collator.stats.too_long}},
    }
    write_json(result, output_dir / "metrics.json")
    if OmegaConf.select(cfg, "dataset.name") == "curated":
        log_artifact(run, cfg.dataset.path, f"curated-{Path(cfg.dataset.path).parent.name}", "dataset",
                     use=True)
    if wants_model_artifact(run, cfg.logger):  # logger.log_artifacts: online | always | never
        log_artifact(run, saved, f"{saved.name}-{run.id}", "model")
    return result


def _best_val_acc(chosen: dict[str, Any], callbacks: DictConfig, metrics: dict[str, float]) -> float | None:
    if callbacks.monitor == "val/acc" and callbacks.mode == "max" and chosen["best_score"] is not None:
        return chosen["best_score"]
    return metrics.get("val/acc")


def _save(model, bundle, cfg: DictConfig, path: Path) -> Path:
    if cfg.recipe.method in ("lora", "qlora"):
        save_adapter(model, path)
    else:
        model.save_pretrained(path)
    bundle.processor.save_pretrained(path)
    return path
