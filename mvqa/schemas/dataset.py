"""Schemas of the `dataset/` group: one per reader. Every reader returns (items, StageStats)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

GROUP = "dataset"


@dataclass
class DatasetConf:
    """Fields every reader takes."""

    _target_: str = MISSING
    name: str = MISSING
    # error: a missing/corrupt image stops the load naming it; skip: the row is dropped and recorded in stats.
    on_bad_image: str = "error"
    # Open every image at load time (off for sources shipped without images, e.g. the MVQA1k release).
    check_images: bool = False
    limit: int | None = None


SCHEMAS: dict[str, type] = {}
