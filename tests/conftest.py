"""Shared fixtures: composing the entries' configs with Hydra's compose API, and the shared real data."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import sys
import tempfile
from pathlib import Path

import pytest

# W&B must never reach the network from tests, and must not write into the user's home.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Tiny models and synthetic worlds are built once and shared by every test (and their subprocesses).
os.environ.setdefault("MVQA_CACHE", os.path.join(tempfile.gettempdir(), "mvqa-test-cache"))

from mvqa.config import CONFIG_DIR, PROJECT_ROOT, setup

# The real data (the MVQA1k release, SLAKE, images): MVQA_DATA, else ../shared/data beside the project. The
# configs read the same variable (conf/common.yaml: paths.shared_data), so composed runs and the entries this
# suite spawns see the same folder.
SHARED_DATA = Path(os.environ.get("MVQA_DATA") or PROJECT_ROOT.parent / "shared" / "data").resolve()
os.environ["MVQA_DATA"] = str(SHARED_DATA)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# The files whose tests take longest (the reduced demo with its kill and resume: a third of the suite's time).
LONGEST_FILES = ("tests/test_demo_chain.py",)


def pytest_collection_modifyitems(config, items):
    """Longest first: those files, then the other slow tests, then the rest (a stable sort). `make test` runs
    the suite on two pytest-xdist workers that take whole files in this order, so the longest file starts at
    once beside the others instead of last, with the other worker idle."""
    items.sort(key=lambda item: (item.nodeid.split("::")[0] not in LONGEST_FILES,
                                 item.get_closest_marker("slow") is None))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder. Absent on a clone without it: the test is skipped, saying how to give it; in CI
    (CI=true) the real-data tests must run, so an absent folder fails them."""
    if not SHARED_DATA.is_dir():
        why = (f"the real data is not at {SHARED_DATA}: set MVQA_DATA to the folder holding mvqa1k/ and "
               "slake/ (default: ../shared/data beside the project)")
        if IN_CI:
            pytest.fail(f"{why}; CI must run the real-data tests")
        pytest.skip(why)
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


def _logger_states() -> dict:
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    return {lg: (lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in loggers}


@contextlib.contextmanager
def _restored_process_state():
    """Puts back what a Hydra run changes in the process: the logging handlers each job installs on the root
    logger in place of pytest's (a console handler and a file in the job dir: caplog would see nothing after),
    Hydra's singletons (GlobalHydra stays initialized; Hydra resets HydraConfig itself, this is a guard: W&B
    would take a stale sweep's group from it), the environment, the global RNGs, torch's threads and the
    warning filters."""
    import random
    import warnings

    import numpy as np
    import torch
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.singleton import Singleton

    singletons, loggers, environ = copy.deepcopy(Singleton.get_state()), _logger_states(), dict(os.environ)
    rngs, threads = (random.getstate(), np.random.get_state(), torch.get_rng_state()), torch.get_num_threads()
    GlobalHydra.instance().clear()
    try:
        with warnings.catch_warnings():
            yield
    finally:
        Singleton.set_state(singletons)
        for logger, (level, handlers, propagate, disabled) in loggers.items():
            for handler in logger.handlers:
                if handler not in handlers:
                    handler.close()
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate, logger.disabled = propagate, disabled
        os.environ.clear()
        os.environ.update(environ)
        random.setstate(rngs[0])
        np.random.set_state(rngs[1])
        torch.set_rng_state(rngs[2])
        torch.set_num_threads(threads)


@pytest.fixture
def entry(monkeypatch, capsys):
    """entry(name, *overrides, cwd=...) runs generate.py / train.py / evaluate.py's @hydra.main function in
    this process, as `python NAME.py *overrides` launched from `cwd` would: multiruns included (the basic
    launcher and Optuna run their jobs here; submitit's launchers spawn theirs). Saves the ~10 s a spawned
    entry spends importing torch, transformers, Lightning and PEFT. Returns the console output (stdout,
    stderr). Errors are raised as they are (HYDRA_FULL_ERROR), not printed and turned into an exit status."""
    from mvqa import cli

    def _entry(name: str, *overrides: str, cwd: Path):
        capsys.readouterr()
        with monkeypatch.context() as patch, _restored_process_state():
            patch.setenv("HYDRA_FULL_ERROR", "1")
            patch.chdir(cwd)
            patch.setattr(sys, "argv", [str(PROJECT_ROOT / f"{name}.py"), *overrides])
            getattr(cli, name)()
        return capsys.readouterr()

    return _entry
