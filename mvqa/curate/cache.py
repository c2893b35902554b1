"""What a stage's cache key holds besides its config and input: the weights of the models it runs and the
version of its code, so a checkpoint retrained at the same path, or a fixed stage, never reuses stale output.

Weights are fingerprinted by the size and sha256 of every weight file (safetensors, bin) of the model dir and
of its adapter. Hashing a 7B checkpoint takes a while, so each file's digest is stored under
`<cache_dir>/digests/`, keyed by its real path, size and mtime: a file rewritten in place is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mvqa.data.storage import atomic_path, file_fingerprint

# Bump a stage's version when a change to its code changes its output: caches of the older code stop matching.
CODE_VERSIONS = {"score": 2, "hard": 1, "trace": 1, "merge": 1, "filter": 1, "sample": 2, "export": 1}

# The config nodes of the models a stage runs (score: the scorer's model_key, when its scorer has one).
STAGE_MODELS = {"score": ["${scorer.model_key}"], "trace": ["reasoner"], "merge": ["reasoner"]}

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def stored_digest(path: Path, digest_dir: Path) -> str:
    """sha256 of a file, computed once per (real path, size, mtime) and stored in digest_dir."""
    real = path.resolve()
    st = real.stat()
    record = {"path": str(real), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    store = digest_dir / (hashlib.sha256(str(real).encode()).hexdigest()[:24] + ".json")
    if store.exists():
        try:
            saved = json.loads(store.read_text())
            if {k: saved.get(k) for k in record} == record:
                return saved["sha256"]
        except (json.JSONDecodeError, KeyError):
            pass  # a torn store: hash again
    digest = file_fingerprint(real)
    with atomic_path(store) as tmp:
        tmp.write_text(json.dumps({**record, "sha256": digest}))
    return digest


def dir_weights(root: Path, digest_dir: Path) -> dict[str, Any]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        return {"dir_without_weights": str(root)}
    return {str(p.relative_to(root)): [p.stat().st_size, stored_digest(p, digest_dir)] for p in files}


def model_fingerprint(conf: DictConfig, digest_dir: Path) -> dict[str, Any]:
    """What identifies the weights a model node loads: file digests for local dirs, the build spec for tiny
    models built on use (deterministic from it), the hub id and revision otherwise (pin `revision` to make
    that exact)."""
    out: dict[str, Any] = {}
    path = conf.get("path")
    if path and Path(path).expanduser().is_dir():
        out["weights"] = dir_weights(Path(path).expanduser() / (conf.get("subfolder") or ""), digest_dir)
    elif path:
        out["hub"] = {"id": path, "subfolder": conf.get("subfolder"), "revision": conf.get("revision")}
    elif "size" in conf:  # a tiny model, built from its config on first use
        from mvqa.models.tiny import cache_path

        out["tiny_build"] = cache_path(conf).name
    adapter = conf.get("adapter")
    if adapter:
        out["adapter"] = (dir_weights(Path(adapter), digest_dir) if Path(adapter).is_dir()
                          else {"missing": str(adapter)})
    return out


def stage_fingerprint(stage: str, cfg: DictConfig) -> dict[str, Any]:
    """The code version and the model weights of one stage, for its cache key."""
    digest_dir = Path(cfg.pipeline.cache_dir) / "digests"
    models: dict[str, Any] = {}
    scorer_file = OmegaConf.select(cfg, "scorer.path") if stage == "score" else None
    if scorer_file:  # the predictions scorer joins a CSV: its bytes matter, its model_key is not run
        models["scorer.path"] = (stored_digest(Path(scorer_file), digest_dir) if os.path.isfile(scorer_file)
                                 else {"missing": scorer_file})
        return {"code": CODE_VERSIONS.get(stage, 1), "models": models}
    for key in STAGE_MODELS.get(stage, []):
        if key.startswith("${"):
            key = OmegaConf.select(cfg, key[2:-1])
        node = OmegaConf.select(cfg, key) if key else None
        if isinstance(node, DictConfig):
            models[key] = model_fingerprint(node, digest_dir)
    return {"code": CODE_VERSIONS.get(stage, 1), "models": models}
