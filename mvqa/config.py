"""Hydra set-up shared by the three entries and the tests: schemas in the ConfigStore and resolvers.

Call `setup()` before composing. It is idempotent.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# conf/ lives at the top of the checkout; the wheel maps it into the package as mvqa._conf (pyproject.toml).
# A checkout (editable install included) reads its own conf/; an installed wheel reads the packaged copy.
_CHECKOUT_CONF = PROJECT_ROOT / "conf"
_PACKAGED_CONF = Path(__file__).resolve().parent / "_conf"
CONFIG_DIR = _CHECKOUT_CONF if (_CHECKOUT_CONF / "train.yaml").is_file() else _PACKAGED_CONF
HYDRA_CONFIG_PATH = str(CONFIG_DIR) if CONFIG_DIR == _CHECKOUT_CONF else "pkg://mvqa._conf"
_UID_ENV = "MVQA_RUN_UID"


def run_uid() -> str:
    """A token that keeps run dirs apart even for two jobs started in the same second.

    It is fixed for a process and inherited by its children through the environment, so a multirun's
    launcher workers (joblib, submitit) resolve the same sweep dir as the process that created it.
    """
    if _UID_ENV not in os.environ:
        os.environ[_UID_ENV] = f"{os.getpid():x}{secrets.token_hex(2)}"
    return os.environ[_UID_ENV]


def existing_path(path: str) -> str | None:
    """`${mvqa.existing:PATH}`: PATH when it exists, else null (e.g. a bootstrapped checkpoint, once made)."""
    return path if Path(path).exists() else None


def setup() -> None:
    from mvqa.schemas import register_configs

    resolvers = {"mvqa.uid": run_uid, "mvqa.root": lambda: str(PROJECT_ROOT), "mvqa.existing": existing_path,
                 "mvqa.dirname": lambda path: str(Path(path).parent)}
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
    register_configs()
