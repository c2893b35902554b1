"""The evaluation run's outputs: `metrics.json`, a short `report.md` and the accuracy-vs-thinking plots.

The tables are built once as rows of strings and rendered as markdown (report) or with rich (terminal).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from mvqa.data.storage import atomic_path, write_json

Rows = tuple[list[str], list[list[str]]]


def write_report(metrics: Mapping[str, Any], out_dir: str | Path, plots: bool = True) -> Path:
    """Write `metrics.json`, the plots (unless plots=False) and `report.md` into out_dir; returns
    report.md."""
    out_dir = Path(out_dir)
    write_json(metrics, out_dir / "metrics.json")
    plot_paths = []
    if plots:
        from mvqa.eval.plots import write_plots  # matplotlib only when plotting

        plot_paths = write_plots(metrics, out_dir)
    path = out_dir / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text(report_markdown(metrics, [p.name for p in plot_paths]), encoding="utf-8")
    return path


def report_markdown(metrics: Mapping[str, Any], plot_names: list[str] = ()) -> str:
    parts = [
        (
            f"# Evaluation report\n\nBase model: `{metrics['base_model']}`; {metrics['n_predictions']} "
            "predictions; "
            f"95% intervals from {metrics['n_bootstrap']} bootstrap resamples (seed {metrics['seed']})."),
        "## Accuracy by model and thinking budget", _markdown(*accuracy_rows(metrics)),
        ("## Test-time scaling (s1)\n\nControl: share of runs whose thinking stayed within the budget. "
         "Scaling: mean pairwise slope of accuracy against mean thinking tokens over all budget points, and "
         "per wait setting (the thinking cap swept with the Waits fixed). Performance: best accuracy."),
        _markdown(*scaling_rows(metrics)),
    ]
    if _kinds(metrics) != ["mcq"]:
        parts += [("## By question kind\n\nClosed: accuracy (a yes/no answer matched by its leading yes/no). "
                   "Open: normalised exact match, token recall (LLaVA-Med's open-set recall) and token F1. "
                   "MCQ: accuracy."), _markdown(*kind_rows(metrics))]
    if metrics["comparisons"]:
        parts += [
            (f"## Against `{metrics['base_model']}` on the same items\n\nPaired bootstrap interval of the "
             "accuracy difference, exact McNemar p, and flips (m1: Waits can turn right answers wrong)."),
            _markdown(*comparison_rows(metrics))]
        for name, title in (("by_kind", "question kind"), ("by_content_type", "content type"),
                            ("by_modality", "modality")):
            if any(name in c for c in metrics["comparisons"]):
                parts += [f"### Paired, by {title}", _markdown(*split_comparison_rows(metrics, name))]
    if plot_names:
        parts += ["## Plots", "\n".join(f"![{name}]({name})" for name in plot_names)]
    if metrics.get("warnings"):
        parts += ["## Warnings", "\n".join(f"- {w}" for w in metrics["warnings"])]
    return "\n\n".join(parts) + "\n"


def format_table(metrics: Mapping[str, Any], width: int = 140) -> str:
    """The accuracy, scaling and comparison tables as plain text (rich, no colour codes) for printing."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False)
    console.print(_rich(*accuracy_rows(metrics), "Accuracy by model and thinking budget"))
    console.print(_rich(*scaling_rows(metrics), "Test-time scaling (s1)"))
    if _kinds(metrics) != ["mcq"]:
        console.print(_rich(*kind_rows(metrics), "By question kind (closed: accuracy; open: EM, recall, F1)"))
    if metrics["comparisons"]:
        console.print(_rich(*comparison_rows(metrics), f"Against {metrics['base_model']} on the same items"))
        if any("by_kind" in c for c in metrics["comparisons"]) and _kinds(metrics) != ["mcq"]:
            console.print(_rich(*split_comparison_rows(metrics, "by_kind"), "Paired, by question kind"))
    return buf.getvalue()


def _kinds(metrics: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys(k for r in metrics["runs"] for k in r.get("by_kind", {"mcq": None})))


def kind_rows(metrics: Mapping[str, Any]) -> Rows:
    """Per model and budget point: each kind's n and headline metric with its interval."""
    kinds = _kinds(metrics)
    header = ["model", "budget"]
    for kind in kinds:
        header += [f"{kind} accuracy [95% CI]" if kind != "open" else "open exact match [95% CI]"]
        if kind == "open":
            header += ["open recall [95% CI]", "open F1 [95% CI]"]
    rows = []
    for r in metrics["runs"]:
        row = [r["model"], r["budget_id"]]
        for kind in kinds:
            cell = r.get("by_kind", {}).get(kind)
            if cell is None:
                row += ["–"] * (3 if kind == "open" else 1)
            elif kind == "open":
                o = cell["open"]
                row += [f"{fmt_acc(o['exact_match'], o['exact_match_ci95'])} (n={o['n']})",
                        fmt_acc(o["recall"], o["recall_ci95"]), fmt_acc(o["f1"], o["f1_ci95"])]
            else:
                row.append(f"{fmt_acc(cell['accuracy'], cell['ci95'])} (n={cell['n']})")
        rows.append(row)
    return header, rows


def split_comparison_rows(metrics: Mapping[str, Any], name: str) -> Rows:
    """Paired comparisons split by kind, content type or modality: Δ accuracy (and Δ open recall) per
    group."""
    header = ["model", "budget", "base budget", name.removeprefix("by_").replace("_", " "), "n",
              "Δ accuracy [95% CI]", "McNemar p", "Δ open recall [95% CI]", "Wilcoxon p"]
    rows = []
    for c in metrics["comparisons"]:
        for key, cell in c.get(name, {}).items():
            recall = cell.get("open_recall")
            rows.append(
                [c["model"], c["budget_id"], c.get("base_budget_id", c["budget_id"]), key, str(cell["n"]),
                 fmt_diff(cell["accuracy_diff"], cell["ci95"]), f"{cell['mcnemar_p']:.3g}",
                 fmt_diff(recall["diff"], recall["ci95"]) if recall else "–",
                 f"{recall['wilcoxon_p']:.3g}" if recall else "–"])
    return header, rows


def fmt_diff(diff: float | None, ci: list[float] | None) -> str:
    return "n/a" if diff is None else f"{diff:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def accuracy_rows(metrics: Mapping[str, Any]) -> Rows:
    header = ["model", "budget", "accuracy [95% CI]", "n", "thinking tokens", "waits used", "forced",
              "parse failures"]
    rows = [[r["model"], r["budget_id"], fmt_acc(r["accuracy"], r["ci95"]), str(r["n"]),
             f"{r['mean_thinking_tokens']:.1f}", f"{r['mean_waits_used']:.2f}", fmt_pct(r["forced_share"]),
             f"{fmt_pct(r['parse_failure_rate'])} ({r['n_unparseable']})"] for r in metrics["runs"]]
    return header, rows


def scaling_rows(metrics: Mapping[str, Any]) -> Rows:
    header = ["model", "Control", "Scaling (Δacc per 1k tokens)", "per wait setting", "Performance",
              "best budget", "budget points"]
    rows = []
    for model, s in metrics["scaling"].items():
        by_series = "; ".join(f"{k}: {fmt_slope(v)}" for k, v in s["scaling_by_series"].items())
        rows.append(
            [model, fmt_pct(s["control"]), fmt_slope(s["scaling"]), by_series, f"{s['performance']:.3f}",
             s["best_budget_id"], str(s["n_budget_points"])])
    return header, rows


def comparison_rows(metrics: Mapping[str, Any]) -> Rows:
    header = ["model", "budget", "base budget", "Δ accuracy [95% CI]", "McNemar p", "right→wrong",
              "wrong→right",
              "n paired"]
    rows = []
    for c in metrics["comparisons"]:
        diff = fmt_diff(c["accuracy_diff"], c["ci95"])
        p = "n/a" if c["mcnemar_p"] is None else f"{c['mcnemar_p']:.3g}"
        rows.append([c["model"], c["budget_id"], c.get("base_budget_id", c["budget_id"]), diff, p,
                     str(c["right_to_wrong"]), str(c["wrong_to_right"]),
                     str(c["n_paired"])])
    return header, rows


def fmt_acc(accuracy: float, ci: list[float]) -> str:
    return f"{accuracy:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def fmt_slope(slope_per_token: float | None) -> str:
    return "n/a" if slope_per_token is None else f"{1000 * slope_per_token:+.3f}"


def fmt_pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def _rich(header: list[str], rows: list[list[str]], title: str) -> Table:
    table = Table(*header, title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for row in rows:
        table.add_row(*row)
    return table
