"""The import direction: data -> models -> generation -> curate | train | eval -> entries.

The rule, read from every module's imports (module level and inside functions alike, so no cycle hides in a
function body):
- a package imports only packages of its own layer or below: data (0) < models (1) < generation (2) <
  curate, train, eval (3, siblings that do not import each other) < the entry-level tools mvqa.compare,
  mvqa.demo, mvqa.study, mvqa.export and mvqa.cli (4), which may import anything below them;
- mvqa.schemas, mvqa.config and mvqa.tracking form the base: anyone may import them; they import only the base
  (schemas only schemas), never a layer, so a config can be composed without loading a model;
- the root entries (generate.py, train.py, evaluate.py) sit above everything and are not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mvqa.config import PROJECT_ROOT

LAYERS = {"data": 0, "models": 1, "generation": 2, "curate": 3, "train": 3, "eval": 3,
          "compare": 4, "demo": 4, "study": 4, "cli": 4, "export": 4}
BASE = {"schemas", "config", "tracking"}
BASE_MAY_IMPORT = {"schemas": {"schemas"}, "config": {"schemas"}, "tracking": {"schemas", "config"}}
PACKAGE = PROJECT_ROOT / "mvqa"


def _part(module: str) -> str | None:
    """The part of mvqa a dotted name belongs to (mvqa.data.records -> data); None for mvqa itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def mvqa_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every mvqa import in the file, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "mvqa"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                package = path.relative_to(PROJECT_ROOT).with_suffix("").parts[: -node.level]
                module = ".".join([*package, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module.split(".")[0] == "mvqa":
                found.append((node.lineno, module))
    return found


def violations(path: Path) -> list[str]:
    mine = _part(".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts))
    if mine is None or mine == "__init__":
        return []
    bad = []
    for line, module in mvqa_imports(path):
        theirs = _part(module)
        if theirs is None or theirs == mine:
            continue
        where = f"{path.relative_to(PROJECT_ROOT)}:{line} imports {module}"
        if mine in BASE:
            if theirs not in BASE_MAY_IMPORT[mine]:
                bad.append(f"{where}: the base ({mine}) may import only {sorted(BASE_MAY_IMPORT[mine])}")
        elif theirs in BASE:
            continue
        elif theirs not in LAYERS:
            bad.append(f"{where}: mvqa.{theirs} has no layer (add it to LAYERS)")
        elif mine not in LAYERS:
            bad.append(f"{where}: mvqa.{mine} has no layer (add it to LAYERS)")
        elif LAYERS[theirs] > LAYERS[mine] or (LAYERS[theirs] == LAYERS[mine] and LAYERS[mine] == 3):
            bad.append(f"{where}: {mine} (layer {LAYERS[mine]}) may not import {theirs} "
                       f"(layer {LAYERS[theirs]})")
    return bad


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_package_has_a_layer():
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in MODULES} - {"__init__"}
    placed = set(LAYERS) | BASE
    assert parts == placed, f"unplaced: {parts - placed}, gone: {placed - parts}"


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_imports_follow_the_layering(path):
    assert not violations(path), "\n".join(violations(path))


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    fake = PACKAGE / "data" / "_layering_probe.py"  # never written: the source is parsed from a stand-in
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: (
        "def f():\n    from mvqa.train.recipe import run_training\n" if self == fake else ""))
    assert violations(fake) == [
        ("mvqa/data/_layering_probe.py:2 imports mvqa.train.recipe: "
         "data (layer 0) may not import train (layer 3)")]
