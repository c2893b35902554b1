"""The curation recipe (`generate.py`): load -> score -> hard -> trace|merge -> filter -> sample -> export.

Each stage maps items to items plus StageStats. Its output is cached under `pipeline.cache_dir` by a hash of
(stage, the config it reads, its input items, the weights of the models it runs, its code version; see
mvqa/curate/cache.py), so rerunning the same config skips finished stages, a killed score or trace stage
resumes from its partial JSONL, and shards of one score or trace run meet in one directory.
The run dir gets every stage's stats, a reference to its items in the cache (the last stage's items are
copied), and a manifest saying which came from the cache.

One process at a time writes a stage's cache entry (an OS lock per entry and shard: a second run of the same
stage stops naming the writer's pid, or waits `pipeline.lock_wait_s`; a multirun's jobs wait by default), and
an output holding an id twice is an error, never a cache entry. Each stage ends with one console line: in ->
out, drops and warnings by reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from mvqa.curate.diversity import write_diversity_report
from mvqa.data.loading import load_dataset
from mvqa.data.records import VQAItem
from mvqa.data.stats import StageStats
from mvqa.data.storage import (
    check_unique_ids,
    exclusive_lock,
    items_fingerprint,
    read_items_jsonl,
    write_items_jsonl,
    write_json,
)
from mvqa.tracking import log_artifact

log = logging.getLogger(__name__)

ORDER = ["score", "hard", "trace", "merge", "filter", "sample", "export"]


@dataclass
class CurationContext:
    """What a stage may use besides its items: the config, where to write, models loaded once per job."""

    cfg: DictConfig
    output_dir: Path
    stage_dir: Path | None = None  # the stage's cache dir (resumable partial outputs live here)
    run: Any = None  # the W&B run, or None
    _models: dict[str, Any] = field(default_factory=dict)

    def model(self, key: str):
        """The ModelBundle of the config node at `key` (e.g. "reasoner"), loaded on first use."""
        if key not in self._models:
            from mvqa.models.load import load_model

            self._models[key] = load_model(OmegaConf.select(self.cfg, key))
        return self._models[key]


Stage = Callable[[list[VQAItem], CurationContext], tuple[list[VQAItem], StageStats]]


def _stages() -> dict[str, tuple[Stage, list[str]]]:
    """stage name -> (function, config keys its output depends on). Imported lazily: some need torch."""
    from mvqa.curate import correctness, difficulty, export, sample, scoring, trace

    return {
        # the model too: a new base rescores
        "score": (scoring.score_stage, ["scorer", "scorer_model", "seed"]),
        "hard": (difficulty.hard_stage, ["scorer"]),
        "trace": (trace.trace_stage, ["reasoner", "engine", "pipeline.trace", "seed"]),
        "merge": (trace.merge_stage, ["reasoner", "engine", "pipeline.trace", "seed"]),
        "filter": (correctness.filter_stage, ["pipeline.filter"]),
        "sample": (sample.sample_stage, ["sampler", "seed"]),
        "export": (export.export_stage, ["pipeline.export"]),
    }


def cache_name(stage: str) -> str:
    """trace and merge read and write the same shards, so they share one cache entry."""
    return "trace" if stage == "merge" else stage


def stage_key(stage: str, cfg: DictConfig, deps: list[str], input_fingerprint: str) -> str:
    from mvqa.curate.cache import stage_fingerprint

    config = {k: _plain(OmegaConf.select(cfg, k)) for k in deps}
    blob = json.dumps({"stage": cache_name(stage), "config": config, "input": input_fingerprint,
                       **stage_fingerprint(cache_name(stage), cfg)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _plain(value):
    """A config node as plain resolved data (interpolations resolve against the whole config)."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value,
                                                                     (DictConfig, ListConfig)) else value


def ordered_stages(requested: list[str]) -> list[str]:
    unknown = [s for s in requested if s not in ORDER]
    if unknown:
        raise ValueError(f"pipeline.stages: unknown stage(s) {unknown}; expected a subset of {ORDER}")
    if "trace" in requested and "merge" in requested:
        raise ValueError(
            "pipeline.stages: use either trace (one shard) or merge (join finished shards), not both")
    return [s for s in ORDER if s in requested]


def run_curation(cfg: DictConfig, output_dir: Path, run: Any = None) -> dict[str, Any]:
    """Run the configured stages; returns the summary written to `summary.json`."""
    output_dir = Path(output_dir)
    if not 0 <= cfg.shard < cfg.num_shards:
        raise ValueError(f"shard={cfg.shard} must be in [0, num_shards={cfg.num_shards})")
    ctx = CurationContext(cfg=cfg, output_dir=output_dir, run=run)
    items, stats = load_dataset(cfg.dataset)
    last_out = _record(output_dir, 0, "load", items, stats, {"cached": False})
    log.info(stats.summary())
    funnel = [{"stage": "load", "n_in": stats.n_in, "n_out": stats.n_out}]
    registry = _stages()
    manifest: dict[str, Any] = {"config": OmegaConf.to_container(cfg, resolve=True), "stages": []}
    manifest["stages"].append({"stage": "load", "fingerprint": items_fingerprint(items), "n_out": len(items)})
    stopped_for_merge, diversity = False, None
    for i, name in enumerate(ordered_stages(list(cfg.pipeline.stages)), 1):
        fn, deps = registry[name]
        fingerprint = items_fingerprint(items)
        key = stage_key(name, cfg, deps, fingerprint)
        ctx.stage_dir = Path(cfg.pipeline.cache_dir) / f"{cache_name(name)}-{key}"
        items, stats, cached = _run_cached(name, fn, items, ctx)
        # a score shard finished its slice; others are still going
        if stats.metrics.get("waiting_for_shards"):
            write_json({**stats.to_dict(), "cached": False, "key": key},
                       output_dir / "stages" / f"{i:02d}_{name}" / "stats.json")
            funnel.append({"stage": name, "n_in": stats.n_in, "n_out": stats.n_out})
            stopped_for_merge = True
            log.info(
                "score: shard %d of %d scored %d items; shard(s) %s still scoring: rerun once all are done",
                cfg.shard, cfg.num_shards, stats.n_in, stats.metrics["waiting_for_shards"])
            break
        if not items and name != "export":
            raise RuntimeError(
                f"stage {name!r} emptied the set: {stats.n_in} in, 0 out ({stats.drop_reasons})")
        items_file = output_dir / "items.jsonl" if name == "export" else ctx.stage_dir / _items_name(name,
                                                                                                     cfg)
        last_out = _record(output_dir, i, name, items, stats, {"cached": cached, "key": key}, items_file)
        funnel.append({"stage": name, "n_in": stats.n_in, "n_out": stats.n_out})
        manifest["stages"].append(
            {"stage": name, "key": key, "input_fingerprint": fingerprint, "cached": cached,
             "n_in": stats.n_in, "n_out": stats.n_out, "drops": stats.drop_reasons})
        log.info(stats.summary() + (" [cached]" if cached else ""))
        if "diversity" in stats.metrics:  # cached or not, the run dir gets the report
            diversity = stats.metrics["diversity"]
            write_diversity_report(diversity, output_dir)
        if name == "trace" and cfg.num_shards > 1:
            stopped_for_merge = True
            log.info("shard %d of %d traced; run the merge stage once all shards are done", cfg.shard,
                     cfg.num_shards)
            break
    if not (last_out / "items.jsonl").exists():
        write_items_jsonl(items, last_out / "items.jsonl")  # the run's final items stay in the run dir
    summary = {"funnel": funnel, "n_final": len(items), "stopped_for_merge": stopped_for_merge,
               "diversity": diversity}
    write_json(manifest, output_dir / "manifest.json")
    write_json(summary, output_dir / "summary.json")
    _log_to_wandb(run, summary, output_dir)
    return summary


EXPORTS = ["final.csv", "items.jsonl", "traces_partial.csv", "llava_conversations.json", "images",
           "images.zip",
           "diversity.json", "diversity.md"]


def _log_to_wandb(run: Any, summary: dict[str, Any], output_dir: Path) -> None:
    """The stage funnel, the diversity report and the curated set as a dataset artifact."""
    if run is None:
        return
    import wandb

    funnel = wandb.Table(columns=["stage", "n_in", "n_out"],
                         data=[[f["stage"], f["n_in"], f["n_out"]] for f in summary["funnel"]])
    run.log(
        {"funnel": wandb.plot.bar(funnel, "stage", "n_out", title="curation funnel"), "funnel_table": funnel})
    diversity = summary.get("diversity")
    if diversity:
        rows = [[k, diversity["input"][k], diversity["output"][k]] for k in diversity["output"]
                if isinstance(diversity["output"][k], (int, float))]
        run.log({"diversity": wandb.Table(columns=["figure", "input", "output"], data=rows)})
        run.summary.update({f"diversity/{k}": v for k, _, v in rows})
    if (output_dir / "final.csv").exists():
        log_artifact(run, [output_dir / name for name in EXPORTS], f"curated-{output_dir.name}", "dataset")


def _run_cached(name: str, fn: Stage, items: list[VQAItem], ctx: CurationContext):
    """(items, stats, came_from_cache). Export always runs: its outputs belong to the run dir."""
    done_items, done_stats = ctx.stage_dir / _items_name(name, ctx.cfg), ctx.stage_dir / _stats_name(name,
                                                                                                     ctx.cfg)
    if name == "export":
        ctx.stage_dir.mkdir(parents=True, exist_ok=True)
        return (*fn(items, ctx), False)
    if done_items.exists() and done_stats.exists():
        return (*_read_cached(done_items, done_stats), True)
    ctx.stage_dir.mkdir(parents=True, exist_ok=True)
    suffix = _lock_suffix(name, ctx.cfg)
    wait = lock_wait_s(ctx.cfg)
    with exclusive_lock(ctx.stage_dir / f".lock{suffix}", f"stage {ctx.stage_dir.name}{suffix}", wait,
                        " (pipeline.cache_dir), or pipeline.lock_wait_s=SECONDS"):
        if done_items.exists() and done_stats.exists():  # the writer we waited for finished it
            return (*_read_cached(done_items, done_stats), True)
        out, stats = fn(items, ctx)
        check_unique_ids(out, f"stage {name!r} output (cache {ctx.stage_dir})")
        if not stats.metrics.get("waiting_for_shards"):  # a score shard that finished before the others
            write_items_jsonl(out, done_items)  # items first: stats mark the stage as done
            write_json(stats.to_dict(), done_stats)
    return out, stats, False


def lock_wait_s(cfg: DictConfig) -> float:
    """How long a stage waits for another process writing the same cache entry: `pipeline.lock_wait_s` if
    set; else, in a Hydra multirun, as long as the writer lives (jobs of one sweep share their upstream
    stages, and the kernel drops a dead writer's lock); else 0, so a second run started by hand stops at once
    and names the writer."""
    wait = OmegaConf.select(cfg, "pipeline.lock_wait_s", default=None)
    if wait is not None:
        return float(wait)
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return math.inf if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN else 0.0


def _read_cached(done_items: Path, done_stats: Path) -> tuple[list[VQAItem], StageStats]:
    """A finished cache entry, refused when it holds an id twice (written before entries were checked)."""
    stats = StageStats(**{k: v for k, v in json.loads(done_stats.read_text()).items() if k != "drop_reasons"})
    items = read_items_jsonl(done_items)
    check_unique_ids(items, f"cached {done_items} (delete {done_items.parent} to recompute it)")
    return items, stats


def _shard_suffix(name: str, cfg: DictConfig) -> str:
    return f".shard-{cfg.shard}-of-{cfg.num_shards}" if name == "trace" and cfg.num_shards > 1 else ""


def _lock_suffix(name: str, cfg: DictConfig) -> str:
    """Score and trace shards write their own partial files side by side: one lock per shard."""
    return f".shard-{cfg.shard}-of-{cfg.num_shards}" if name in ("score",
                                                                 "trace") and cfg.num_shards > 1 else ""


def _items_name(name: str, cfg: DictConfig) -> str:
    return f"items{_shard_suffix(name, cfg)}.jsonl"


def _stats_name(name: str, cfg: DictConfig) -> str:
    return f"stats{_shard_suffix(name, cfg)}.json"


def _record(output_dir: Path, index: int, name: str, items, stats: StageStats, info: dict,
            items_file: Path | None = None) -> Path:
    """A stage's stats in the run dir, and where its items are: a reference to `items_file` (the stage's cache
    entry, or the run's own export) when it exists, else a copy. The load stage's items are the dataset's
    (named in the manifest): never copied. `run_curation` copies the run's last items besides."""
    stage_out = output_dir / "stages" / f"{index:02d}_{name}"
    if items_file is not None and items_file.exists():
        info = {**info, "items": str(items_file.resolve())}
    elif name != "load":
        write_items_jsonl(items, stage_out / "items.jsonl")
    write_json({**stats.to_dict(), **info}, stage_out / "stats.json")
    return stage_out


def stage_items(run_dir: Path, stage: str) -> list[VQAItem] | None:
    """The items a run's stage put out, from its copy in the run dir or the cache entry its stats name;
    None when the run has no such stage. A cache entry removed since is an error that names it."""
    found = sorted(Path(run_dir).glob(f"stages/*_{stage}/stats.json"))
    if not found:
        return None
    copy = found[-1].parent / "items.jsonl"
    if copy.exists():
        return read_items_jsonl(copy)
    ref = json.loads(found[-1].read_text()).get("items")
    if not ref:
        return None
    if not Path(ref).exists():
        raise FileNotFoundError(
            f"{found[-1]}: the {stage} stage's items were in the cache at {ref}, which no "
            "longer exists; rerun the stage")
    return read_items_jsonl(ref)
