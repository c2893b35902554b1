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
    """The file of `item.image` under `item.image_root` (the working directory when the root is empty).

    Resolved, symlinks included, before the root check: a link inside the root that points outside it is
    refused (BadImageError, reason `image_outside_root`) like a `..` in the path text.
    """
    try:
        check_image_path(item.image)
    except ValueError as err:
        raise ValueError(f"item {item.id!r}: {err}") from None
    root = Path(item.image_root or ".").resolve()
    path = (root / item.image.strip()).resolve()
    if not path.is_relative_to(root):
        raise BadImageError(
            f"item {item.id!r}: image {item.image!r} resolves to {path}, outside the image root "
            f"{root} (a symlink pointing out of the root?)", "image_outside_root", path)
    return path


def load_image(item: VQAItem) -> Image.Image:
    """Decode the item's image as RGB; BadImageError names the item and the file when it cannot."""
    path = resolve_image_path(item)
    if not path.is_file():
        raise BadImageError(f"item {item.id!r}: image not found: {path}", "missing_image", path)
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # convert() decodes every pixel, so truncated files fail here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImageError(f"item {item.id!r}: cannot decode image {path}: {err}", "corrupt_image",
                            path) from err


def verify_images(items: list[VQAItem], on_bad_image: str = "error",
                  stats: StageStats | None = None) -> list[VQAItem]:
    """Decode every distinct image once; on a bad one raise (`error`) or drop its items into `stats`
    (`skip`)."""
    check_on_bad_image(on_bad_image)
    if on_bad_image == "skip" and stats is None:
        raise ValueError("on_bad_image='skip' needs a StageStats to record the dropped rows in")
    failures: dict[Path, BadImageError | None] = {}  # several items often share one figure
    kept = []
    for item in items:
        path = Path(item.image_root or ".") / item.image.strip()
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


IMAGE_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


def store_image_bytes(data: bytes, cache_dir: Path | str, where: str) -> str:
    """Write an embedded image (Hub parquet bytes, a TSV's base64) once under `cache_dir`, named by its
    content.

    Returns the path relative to `cache_dir` (`ab/abcdef....png`), so items keep `image_root=cache_dir` and
    later stages open the file like any other. The same bytes always land in the same file: a second load of
    the benchmark, or a second question on the same image, writes nothing. Undecodable bytes raise naming
    `where`. """
    import hashlib
    import io
    import os

    if not data:
        raise ValueError(f"{where}: empty image bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            suffix = IMAGE_SUFFIX.get(img.format or "", ".img")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{where}: the embedded image cannot be decoded: {err}") from None
    digest = hashlib.sha256(data).hexdigest()[:32]
    relative = f"{digest[:2]}/{digest}{suffix}"
    target = Path(cache_dir) / relative
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        # concurrent loaders never see half a file
        partial = target.with_name(f"{target.name}.{os.getpid()}.part")
        partial.write_bytes(data)
        os.replace(partial, target)
    return relative
