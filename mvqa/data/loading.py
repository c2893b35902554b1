"""Instantiate a `dataset/` config node into (items, stats), optionally for another of its splits."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mvqa.data.records import VQAItem
from mvqa.data.stats import StageStats

# Keys of DatasetConf that describe the source for its consumers instead of configuring the reader.
SPLIT_ROLES = ("val_split", "test_split")


def load_dataset(cfg: DictConfig, split: str | None = None) -> tuple[list[VQAItem], StageStats]:
    node = OmegaConf.to_container(cfg, resolve=True)
    for key in SPLIT_ROLES:
        node.pop(key, None)
    if split is not None:
        if "split" not in node:
            raise ValueError(f"dataset {node.get('name')!r} has no splits to choose from (asked for {split!r})")
        node["split"] = split
    return instantiate(node)


def split_for(cfg: DictConfig, role: str) -> str | None:
    """The dataset's split for a role ("val" or "test"), or None when the source has no such split."""
    return OmegaConf.select(cfg, f"{role}_split")
