"""Instantiate a `dataset/` config node into (items, stats), optionally for another of its splits.

Every load prints one line with the items per kind, and the drops and conversions by reason, whatever the
reader: `load slake[test]: 1061 items — mcq 0, closed 416, open 645`.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mvqa.data.records import VQAItem, kind_counts
from mvqa.data.stats import StageStats

# Keys of DatasetConf that describe the source for its consumers instead of configuring the reader.
SPLIT_ROLES = ("val_split", "test_split")


def load_dataset(cfg: DictConfig, split: str | None = None) -> tuple[list[VQAItem], StageStats]:
    node = OmegaConf.to_container(cfg, resolve=True)
    for key in SPLIT_ROLES:
        node.pop(key, None)
    if split is not None:
        if "split" not in node:
            raise ValueError(
                f"dataset {node.get('name')!r} has no splits to choose from (asked for {split!r})")
        node["split"] = split
    items, stats = instantiate(node)
    stats.metrics["kinds"] = kind_counts(items)
    print(load_line(node.get("name") or "dataset", node.get("split") or "", items, stats), flush=True)
    return items, stats


def load_line(name: str, split: str, items: list[VQAItem], stats: StageStats) -> str:
    """`load NAME[SPLIT]: N items — mcq a, closed b, open c` plus `; dropped ...` and `; converted ...` by
    reason."""
    where = f"{name}[{split}]" if split else name
    kinds = ", ".join(f"{kind} {n}" for kind, n in kind_counts(items).items())
    line = f"load {where}: {len(items)} items — {kinds}"
    drops = stats.drop_reasons
    if drops:
        line += f"; dropped {sum(drops.values())} of {stats.n_in}: " + _by_reason(drops)
    conversions: dict[str, Any] = stats.metrics.get("conversions") or {}
    if any(conversions.values()):
        line += "; converted " + _by_reason({k: n for k, n in conversions.items() if n})
    return line


def _by_reason(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))


def split_for(cfg: DictConfig, role: str) -> str | None:
    """The dataset's split for a role ("val" or "test"), or None when the source has no such split."""
    return OmegaConf.select(cfg, f"{role}_split")
