"""`dataset=auto` (train.py's default): the synthetic world's curated traces when a curation run of it exists,
else the world's template traces.

A curation run is a generate.py run dir that finished its export: `final.csv` (written last), `items.jsonl`
whose items came from the synthetic world, and the exported `images/` (read from there, so the run's world
need not be the one the `auto` fields describe, nor still be on disk). The newest one by the time its
final.csv was written wins. `resolve_dataset` returns the config with the `auto` node swapped for the
`curated` or `synthetic` node it stands for, so everything downstream (validation split, W&B config and input
artifact, metrics.json) sees the real dataset. """

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from mvqa.data.records import VQAItem
from mvqa.data.stats import StageStats
from mvqa.schemas.dataset_auto import AutoConf

log = logging.getLogger(__name__)

AUTO = "auto"
# generate.py's layouts below a search root: outputs/generate/<date>/<time>_<uid>/ and
# multirun/generate/<date>/<time>_<uid>/<job>/ (and a root that is a date dir or a run dir itself).
_DEPTHS = range(4)


def _source(run_dir: Path) -> str | None:
    """The `source` of the run's first exported item (e.g. "synthetic"), or None without a readable
    items.jsonl."""
    try:
        with open(run_dir / "items.jsonl", encoding="utf-8") as f:
            return json.loads(f.readline()).get("source")
    except (OSError, ValueError):
        return None


def find_curation_runs(roots: list[str] | tuple[str, ...], source: str = "synthetic") -> list[Path]:
    """Finished curation runs of `source` items under `roots`, newest first; the others are logged as
    skipped."""
    runs: dict[Path, float] = {}
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        for depth in _DEPTHS:
            for final in root.glob("*/" * depth + "final.csv"):
                run = final.parent
                found = _source(run)
                if found != source:
                    log.debug("dataset=auto: skipping %s (items from %s, not %s)", run, found, source)
                elif not (run / "images").is_dir():
                    log.info("dataset=auto: skipping %s (no exported images/ folder)", run)
                else:
                    runs[run.resolve()] = final.stat().st_mtime
    return sorted(runs, key=lambda r: (runs[r], str(r)), reverse=True)


def _synthetic_node(auto: DictConfig) -> DictConfig:
    from mvqa.schemas.dataset_synthetic import SyntheticConf

    keep = {f.name for f in dataclasses.fields(SyntheticConf)} - {"_target_", "name"}
    values = OmegaConf.to_container(auto, resolve=False)  # ${paths.cache}, ${seed} resolve where it is put
    return OmegaConf.merge(OmegaConf.structured(SyntheticConf),
                           {k: v for k, v in values.items() if k in keep})


def _curated_node(auto: DictConfig, final_csv: Path) -> DictConfig:
    from mvqa.schemas.dataset import CuratedConf

    shared = {k: auto[k] for k in ("on_bad_image", "check_images", "limit", "on_duplicate")}
    return OmegaConf.merge(OmegaConf.structured(CuratedConf), {**shared, "path": str(final_csv)})


def resolve_auto(auto: DictConfig) -> tuple[DictConfig, str]:
    """(the dataset node `auto` stands for, a sentence saying which and why)."""
    roots = list(auto.curation_runs or [])
    runs = find_curation_runs(roots)
    if runs:
        final = runs[0] / "final.csv"
        why = (f"dataset=auto: training on the curated traces of {final} (the newest of {len(runs)} curation "
               f"run(s) of the synthetic world under {', '.join(roots)}); dataset=synthetic trains on the "
               "world's template traces")
        return _curated_node(auto, final), why
    why = (
        "dataset=auto: no curation run of the synthetic world under "
        f"{', '.join(roots) or '(no search roots)'};"
        " training on the synthetic world's template traces")
    return _synthetic_node(auto), why


def resolve_dataset(cfg: DictConfig) -> DictConfig:
    """`cfg` with `dataset=auto` replaced by the node it stands for (logged), as a new config: `cfg` itself is
    left as it is. Any other dataset: `cfg` unchanged. train.py calls it once, before W&B records the
    config."""
    if OmegaConf.select(cfg, "dataset.name") != AUTO:
        return cfg
    node, why = resolve_auto(cfg.dataset)
    resolved = copy.deepcopy(cfg)
    with read_write(resolved), open_dict(resolved):
        resolved.dataset = node
    log.info(why)
    return resolved


def read_auto(split: str = AutoConf.split, **fields: Any) -> tuple[list[VQAItem], StageStats]:
    """The reader behind `_target_`, for callers that load an unresolved `auto` node directly."""
    from mvqa.data.loading import load_dataset

    node, why = resolve_auto(OmegaConf.create({"split": split, **fields}))
    log.info(why)
    if node.name == "curated":
        if split != "train":
            raise ValueError(f"{why}; a curated set has no {split!r} split")
        return load_dataset(node)
    return load_dataset(node, split=split)
