"""Images of VQA items: path resolution under the item's image root, lazy RGB loading, load-time checks.

Readers keep the source's own image path in `item.image` and its root in `item.image_root`; pixels are read
only when a stage asks for them (`load_image`), so a 200k-row dataset costs nothing until it is used.
"""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from mvqa.data.records import VQAItem
from mvqa.data.stats import StageStats

ON_BAD_IMAGE = ("error", "skip")


class BadImageError(ValueError):
    """An item's image is missing or cannot be decoded; `reason` is the StageStats drop reason."""

    def __init__(self, message: str, reason: str, path: Path):
        super().__init__(message)
        self.reason, self.path = reason, path


def check_on_bad_image(on_bad_image: str) -> None:
    if on_bad_image not in ON_BAD_IMAGE:
        raise ValueError(f"on_bad_image={on_bad_image!r}: expected one of {list(ON_BAD_IMAGE)}")


# Absolute (/x, \\x, C:x) or a `..` part, with either separator: a CSV written on Windows must not escape
# either.
_LEAVES_ROOT = re.compile(r"^(?:[\\/]|[A-Za-z]:)|(?:^|[\\/])\.\.(?:[\\/]|$)")


def check_image_path(image: str) -> None:
    """Refuse a path that could leave the image root: empty, absolute, or with a `..` part.

    Purely lexical (one regex, no file access), so readers check every row of a large CSV cheaply.
    """
    if not image or not image.strip():
        raise ValueError("empty image path")
    if _LEAVES_ROOT.search(image.strip()):
        raise ValueError(f"image path {image!r} leaves the image root (absolute or contains '..')")


def resolve_image_path(item: VQAItem) -> Path:
    """The file of `item.image` under `item.image_root` (the working directory when the root is empty)."""
    try:
        check_image_path(item.image)
    except ValueError as err:
        raise ValueError(f"item {item.id!r}: {err}") from None
    return Path(item.image_root or ".") / item.image


def load_image(item: VQAItem) -> Image.Image:
    """Decode the item's image as RGB; BadImageError names the item and the file when it cannot."""
    path = resolve_image_path(item)
    if not path.is_file():
        raise BadImageError(f"item {item.id!r}: image not found: {path}", "missing_image", path)
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # convert() decodes every pixel, so truncated files fail here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImageError(f"item {item.id!r}: cannot decode image {path}: {err}", "corrupt_image", path) from err


def verify_images(items: list[VQAItem], on_bad_image: str = "error", stats: StageStats | None = None) -> list[VQAItem]:
    """Decode every distinct image once; on a bad one raise (`error`) or drop its items into `stats` (`skip`)."""
    check_on_bad_image(on_bad_image)
    if on_bad_image == "skip" and stats is None:
        raise ValueError("on_bad_image='skip' needs a StageStats to record the dropped rows in")
    failures: dict[Path, BadImageError | None] = {}  # several items often share one figure
    kept = []
    for item in items:
        path = resolve_image_path(item)
        if path not in failures:
            try:
                load_image(item)
                failures[path] = None
            except BadImageError as err:
                if on_bad_image == "error":
                    raise
                failures[path] = err
        err = failures[path]
        if err is None:
            kept.append(item)
        else:
            stats.drop(item.id, err.reason, path=str(path))
    return kept
