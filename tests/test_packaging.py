"""The wheel: configs inside it (conf/ mapped to mvqa._conf), every package listed, the console scripts; and a
non-editable install outside the checkout that composes its configs through pkg://mvqa._conf."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mvqa.config import PROJECT_ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy: an in-tree setuptools build leaves build/ and *.egg-info in the checkout.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT / name, src / name)
    for name in ("mvqa", "conf"):
        shutil.copytree(PROJECT_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("mvqa-*.whl")
    return whl


def test_wheel_holds_every_config_package_and_console_script(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {
        f"mvqa/_conf/{p.relative_to(PROJECT_ROOT / 'conf')}" for p in (PROJECT_ROOT / "conf").rglob("*.yaml")
    }
    assert len(configs) > 40 and configs <= names, sorted(configs - names)[:5]
    modules = {str(p.relative_to(PROJECT_ROOT)) for p in (PROJECT_ROOT / "mvqa").rglob("*.py")}
    assert modules <= names, sorted(modules - names)[:5]  # a subpackage missing from pyproject's list
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script in (
        "mvqa-generate = mvqa.cli:generate",
        "mvqa-train = mvqa.cli:train",
        "mvqa-evaluate = mvqa.cli:evaluate",
    ):
        assert script in text


@pytest.mark.slow
def test_installed_wheel_runs_mvqa_generate_help_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # else pip sees the checkout's mvqa
    subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        env=clean,
    )
    # The dependencies come from this interpreter's site-packages (PYTHONPATH does not run its .pth files, so
    # the checkout's editable mvqa stays out); the installed mvqa is the wheel's.
    deps = next(p for p in sys.path if p.endswith("site-packages"))
    env = {**clean, "PYTHONPATH": deps, "OMP_NUM_THREADS": "1"}
    where = subprocess.run(
        [venv / "bin" / "python", "-c", ("import mvqa.config as c; print(c.__file__, c.HYDRA_CONFIG_PATH)")],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(str(venv)) and where.split()[1] == "pkg://mvqa._conf"
    out = subprocess.run(
        [venv / "bin" / "mvqa-generate", "--help"],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "generate is powered by Hydra" in out and "callbacks: default, early_stopping" in out
    assert "scorer: likelihood, predictions" in out
