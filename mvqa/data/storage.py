"""Writing item files so a kill never leaves output that looks complete, and reading them back.

Every final output is written to a temporary name in the same directory and renamed into place (files with
`atomic_path`, directories such as adapters, tiny models and synthetic worlds with `atomic_dir`: the one
home of that logic); appendable JSONL shards (resumable trace generation) are flushed line by line and read
back tolerating a torn last line. A file that one process appends to is guarded by `exclusive_lock`, so a
second writer stops instead of doubling its rows; `check_unique_ids` refuses a stage output that holds an id
twice.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
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


def file_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes: the stage cache keys' digest of model weights and input files."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def items_fingerprint(items: Iterable[VQAItem]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(item_to_json(it).encode())
    return h.hexdigest()


class BusyError(RuntimeError):
    """Another live process holds the lock of what this one was about to write."""


@contextlib.contextmanager
def exclusive_lock(
    lock_path: str | os.PathLike, what: str, wait_s: float = 0.0, hint: str = ""
) -> Iterator[None]:
    """Hold an OS lock (flock) on `lock_path` for the block; another holder -> BusyError after `wait_s`
    seconds (math.inf: wait while the holder lives), logging once that it waits.

    The kernel drops the lock when its process dies (kill -9 included), so a crashed writer never blocks the
    next run; the file itself stays (removing it would let two processes lock two different files). The holder
    writes its pid and host into the file so the error can name it.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + max(wait_s, 0.0)
    said = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BusyError(
                        f"{what} is being written by {_lock_holder(fd)}; wait or use another cache"
                        f"{hint} (lock: {lock_path})"
                    ) from None
                if not said:  # a job that sits idle says why
                    limit = "while it runs" if math.isinf(wait_s) else f"up to {wait_s:g} s"
                    logging.getLogger(__name__).info(
                        "%s is being written by %s: waiting %s (lock: %s)", what, _lock_holder(fd), limit,
                        lock_path)
                    said = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _lock_holder(fd: int) -> str:
    """'pid N' (and ' on HOST' when another host's) as the holder wrote it into the lock file."""
    holder = os.pread(fd, 200, 0).decode(errors="replace").split() or ["?"]
    on = f" on {holder[1]}" if len(holder) > 1 and holder[1] != socket.gethostname() else ""
    return f"pid {holder[0]}{on}"


def duplicate_ids(items: Iterable[VQAItem]) -> dict[str, int]:
    """id -> count for every id that occurs more than once."""
    counts = collections.Counter(it.id for it in items)
    return {i: n for i, n in counts.items() if n > 1}


def check_unique_ids(items: Iterable[VQAItem], where: str) -> None:
    """Refuse a set that holds an id twice (two writers appended to one file, a bad merge); names the ids."""
    dups = duplicate_ids(items)
    if dups:
        shown = ", ".join(f"{i!r} x{n}" for i, n in list(dups.items())[:10])
        raise ValueError(
            f"{where}: {len(dups)} ids occur more than once ({shown}"
            f"{', ...' if len(dups) > 10 else ''}); nothing is cached from it"
        )
