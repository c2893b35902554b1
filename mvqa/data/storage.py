"""Writing item files so a kill never leaves output that looks complete, and reading them back.

Every final output is written to a temporary name in the same directory and renamed into place (files with
`atomic_path`, directories such as adapters, tiny models and synthetic worlds with `atomic_dir`: the one
home of that logic); appendable JSONL shards (resumable trace generation) are flushed line by line and read
back tolerating a torn last line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from mvqa.data.records import VQAItem, item_from_json, item_to_json


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary sibling directory of `path`; it becomes `path` only if the block finishes.

    replace=True swaps out a `path` that exists (an adapter saved again), putting it back if the swap fails;
    replace=False is for cache entries made by content hash: when another process renamed its copy into place
    first, that copy is identical and is kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    try:
        yield tmp
        if replace and path.exists():
            os.rename(path, old)
        try:
            os.rename(tmp, path)
        except OSError:
            if replace or not path.is_dir():  # not a lost race with another writer: a real failure
                raise
    except BaseException:
        if old.exists() and not path.exists():  # put the previous version back
            os.rename(old, path)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def write_dir_atomically(write, path: str | os.PathLike) -> Path:
    """`write(tmp_dir)`, then swap the result into place at `path` (see atomic_dir)."""
    with atomic_dir(path) as tmp:
        write(tmp)
    return Path(path)


def write_items_jsonl(items: Iterable[VQAItem], path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(item_to_json(it) + "\n" for it in items)
    return Path(path)


def read_items_jsonl(path: str | os.PathLike, allow_torn_tail: bool = False) -> list[VQAItem]:
    """Read items; with `allow_torn_tail` a last line cut by a kill is ignored (it is the batch in flight)."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            items.append(item_from_json(line))
        except json.JSONDecodeError as err:
            if allow_torn_tail and n == len(lines):
                break
            raise ValueError(f"{path}:{n}: not a JSON item record ({err})") from err
    return items


def write_json(obj, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), encoding="utf-8")
    return Path(path)


def items_fingerprint(items: Iterable[VQAItem]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(item_to_json(it).encode())
    return h.hexdigest()
