"""The suite itself: real-data tests skip with the reason on a clone without the data, and fail in CI; test
modules share code through tests/helpers.py, never by importing each other."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from mvqa.config import PROJECT_ROOT

# A real-data test in this module: the child pytest collects only this module, which imports nothing heavy.
REAL_DATA_TEST = "tests/test_suite.py::test_the_real_data_folder_holds_the_release_and_slake"


def _run_without_data(tmp_path, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "MVQA_DATA": str(tmp_path / "absent"), "CI": "", **env}
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", REAL_DATA_TEST]
    return subprocess.run(cmd, cwd=PROJECT_ROOT, env=environ, capture_output=True, text=True, timeout=300,
                          check=False)


def test_the_real_data_folder_holds_the_release_and_slake(shared_data):
    assert (shared_data / "mvqa1k" / "sampled_final.csv").is_file()
    assert (shared_data / "slake" / "train.json").is_file() and (shared_data / "slake" / "imgs").is_dir()


@pytest.mark.slow
def test_real_data_tests_skip_without_the_data_and_fail_in_ci(tmp_path):
    done = _run_without_data(tmp_path)
    assert done.returncode == 0 and "1 skipped" in done.stdout, done.stdout
    assert f"the real data is not at {tmp_path / 'absent'}: set MVQA_DATA" in done.stdout
    done = _run_without_data(tmp_path, CI="true")
    assert done.returncode != 0 and "CI must run the real-data tests" in done.stdout, done.stdout


def test_modules_import_no_other_test_module():
    tests = PROJECT_ROOT / "tests"
    names = {p.stem for p in tests.glob("test_*.py")}
    found = {}
    for path in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for module in modules:
                stem = module.removeprefix("tests.")
                if stem in names:
                    found.setdefault(path.name, set()).add(stem)
    assert not found, f"test modules importing others (move the shared code to tests/helpers.py): {found}"
