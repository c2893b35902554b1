"""Compare finished runs: which config keys differ between them and how each scored.

    python -m mvqa.compare RUN_DIR... [--plot PATH]
    python -m mvqa.compare 'multirun/evaluate/2025-01-01/*'      # a glob, or a multirun dir: its job dirs
    python -m mvqa.compare outputs/study/selection              # a selection study: its arms x budgets table

Each run dir is read locally: `.hydra/config.yaml`, `.hydra/overrides.yaml`, `.hydra/hydra.yaml` (group
choices) and the run's scores: `metrics.json` of an evaluate run (best accuracy per model, and per budget) or
of a train run (`val_acc`), or `summary.json` of a generate run (its diversity metric).
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from rich import box
from rich.console import Console
from rich.table import Table

from mvqa.eval.report import fmt_acc
from mvqa.schemas.entries import GenerateConf

DIVERSITY_METRIC = GenerateConf.optimized_metric  # generate.py's default optimised metric, read from its home
# Shown for every generate run besides its optimised metric: the curated set's spread, coverage and outliers.
DIVERSITY_FIGURES = ("mean_pairwise_cosine_distance", "coverage", "outliers")
ABSENT = "—"


class RunDirError(ValueError):
    """A path that is not a finished run (or has no runs below it)."""


@dataclass
class Run:
    dir: Path
    kind: str  # "evaluate" | "train" | "generate"
    metrics: dict[str, Any]
    settings: dict[str, Any]  # flattened dotted config keys, plus group choices under their group name
    groups: list[str] = field(default_factory=list)  # the config groups whose choice is in `settings`
    overrides: list[str] = field(default_factory=list)
    label: str = ""


def find_run_dirs(paths: Sequence[str]) -> list[Path]:
    """Expand globs and multirun dirs into run dirs (dirs with `.hydra/`, `metrics.json` or
    `summary.json`)."""
    found: list[Path] = []
    for pattern in paths:
        if glob.has_magic(pattern):  # files a glob catches (a multirun's multirun.yaml) are not runs
            matches = [m for m in sorted(glob.glob(pattern), key=_natural) if Path(m).is_dir()]
            if not matches:
                raise RunDirError(f"{pattern}: matches no directory")
        elif not Path(pattern).is_dir():
            raise RunDirError(f"{pattern}: not a directory")
        else:
            matches = [pattern]
        for m in map(Path, matches):
            runs = [m] if _is_run_dir(m) else _runs_below(m)
            if not runs:
                raise RunDirError(f"{m}: not a run dir (no .hydra/, metrics.json or summary.json) and no run "
                                  "dirs below it")
            found += [r for r in runs if r.resolve() not in {f.resolve() for f in found}]
    return found


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    metrics_path = next((run_dir / n for n in ("metrics.json", "summary.json") if (run_dir / n).is_file()),
                        None)
    if metrics_path is None:
        raise RunDirError(
            f"{run_dir}: no metrics.json (evaluate and train runs) nor summary.json (generate runs); "
            "did the job finish?")
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunDirError(f"{metrics_path}: not valid JSON ({err})") from err
    hydra_dir = run_dir / ".hydra"
    config = _load_yaml(hydra_dir / "config.yaml") or {}
    overrides = _load_yaml(hydra_dir / "overrides.yaml") or []
    hydra_cfg = _load_yaml(hydra_dir / "hydra.yaml") or {}
    choices = {g: c for g,
               c in ((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices", {}).items()
               if not g.startswith("hydra/") and g != "hydra"}
    # group choices first (dataset=slake says more than its keys); an empty group's {} leaf gives way to them
    settings = {**choices, **{k: v for k, v in flatten(config).items() if k not in choices}}
    return Run(dir=run_dir, kind=_kind(metrics, metrics_path), metrics=metrics, settings=settings,
               groups=list(choices), overrides=[str(o) for o in overrides], label=run_dir.name)


def load_runs(paths: Sequence[str]) -> list[Run]:
    runs = [load_run(d) for d in find_run_dirs(paths)]
    dirs = [r.dir.resolve() for r in runs]
    common = Path(os.path.commonpath(dirs)) if len(dirs) > 1 else dirs[0].parent
    for r, d in zip(runs, dirs):
        r.label = str(d.relative_to(common)) if d != common else d.name
    return runs


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay whole values (a swept list is one setting)."""
    if isinstance(node, Mapping) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): node}


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """Settings whose value is not the same in every run (absent counts as a value).

    When a group's choice differs (dataset=synthetic vs dataset=slake), the keys inside that group are left
    out unless a run overrode them explicitly: the choice already says what changed.
    """
    keys = list(dict.fromkeys(k for r in runs for k in r.settings))
    differ = [k for k in keys if len({_show(r.settings.get(k, ABSENT)) for r in runs}) > 1]
    overridden = {_override_key(o) for r in runs for o in r.overrides}
    changed_groups = [g.replace("/", ".") + "." for g in differ if any(g in r.groups for r in runs)]
    return [k for k in differ if k in overridden or not any(k.startswith(g) for g in changed_groups)]


def scores(run: Run) -> list[dict[str, str]]:
    """Rows of {model, metric, score, ci95, at} saying how a run scored."""
    m = run.metrics
    if run.kind == "evaluate":
        rows = []
        for model in m["models"]:
            s = m["scaling"][model]
            best = next(r for r in m["runs"] if r["model"] == model and r["budget_id"] == s["best_budget_id"])
            rows.append({"model": model, "metric": "accuracy (best)", "score": f"{s['performance']:.3f}",
                         "ci95": f"[{best['ci95'][0]:.3f}, {best['ci95'][1]:.3f}]",
                         "at": s["best_budget_id"]})
        return rows
    if run.kind == "train":
        return [{"model": "", "metric": "val_acc", "score": f"{m['val_acc']:.3f}", "ci95": "", "at": ""}]
    wanted = str(run.settings.get("optimized_metric") or DIVERSITY_METRIC)
    flat = flatten(m.get("diversity") or {})
    leaves = {k: v for k, v in flat.items() if k.split(".")[-1] == wanted}
    if not leaves:
        return [{"model": "", "metric": f"diversity.{wanted}", "score": "n/a (not recorded)", "ci95": "",
                 "at": ""}]
    leaves.update((f"output.{f}", flat[f"output.{f}"]) for f in DIVERSITY_FIGURES
                  if f != wanted and f"output.{f}" in flat)
    return [
        {"model": "", "metric": f"diversity.{k}", "score": f"{v:.4f}" if isinstance(v, float) else _show(v),
         "ci95": "", "at": ""} for k, v in leaves.items()]


def format_comparison(runs: Sequence[Run], width: int = 160) -> str:
    """The table of differing settings and scores, plus per-budget accuracy when a run swept budgets."""
    keys = differing_keys(runs)
    table = Table("run", *keys, "model", "metric", "score", "95% CI", "at budget", box=box.SIMPLE_HEAD,
                  title="Runs: settings that differ, and scores", title_justify="left")
    for r in runs:
        for i, s in enumerate(scores(r)):
            cells = [r.label,
                     *(_show(r.settings.get(k, ABSENT)) for k in keys)] if i == 0 else [""] * (1 + len(keys))
            table.add_row(*cells, s["model"], s["metric"], s["score"], s["ci95"], s["at"])
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False)
    if not keys and len(runs) > 1:
        console.print("No config key differs between these runs.")
    console.print(table)
    evaluated = [r for r in runs if r.kind == "evaluate"]
    if any(len(r.metrics["budget_ids"]) > 1 for r in evaluated):
        per_budget = Table("run", "model", "budget", "accuracy [95% CI]", "thinking tokens", "waits used",
                           "parse failures", box=box.SIMPLE_HEAD, title="Accuracy per budget point",
                           title_justify="left")
        for r in evaluated:
            for p in r.metrics["runs"]:
                per_budget.add_row(r.label, p["model"], p["budget_id"], fmt_acc(p["accuracy"], p["ci95"]),
                                   f"{p['mean_thinking_tokens']:.1f}", f"{p['mean_waits_used']:.2f}",
                                   f"{100 * p['parse_failure_rate']:.1f}%")
        console.print(per_budget)
    return buf.getvalue()


def plot_runs(runs: Sequence[Run], path: str | Path) -> Path:
    """All evaluate runs' accuracy-vs-thinking curves on one plot, each line named by run and model."""
    from mvqa.eval.plots import plot_accuracy_vs_thinking

    evaluated = [r for r in runs if r.kind == "evaluate"]
    if not evaluated:
        raise RunDirError("--plot: none of these runs is an evaluate run (no accuracy per budget to plot)")
    keys = differing_keys(runs)
    merged: dict[str, Any] = {"models": [], "runs": []}
    for r in evaluated:
        what = ", ".join(f"{k.split('.')[-1]}={_show(r.settings.get(k, ABSENT))}" for k in keys)
        name = f"{r.label} ({what})" if what else r.label
        for model in r.metrics["models"]:
            merged["models"].append(f"{name}: {model}")
        merged["runs"] += [{**p, "model": f"{name}: {p['model']}"} for p in r.metrics["runs"]]
    return plot_accuracy_vs_thinking(merged, path, title="Accuracy vs thinking tokens across runs")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mvqa.compare", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run dirs, multirun dirs or globs of them")
    parser.add_argument("--plot", type=Path,
                        help="write the combined accuracy-vs-thinking-tokens plot here (PNG)")
    parser.add_argument("--width", type=int, default=160, help="table width in characters")
    args = parser.parse_args(argv)
    studies = [Path(r) for r in args.runs if (Path(r) / "study.json").is_file()]
    if studies:  # a study dir holds many runs; its own report is the comparison that answers its question
        from mvqa.eval.study_report import format_study

        for study in studies:
            print(format_study(json.loads((study / "study.json").read_text()), args.width), end="")
        args.runs = [r for r in args.runs if Path(r) not in studies]
        if not args.runs:
            return 0
    try:
        runs = load_runs(args.runs)
        print(format_comparison(runs, args.width), end="")
        if args.plot:
            print(f"plot: {plot_runs(runs, args.plot)}")
    except RunDirError as err:
        parser.error(str(err))
    return 0


def _is_run_dir(path: Path) -> bool:
    return any((path / n).exists() for n in (".hydra", "metrics.json", "summary.json"))


def _runs_below(root: Path) -> list[Path]:
    runs = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=_natural)
        if Path(dirpath) != root and _is_run_dir(Path(dirpath)):
            runs.append(Path(dirpath))
            dirnames[:] = []  # a run's own subdirs (wandb, checkpoints) are not runs
    return sorted(runs, key=lambda p: _natural(str(p)))


def _natural(s: str) -> list:
    """Job dirs 0, 1, ..., 10 in numeric order."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _load_yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as err:  # omegaconf/yaml raise several types; all mean the same to the user
        raise RunDirError(f"{path}: not a readable Hydra YAML file ({err})") from err


def _kind(metrics: Any, path: Path) -> str:
    if not isinstance(metrics, dict):
        raise RunDirError(f"{path}: expected a JSON object")
    if "runs" in metrics and "scaling" in metrics:
        return "evaluate"
    if "val_acc" in metrics:
        if not isinstance(metrics["val_acc"], (int, float)) or isinstance(metrics["val_acc"], bool):
            raise RunDirError(f"{path}: val_acc must be a number, got {metrics['val_acc']!r}")
        return "train"
    if "diversity" in metrics:
        return "generate"
    raise RunDirError(
        f"{path}: no scores found: expected evaluate metrics (runs, scaling), a train run's val_acc "
        "or a generate run's diversity")


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


if __name__ == "__main__":
    sys.exit(main())
