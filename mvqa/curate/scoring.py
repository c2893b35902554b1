"""The difficulty `score` stage at scale: sharded like `trace`, and resumable after a kill.

`shard=i num_shards=n` scores items i, i+n, i+2n, ... only. Each chunk of `pipeline.score.chunk_size` items is
appended to the shard's partial JSONL as one line (the chunk's input ids, its stats, its scored items) and
fsynced, so a `kill -9` loses at most the chunk in flight; a rerun drops a torn last line and scores the rest.
A finished shard's file loses its `.partial`. Once every shard has finished, the stage joins them in input
order and the pipeline goes on to `hard` (which ranks over all items, so it cannot run on a slice); until then
a shard job stops after its slice. A job with `merge` among its stages never scores: it joins, or names the
shards still missing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from mvqa.curate.trace import shard_items
from mvqa.data.records import VQAItem, item_from_json, item_to_json
from mvqa.data.stats import StageStats

log = logging.getLogger(__name__)


def chunk_file(stage_dir: Path, shard: int, num_shards: int, partial: bool = False) -> Path:
    return stage_dir / f"score.shard-{shard}-of-{num_shards}{'.partial' if partial else ''}.jsonl"


def read_chunks(path: Path, allow_torn_tail: bool = False) -> list[dict[str, Any]]:
    """The chunk records of a shard file; with `allow_torn_tail` a last line cut by a kill is dropped and the
    file rewritten without it (so the next append starts on a fresh line)."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    chunks = []
    for n, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if allow_torn_tail and n == len(lines):
                with open(path, "w", encoding="utf-8") as f:
                    f.writelines(json.dumps(c) + "\n" for c in chunks)
                break
            raise ValueError(f"{path}:{n}: not a score chunk record ({err})") from err
        if not {"input_ids", "stats", "items"} <= set(record):
            raise ValueError(
                f"{path}:{n}: a score chunk needs input_ids, stats and items; got {sorted(record)}"
            )
        chunks.append(record)
    return chunks


# Counts that add up over chunks (the likelihood scorer's ranked vs gold-likelihood-only items).
SUMMED_METRICS = ("ranked", "gold_likelihood_only")


def merge_stats(records: list[dict[str, Any]], n_in: int) -> StageStats:
    """One StageStats from the chunks': counts and drops add up, numeric metrics are means weighted by each
    chunk's output (scorer_accuracy), other metrics must agree (scorer name, model)."""
    stats = StageStats("score", n_in=n_in)
    weighted: dict[str, float] = {}
    weights: dict[str, float] = {}
    for r in records:
        s = r["stats"]
        stats.n_out += s["n_out"]
        stats.dropped += s["dropped"]
        stats.warnings += [w for w in s["warnings"] if w not in stats.warnings]
        for k, v in s["metrics"].items():
            if v is None:  # a chunk with nothing to measure (scorer_accuracy of a chunk of open items only)
                continue
            if k in SUMMED_METRICS:
                stats.metrics[k] = stats.metrics.get(k, 0) + v
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                # scorer_accuracy is over the ranked items (mcq, yes/no), the rest over every scored item
                w = s["metrics"].get("ranked", s["n_out"]) if k == "scorer_accuracy" else s["n_out"]
                weighted[k] = weighted.get(k, 0.0) + v * w
                weights[k] = weights.get(k, 0.0) + w
            elif stats.metrics.setdefault(k, v) != v:
                raise ValueError(
                    f"score chunks disagree on metric {k!r}: {stats.metrics[k]!r} vs {v!r}; were "
                    "they scored with the same scorer?"
                )
    stats.metrics.update({k: total / weights[k] if weights[k] else None for k, total in weighted.items()})
    return stats


def _score_my_shard(items: list[VQAItem], ctx) -> None:
    """Score this shard's slice chunk by chunk into its partial file; rename it once every item is done."""
    from mvqa.curate.difficulty import PredictionsScorer

    cfg = ctx.cfg
    mine = shard_items(items, cfg.shard, cfg.num_shards)
    partial = chunk_file(ctx.stage_dir, cfg.shard, cfg.num_shards, partial=True)
    done = {i for c in read_chunks(partial, allow_torn_tail=True) for i in c["input_ids"]}
    todo = [it for it in mine if it.id not in done]
    scorer = instantiate(cfg.scorer)
    # A predictions join is model-free and its unmatched-row report is over the whole file: one chunk.
    size = len(todo) if isinstance(scorer, PredictionsScorer) else cfg.pipeline.score.chunk_size
    if done:
        log.info(
            "score shard %d of %d: resuming, %d of %d items already scored",
            cfg.shard,
            cfg.num_shards,
            len(done),
            len(mine),
        )
    with open(partial, "a", encoding="utf-8") as f:
        for start in range(0, len(todo), max(size, 1)):
            chunk = todo[start : start + size]
            scored, stats = scorer.score(chunk, ctx)
            record = {
                "input_ids": [it.id for it in chunk],
                "stats": stats.to_dict(),
                "items": [json.loads(item_to_json(it)) for it in scored],
            }
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
    os.replace(partial, chunk_file(ctx.stage_dir, cfg.shard, cfg.num_shards))


def _wait_for_shards(files: list[Path], wait_s: float, shard: int) -> list[int]:
    """The shards still unscored after waiting up to wait_s for them (their finished files)."""
    deadline, said = time.monotonic() + wait_s, False
    while True:
        missing = [i for i, f in enumerate(files) if not f.exists()]
        if not missing or time.monotonic() >= deadline:
            return missing
        if not said:
            log.info("score shard %d: waiting up to %.0f s for shard(s) %s to finish scoring", shard, wait_s,
                     missing)
            said = True
        time.sleep(0.5)


def score_stage(items: list[VQAItem], ctx) -> tuple[list[VQAItem], StageStats]:
    cfg, n = ctx.cfg, ctx.cfg.num_shards
    merging = "merge" in cfg.pipeline.stages
    if not merging and not chunk_file(ctx.stage_dir, cfg.shard, n).exists():
        _score_my_shard(items, ctx)
    files = [chunk_file(ctx.stage_dir, i, n) for i in range(n)]
    missing = [i for i, f in enumerate(files) if not f.exists()]
    wait_s = cfg.pipeline.score.wait_for_shards_s
    if missing and not merging and wait_s > 0:
        missing = _wait_for_shards(files, wait_s, cfg.shard)
        if missing:  # asked to go on to the next stages in this process: a peer that never came is an error
            raise TimeoutError(
                f"score shard {cfg.shard}: waited pipeline.score.wait_for_shards_s={wait_s:g} s for shard(s) "
                f"{missing} of num_shards={n} to finish scoring (expected "
                f"{[str(files[i]) for i in missing]}); run them, then rerun this shard (its scores are kept)")
    if missing and merging:
        raise FileNotFoundError(
            f"score: shard(s) {missing} of num_shards={n} have not finished scoring "
            f"(expected {[str(files[i]) for i in missing]}); run generate.py shard=i "
            f"num_shards={n} pipeline.stages=[score] first"
        )
    if missing:
        stats = StageStats("score", n_in=len(shard_items(items, cfg.shard, n)))
        stats.metrics.update(shard=cfg.shard, num_shards=n, waiting_for_shards=missing)
        return [], stats
    records = [c for f in files for c in read_chunks(f)]
    scored_inputs = [i for c in records for i in c["input_ids"]]
    expected = {it.id for it in items}
    if set(scored_inputs) != expected or len(scored_inputs) != len(expected):
        raise ValueError(
            f"score: the shards cover {len(set(scored_inputs) & expected)} of {len(expected)} items "
            f"with {len(scored_inputs) - len(set(scored_inputs))} scored twice; were they made from "
            f"the same input and num_shards={n}?"
        )
    rank = {it.id: i for i, it in enumerate(items)}
    scored = sorted(
        (item_from_json(json.dumps(d)) for c in records for d in c["items"]), key=lambda it: rank[it.id]
    )
    stats = merge_stats(records, len(items))
    stats.metrics["num_shards"] = n
    return scored, stats
