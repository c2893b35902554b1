"""Read what an offline W&B run stored: the records of its `run-<id>.wandb` file (what `wandb sync` uploads).

The file is W&B's LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of chunks,
each with a 7-byte header (crc32, length, type: full / first / middle / last); a record is one protobuf
`Record` split over one or more chunks.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run store"
    pos, out, pending = _HEADER, [], b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if pos + _HEADER + length > len(data):
            break  # a chunk still being written
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FIRST:
            pending = chunk
            continue
        if kind == _MIDDLE:
            pending += chunk
            continue
        if kind not in (_FULL, _LAST):
            break  # zero padding at the end of the file
        record = pb.Record()
        record.ParseFromString(pending + chunk if kind == _LAST else chunk)
        out.append(record)
        pending = b""
    return out


def offline_run(job_dir: Path) -> dict:
    """The one offline run under `job_dir/wandb`: its run record, config, logged keys and artifacts."""
    stores = list(Path(job_dir).glob("wandb/offline-run-*/run-*.wandb"))
    assert len(stores) == 1, f"expected one offline run under {job_dir}, found {stores}"
    # wandb-core may still be flushing the store when `run.finish()` returns: wait for the exit record.
    deadline = time.monotonic() + 30
    while True:
        recs = records(stores[0])
        if any(r.WhichOneof("record_type") == "exit" for r in recs) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
    config = {}
    for r in recs:
        if r.WhichOneof("record_type") == "config":
            config.update({item.key: json.loads(item.value_json) for item in r.config.update})
    config.update({item.key: json.loads(item.value_json) for item in run.config.update})
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in recs if r.WhichOneof("record_type") == "history"]
    artifacts = [r.artifact for r in recs if r.WhichOneof("record_type") == "artifact"]
    return {"store": stores[0], "id": run.run_id, "group": run.run_group, "job_type": run.job_type,
            "name": run.display_name, "config": config,
            "history": history, "artifacts": artifacts}
