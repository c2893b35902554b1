"""The evaluation recipe behind `evaluate.py`: models x budget grid on one dataset, through Lightning's
predict loop (so multi-GPU evaluation uses the same `trainer/` strategies as training), then metrics, report,
plots."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from mvqa.data.grading import grade_answer
from mvqa.data.images import load_image, resolve_image_path
from mvqa.data.loading import load_dataset, split_for
from mvqa.data.prompts import chat_prompt, format_question, parse_item_answer
from mvqa.data.records import VQAItem, kind_counts
from mvqa.data.storage import atomic_path, read_items_jsonl
from mvqa.eval import compute_metrics, format_table, write_report
from mvqa.eval.metrics import UNFORCED
from mvqa.generation.budget import BudgetPoint, budget_points
from mvqa.generation.engine import GenerationParams, GenerationRequest
from mvqa.models.bundle import ModelBundle

log = logging.getLogger(__name__)


def budget_id(point: BudgetPoint | None) -> str:
    if point is None:
        return UNFORCED
    return point.id


def budget_dict(point: BudgetPoint | None) -> dict[str, Any]:
    if point is None:
        return {"max_thinking_tokens": None, "min_thinking_tokens": 0, "num_waits": 0, "wait_string": None}
    return {k: getattr(point, k)
            for k in ("max_thinking_tokens", "min_thinking_tokens", "num_waits", "wait_string")}


class BudgetEvaluator(pl.LightningModule):
    """predict_step: one batch of items, generated at every budget point, as prediction records."""

    def __init__(self, bundle: ModelBundle, label: str, engine, points: list[BudgetPoint | None],
                 params: GenerationParams, prompt: str) -> None:
        super().__init__()
        self.model, self.bundle, self.label, self.engine = bundle.model, bundle, label, engine
        self.points, self.params, self.prompt = points, params, prompt

    def predict_step(self, items: list[VQAItem], batch_idx: int) -> list[dict[str, Any]]:
        requests = [
            GenerationRequest(prompt=chat_prompt(self.bundle.processor, format_question(it, self.prompt)),
                              images=[load_image(it)], id=it.id) for it in items]
        records = []
        for point in self.points:
            generations = self.engine.generate(self.bundle, requests,
                                               dataclasses.replace(self.params, budget=point))
            records += [self.record(items[g.request_index], g, point) for g in generations]
        return records

    def record(self, item: VQAItem, gen, point: BudgetPoint | None) -> dict[str, Any]:
        parsed = parse_item_answer(item, gen.text)
        grade = grade_answer(item, parsed)
        thinking = gen.thinking if gen.thinking is not None else (parsed.thinking or "")
        thinking_tokens = gen.thinking_tokens if gen.thinking_tokens is not None else len(
            self.bundle.tokenizer(thinking, add_special_tokens=False)["input_ids"])
        return {
            "model": self.label, "budget_id": budget_id(point), "budget": budget_dict(point),
            "item_id": item.id,
            "modality": item.modality, "content_type": item.content_type, "kind": item.kind,
            "answer_label": item.answer_label if item.is_mcq else item.answer,
            "raw_output": gen.text, "thinking": thinking, "parsed_answer": grade.answer,
            "parse_status": "ok" if grade.answer else "unparseable", "correct": grade.correct,
            "exact_match": grade.exact_match, "recall": grade.recall, "f1": grade.f1,
            "thinking_tokens": thinking_tokens, "waits_used": gen.waits_used or 0,
            "forced_end": bool(gen.forced_end),
        }


def evaluation_items(cfg: DictConfig) -> list[VQAItem]:
    """The dataset's test split when it has one, minus every item of `eval.exclude` (a curated set)."""
    split = cfg.eval.split or split_for(cfg.dataset, "test")
    items, _ = load_dataset(cfg.dataset, split=split)
    n_read, notes = len(items), []
    if cfg.eval.exclude:
        excluded = _item_keys(Path(cfg.eval.exclude))
        items = [it for it in items if (it.image, it.question) not in excluded]
        notes.append(f"{n_read - len(items)} excluded as in {cfg.eval.exclude}")
    unlabelled = [it.id for it in items if not it.is_mcq and not it.answer.strip()]
    if unlabelled:
        items = [it for it in items if it.is_mcq or it.answer.strip()]
        notes.append(f"{len(unlabelled)} without a gold answer (e.g. {unlabelled[:3]})")
    if cfg.eval.kinds:
        unknown = sorted(set(cfg.eval.kinds) - {"mcq", "closed", "open"})
        if unknown:
            raise ValueError(f"eval.kinds: unknown kind(s) {unknown}; expected some of mcq, closed, open")
        before = len(items)
        items = [it for it in items if it.kind in cfg.eval.kinds]
        notes.append(f"{before - len(items)} not of eval.kinds={list(cfg.eval.kinds)}")
    if cfg.eval.limit and len(items) > cfg.eval.limit:
        notes.append(f"{len(items) - cfg.eval.limit} past eval.limit={cfg.eval.limit}")
        items = items[: cfg.eval.limit]
    counts = ", ".join(f"{k} {n}" for k, n in kind_counts(items).items())
    print(f"evaluate: {cfg.dataset.name}[{split}] {n_read} -> {len(items)} items ({counts})"
          + (f"; left out: {'; '.join(notes)}" if notes else ""))
    if not items:
        raise ValueError(f"no items to evaluate in dataset {cfg.dataset.name!r} split {split!r}: "
                         + ("; ".join(notes) or "it is empty"))
    return items


def _item_keys(path: Path) -> set[tuple[str, str]]:
    if path.suffix == ".jsonl":
        return {(it.image, it.question) for it in read_items_jsonl(path)}
    from mvqa.data.readers import read_pmc_vqa

    return {(it.image, it.question) for it in read_pmc_vqa(path)[0]}


def load_models(cfg: DictConfig) -> tuple[ModelBundle, list[tuple[str, str | None]]]:
    """The base with every adapter attached (one copy of the base in memory), and (label, adapter name) per
    model to evaluate (None: the bare base). Adapters load here, before any generation, so one that does not
    match the base fails at once with both names."""
    from mvqa.models.load import load_model
    from mvqa.models.lora import load_adapter

    bundle = load_model(cfg.model)
    entries: list[tuple[str, str | None]] = [("base", None)] if cfg.include_base else []
    model = bundle.model
    for k, path in enumerate(cfg.adapters):
        name = f"adapter{k}"
        model = load_adapter(model, path, adapter_name=name, base_check=cfg.model.adapter_base_check)
        bundle.adapter_dirs[name] = str(path)
        entries.append((f"base+{Path(path).parent.name}/{Path(path).name}", name))
    if not entries:
        raise ValueError("nothing to evaluate: include_base=false and no adapters given")
    bundle.model = model.eval()
    return bundle, entries


@contextlib.contextmanager
def _active(model, adapter: str | None):
    """Generate with one adapter switched on, or (None) with the bare base."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        yield
    elif adapter is None:
        with model.disable_adapter():
            yield
    else:
        model.set_adapter(adapter)
        yield


def evaluation_runs(cfg: DictConfig, models: list[tuple[str, str | None]], points: list[BudgetPoint | None]
                    ) -> list[tuple[str, str | None, list[BudgetPoint | None], str]]:
    """(label, adapter, budget points, prompt) per predict loop. The bare base runs the grid with the shared
    prompt (eval.base_budget same|both) and once unforced with its own prompt (unforced|both)."""
    mode = cfg.eval.base_budget
    if mode not in ("same", UNFORCED, "both"):
        raise ValueError(f"eval.base_budget must be same, unforced or both, got {mode!r}")
    runs = []
    for label, adapter in models:
        if adapter is not None:
            runs.append((label, adapter, points, cfg.eval.prompt))
            continue
        if mode in (UNFORCED, "both"):
            runs.append((label, None, [None], cfg.eval.base_prompt or cfg.eval.prompt))
        if mode in ("same", "both"):
            runs.append((label, None, points, cfg.eval.prompt if mode == "both" else
                         cfg.eval.base_prompt or cfg.eval.prompt))
    return runs


def run_evaluation(cfg: DictConfig, output_dir: str | Path, run: Any = None) -> dict[str, Any]:
    output_dir = Path(output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    items = evaluation_items(cfg)
    bundle, models = load_models(cfg)
    points = budget_points(cfg.budget)
    engine = instantiate(cfg.engine)
    loader = DataLoader(items, batch_size=cfg.eval.batch_size, collate_fn=list)
    predictions: list[dict[str, Any]] = []
    for label, adapter, model_points, prompt in evaluation_runs(cfg, models, points):
        module = BudgetEvaluator(bundle, label, engine, model_points, engine.params, prompt)
        trainer: pl.Trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
        with _active(bundle.model, adapter):
            predictions += _gathered(
                [r for batch in trainer.predict(module, dataloaders=loader) for r in batch])
    if not _is_rank_zero():
        return {}
    with atomic_path(output_dir / "predictions.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions))
    metrics = compute_metrics(predictions, n_bootstrap=cfg.eval.n_bootstrap, seed=cfg.seed)
    report = write_report(metrics, output_dir)
    print(format_table(metrics))
    print(f"report: {report}\nplots: {sorted(str(p) for p in output_dir.glob('*.png'))}")
    log_evaluation(run, metrics, predictions, items, report, cfg.eval.wandb_table_rows)
    best = max((r["accuracy"] for r in metrics["runs"] if r["model"] != "base" or len(models) == 1),
               default=None)
    return {"metrics": metrics, "best_accuracy": best}


def _is_rank_zero() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def _gathered(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """All ranks' records (a distributed sampler pads with repeats: keep one per model, budget and item)."""
    if not torch.distributed.is_initialized():
        return records
    parts: list[list[dict[str, Any]]] = [None] * torch.distributed.get_world_size()  # type: ignore[list-item]
    torch.distributed.all_gather_object(parts, records)
    unique = {(r["model"], r["budget_id"], r["item_id"]): r for part in parts for r in part}
    return list(unique.values())


def log_evaluation(run, metrics: dict, predictions: list[dict], items: list[VQAItem], report: Path,
                   table_rows: int) -> None:
    """W&B: accuracy per budget against thinking tokens, a predictions table with images, and the report."""
    if run is None:
        return
    import wandb

    for model in metrics["models"]:
        run.define_metric(f"{model}/accuracy", step_metric=f"{model}/thinking_tokens")
    for r in metrics["runs"]:
        run.log({f"{r['model']}/thinking_tokens": r["mean_thinking_tokens"],
                 f"{r['model']}/accuracy": r["accuracy"],
                 f"{r['model']}/waits": r["mean_waits_used"], f"{r['model']}/budget": r["budget_id"]})
    by_id = {it.id: it for it in items}
    table = wandb.Table(
        columns=["model", "budget", "image", "question", "kind", "choices", "thinking", "answer",
                 "label", "correct"])
    for p in predictions[:table_rows]:
        it = by_id[p["item_id"]]
        table.add_data(p["model"], p["budget_id"], wandb.Image(str(resolve_image_path(it))), it.question,
                       it.kind,
                       " | ".join(f"{k}: {v}" for k, v in it.choice_map().items()), p["thinking"],
                       p["parsed_answer"], p["answer_label"], p["correct"])
    run.log({"predictions": table, "report": wandb.Html(f"<pre>{report.read_text()}</pre>")})
    run.summary.update({f"{m}/best_accuracy": s["performance"] for m, s in metrics["scaling"].items()})
