"""Exports of a curated set: the seed's `final.csv`, the partial traces, item JSONL, LLaVA conversations,
images.

Every file is written under a temporary name and renamed; `final.csv` is written last, so its presence means
the export finished.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pandas as pd

from mvqa.data.images import BadImageError, resolve_image_path
from mvqa.data.prompts import PROMPTS, format_question, parse_item_answer
from mvqa.data.records import LETTERS, VQAItem
from mvqa.data.stats import StageStats
from mvqa.data.storage import atomic_path, write_items_jsonl, write_json

SEED_COLUMNS = ["figure_path", "question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D",
                "Answer_label", "generated_reasoning", "generated_answer", "raw_output"]
# After the seed's columns (its readers ignore it): SLAKE's CLOSED/OPEN for a free-text item, empty for an mcq
# one, so a re-read (dataset=curated) keeps each item's kind, closed answers other than yes/no included.
KIND_COLUMN = "answer_type"


def seed_frame(items: list[VQAItem]) -> pd.DataFrame:
    """Items as the seed's release CSV (a fifth choice, if any, adds a `Choice E` column), plus each item's
    kind. A closed or open item leaves the choices and Answer_label empty; its answer text is in `Answer`."""
    width = max((len(it.choices) for it in items), default=4)
    # A set of multiple-choice items keeps exactly the seed's columns; closed/open items add their
    # answer_type.
    kinds = [KIND_COLUMN] if any(not it.is_mcq for it in items) else []
    columns = SEED_COLUMNS[:3] + [f"Choice {c}" for c in LETTERS[: max(width, 4)]] + SEED_COLUMNS[7:] + kinds
    rows = []
    for it in items:
        row = {"figure_path": it.image, "question": it.question, "Answer": it.answer,
               "Answer_label": it.answer_label or ""}
        if kinds:
            row[KIND_COLUMN] = "" if it.is_mcq else it.kind.upper()
        row.update({f"Choice {c}": text for c, text in it.choice_map().items()})
        row.update(trace_columns(it))
        rows.append(row)
    return pd.DataFrame(rows, columns=columns).fillna("")


def assistant_turn(item: VQAItem) -> str:
    """What the model is taught to say: the trace when there is one, else the answer (its text for a closed or
    open item, the letter for a multiple-choice one). Never empty: that would teach the model to say
    nothing."""
    text = trace_columns(item)["raw_output"].strip()
    if not text:
        text = (item.answer_label or "") if item.is_mcq else item.answer.strip()
    if not text:
        raise ValueError(
            f"export: item {item.id!r} ({item.kind}) has neither a trace (extra.raw_output) nor an "
            "answer to write as its assistant turn")
    return text


def trace_columns(item: VQAItem) -> dict[str, str]:
    """The seed's three trace columns. A trace the dataset carried itself (the synthetic world's template
    trace, extra.trace) fills them when the reasoner wrote none, so the exported set trains on the trace it
    was selected for."""
    cols = {k: str(item.extra.get(k) or "")
            for k in ("generated_reasoning", "generated_answer", "raw_output")}
    if not cols["raw_output"] and item.extra.get("trace"):
        parsed = parse_item_answer(item, str(item.extra["trace"]))
        cols = {"generated_reasoning": cols["generated_reasoning"] or (parsed.thinking or ""),
                "generated_answer": cols["generated_answer"] or (parsed.answer_text or ""),
                "raw_output": str(item.extra["trace"])}
    return cols


def llava_conversations(items: list[VQAItem], prompt: str) -> list[dict]:
    """The JSON that LLaVA / LLaVA-Med training scripts read."""
    return [{"id": it.id, "image": it.image,
             "conversations": [{"from": "human", "value": "<image>\n" + format_question(it, prompt)},
                               {"from": "gpt", "value": assistant_turn(it)}]}
            for it in items]


def export_images(items: list[VQAItem], out: Path, mode: str, stats: StageStats) -> int:
    """Copy or zip each item's image; an image that is not there is recorded, not silently skipped."""
    if mode == "none":
        stats.metrics["images_expected"] = 0
        return 0
    if mode not in ("copy", "zip"):
        raise ValueError(f"pipeline.export.images must be copy, zip or none, got {mode!r}")
    found = []
    distinct = list({it.image: it for it in items}.values())
    for it in distinct:
        try:  # resolved, symlinks included: a link out of the image root is never copied
            src = resolve_image_path(it) if it.image_root else None
        except BadImageError as err:
            stats.warn(f"image not exported for {it.id}: {err}", reason=err.reason)
            continue
        if src is None or not src.is_file():
            stats.warn(f"image not exported for {it.id}: {src or it.image} is not on disk",
                       reason="missing_image")
            continue
        found.append((src, it.image))
    stats.metrics["images_expected"] = len(distinct)
    if len(found) < len(distinct):
        stats.warn(f"exported {len(found)} of {len(distinct)} images", reason="images_not_exported")
    if mode == "copy":
        for src, rel in found:
            dst = out / "images" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    else:
        with atomic_path(out / "images.zip") as tmp, zipfile.ZipFile(tmp, "w") as zf:
            for src, rel in found:
                zf.write(src, rel)
    return len(found)


def export_curated(items: list[VQAItem], out: Path, prompt: str, images: str = "copy",
                   llava_json: bool = True,
                   traces: list[VQAItem] | None = None, require_images: bool = False) -> StageStats:
    """Write the exports; `require_images`: an image that could not be exported fails before final.csv."""
    stats = StageStats("export", n_in=len(items), n_out=len(items))
    out.mkdir(parents=True, exist_ok=True)
    write_items_jsonl(items, out / "items.jsonl")
    if traces is not None:
        with atomic_path(out / "traces_partial.csv") as tmp:
            seed_frame(traces).to_csv(tmp, index=False)
    if llava_json:
        with atomic_path(out / "llava_conversations.json") as tmp:
            tmp.write_text(
                json.dumps(llava_conversations(items, PROMPTS[prompt]), indent=1, ensure_ascii=False))
    stats.metrics["images_exported"] = export_images(items, out, images, stats)
    missing = stats.metrics["images_expected"] - stats.metrics["images_exported"]
    if missing and require_images:
        write_json(stats.to_dict(), out / "export_stats.json")
        raise RuntimeError(
            f"export: {missing} of {stats.metrics['images_expected']} images were not exported "
            f"({stats.warning_reasons}; first: {stats.warnings[0]}); pipeline.export.require_images "
            f"is set, so no final.csv (see {out / 'export_stats.json'})")
    with atomic_path(out / "final.csv") as tmp:
        seed_frame(items).to_csv(tmp, index=False)
    write_json(stats.to_dict(), out / "export_stats.json")
    return stats


def traced_items(run_dir: Path, dataset=None) -> list[VQAItem] | None:
    """Every trace of this run before the correctness filter: the trace (or merge) stage's output, else what
    entered the filter (a dataset that already carries traces), else None."""
    from mvqa.curate.pipeline import stage_items

    names = [p.parent.name.split("_", 1)[1] for p in sorted((run_dir / "stages").glob("*/stats.json"))]
    for name in names:
        if name in ("trace", "merge"):
            return stage_items(run_dir, name)
    if "filter" in names and names.index("filter") > 0:
        before = names[names.index("filter") - 1]
        if before == "load" and dataset is not None:  # run dirs keep no copy of the dataset: read it again
            from mvqa.data.loading import load_dataset

            return load_dataset(dataset)[0]
        return stage_items(run_dir, before)
    return None


def export_stage(items, ctx):
    cfg = ctx.cfg.pipeline
    stats = export_curated(items, ctx.output_dir, cfg.trace.prompt, cfg.export.images, cfg.export.llava_json,
                           traced_items(ctx.output_dir, ctx.cfg.dataset),
                           require_images=cfg.export.get("require_images", False))
    return items, stats
