"""Shared fixtures: composing the entries' configs with Hydra's compose API, and the shared real data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# W&B must never reach the network from tests, and must not write into the user's home.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Tiny models and synthetic worlds are built once and shared by every test (and their subprocesses).
os.environ.setdefault("MVQA_CACHE", os.path.join(tempfile.gettempdir(), "mvqa-test-cache"))

from mvqa.config import CONFIG_DIR, PROJECT_ROOT, setup

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the shared real data is expected at {SHARED_DATA} (see DEVELOPERS.md)")
    return SHARED_DATA


@pytest.fixture
def compose(tmp_path, monkeypatch):
    """compose(entry, overrides) -> DictConfig with outputs and caches under tmp_path."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    setup()
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))

    def _compose(entry: str, overrides: list[str] = (), output_dir: Path | None = None):
        GlobalHydra.instance().clear()
        out = output_dir or tmp_path / "run"
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name=entry):
            return hydra_compose(config_name=entry, overrides=[f"paths.output_dir={out}", *overrides])

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run several times faster on one thread: no OpenMP hand-off per small op on shared cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
