"""Step 2: reasoning traces from the reasoner (Med-R1 by default), resumable and shardable.

Traces are appended batch by batch to a JSONL file in the stage's cache dir and flushed, so a kill loses at
most the batch in flight; a rerun reads what is there (dropping a torn last line) and continues with the
rest. `shard=i num_shards=n` traces items i, i+n, i+2n, ...; `merge` joins the n finished shards.
"""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path

from hydra.utils import instantiate
from tqdm.auto import tqdm

from mvqa.data.images import load_image
from mvqa.data.prompts import chat_prompt, format_question, parse_item_answer
from mvqa.data.records import VQAItem, item_to_json
from mvqa.data.stats import StageStats
from mvqa.data.storage import read_items_jsonl, write_items_jsonl
from mvqa.generation.engine import GenerationParams, GenerationRequest


def shard_items(items: list[VQAItem], shard: int, num_shards: int) -> list[VQAItem]:
    return items[shard::num_shards]


def shard_file(stage_dir: Path, shard: int, num_shards: int, partial: bool = False) -> Path:
    suffix = f".shard-{shard}-of-{num_shards}" if num_shards > 1 else ""
    return stage_dir / f"items{suffix}{'.partial' if partial else ''}.jsonl"


def traced_item(item: VQAItem, text: str, sample: int, num_samples: int, model: str) -> VQAItem:
    """The item with the seed's trace columns (raw_output, generated_reasoning, generated_answer) in extra."""
    parsed = parse_item_answer(item, text)
    out = item.with_extra(raw_output=text, generated_reasoning=parsed.thinking or "",
                          generated_answer=parsed.answer_text or "", parse_status=parsed.status,
                          trace_model=model, source_id=item.id)
    return out.replace(id=f"{item.id}#{sample}") if num_samples > 1 else out


def _resume(partial: Path) -> list[VQAItem]:
    """What an earlier, killed run finished; the file is rewritten without a torn last line or a repeated
    id."""
    if not partial.exists():
        return []
    done = read_items_jsonl(partial, allow_torn_tail=True)
    # Keep the first row of an id: a file two writers appended to before stages were locked holds it twice.
    seen: set[str] = set()
    done = [it for it in done if not (it.id in seen or seen.add(it.id))]
    write_items_jsonl(done, partial)
    return done


def trace_stage(items: list[VQAItem], ctx) -> tuple[list[VQAItem], StageStats]:
    cfg, tc = ctx.cfg, ctx.cfg.pipeline.trace
    mine = shard_items(items, cfg.shard, cfg.num_shards)
    partial = shard_file(ctx.stage_dir, cfg.shard, cfg.num_shards, partial=True)
    done = _resume(partial)
    # An item counts as done only with all its samples (a torn tail can cut between them).
    per_item = collections.Counter(it.extra["source_id"] for it in done)
    finished = {i for i, n in per_item.items() if n >= tc.num_samples}
    if len(finished) < len(per_item):
        write_items_jsonl([it for it in done if it.extra["source_id"] in finished], partial)
    todo = [it for it in mine if it.id not in finished]
    stats = StageStats("trace", n_in=len(mine))
    stats.metrics.update(resumed=len(finished), shard=cfg.shard, num_shards=cfg.num_shards)
    if todo:
        bundle = ctx.model("reasoner")
        engine = instantiate(cfg.engine, progress=False)
        params = GenerationParams(max_new_tokens=tc.max_new_tokens, do_sample=tc.do_sample,
                                  temperature=tc.temperature, top_p=tc.top_p, num_samples=tc.num_samples,
                                  seed=cfg.seed)
        start = time.perf_counter()
        with open(partial, "a", encoding="utf-8") as f, tqdm(total=len(todo), unit="item", desc="trace",
                                                              disable=not tc.progress,
                                                              dynamic_ncols=True) as bar:
            for i in range(0, len(todo), tc.batch_size):
                batch = todo[i:i + tc.batch_size]
                requests = [
                    GenerationRequest(prompt=chat_prompt(bundle.processor, format_question(it, tc.prompt)),
                                      images=[load_image(it)], id=it.id) for it in batch]
                for g in engine.generate(bundle, requests, params):
                    item = traced_item(batch[g.request_index], g.text, g.sample_index, tc.num_samples,
                                       bundle.name)
                    f.write(item_to_json(item) + "\n")
                f.flush()
                os.fsync(f.fileno())
                bar.update(len(batch))
        stats.metrics["items_per_s"] = len(todo) / max(time.perf_counter() - start, 1e-9)
    traced = _in_input_order(read_items_jsonl(partial), mine)
    stats.n_out = len(traced)
    stats.metrics["parse_status"] = dict(collections.Counter(it.extra["parse_status"] for it in traced))
    stats.metrics["parse_status_by_kind"] = {
        kind: dict(collections.Counter(it.extra["parse_status"] for it in traced if it.kind == kind))
        for kind in dict.fromkeys(it.kind for it in traced)}
    return traced, stats


def merge_stage(items: list[VQAItem], ctx) -> tuple[list[VQAItem], StageStats]:
    """Join the shards of one trace run; every shard must be finished, every item traced exactly once."""
    n = ctx.cfg.num_shards
    files = [shard_file(ctx.stage_dir, i, n) for i in range(n)]
    missing = [i for i, f in enumerate(files) if not f.exists()]
    if missing:
        expected = [str(files[i]) for i in missing]
        raise FileNotFoundError(f"merge: shard(s) {missing} of num_shards={n} are not finished (expected "
                                f"{expected}); run generate.py shard=i num_shards={n}")
    traced = [it for f in files for it in read_items_jsonl(f)]
    expected = {it.id for it in items}
    got = [it.extra["source_id"] for it in traced]
    if set(got) != expected or len({it.id for it in traced}) != len(traced):
        raise ValueError(f"merge: shards cover {len(set(got))} of {len(expected)} items with "
                         f"{len(traced) - len({it.id for it in traced})} duplicates; were they made from "
                         "the same input and num_shards?")
    stats = StageStats("merge", n_in=len(items), n_out=len(traced), metrics={"num_shards": n})
    return _in_input_order(traced, items), stats


def _in_input_order(traced: list[VQAItem], items: list[VQAItem]) -> list[VQAItem]:
    rank = {it.id: i for i, it in enumerate(items)}
    return sorted(traced, key=lambda it: (rank[it.extra["source_id"]], it.id))

