"""Accuracy against mean thinking tokens (s1/m1's test-time-scaling curve), from `compute_metrics` output.

Uses matplotlib's object API with the Agg canvas (no pyplot), so it needs no display and leaves the global
backend alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mvqa.data.storage import atomic_path

COMBINED_NAME = "acc_vs_thinking.png"
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v")


# What a plot's y axis shows: (label, kind or None for all items, metric within the kind).
OVERALL = ("accuracy", None, "accuracy")
KIND_MEASURES = {"mcq": ("mcq accuracy", "mcq", "accuracy"),
                 "closed": ("closed accuracy", "closed", "accuracy"),
                 "open": ("open recall", "open", "recall")}


def measure_of(run: Mapping[str, Any], measure: tuple[str, str | None, str]) -> tuple[float,
                                                                                      list[float]] | None:
    """(value, 95% interval) of one budget point under a measure; None when it has no items of that kind."""
    _, kind, metric = measure
    if kind is None:
        return run["accuracy"], run["ci95"]
    cell = run.get("by_kind", {}).get(kind)
    if cell is None:
        return None
    if metric == "accuracy":
        return cell["accuracy"], cell["ci95"]
    return cell["open"][metric], cell["open"][f"{metric}_ci95"]


def plot_accuracy_vs_thinking(metrics: Mapping[str, Any], path: str | Path,
                              models: Sequence[str] | None = None,
                              title: str | None = None,
                              measure: tuple[str, str | None, str] = OVERALL) -> Path:
    """accuracy_figure saved as a PNG at `path` (atomically)."""
    fig = accuracy_figure(metrics, models, title, measure)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def accuracy_figure(metrics: Mapping[str, Any], models: Sequence[str] | None = None,
                    title: str | None = None, measure: tuple[str, str | None, str] = OVERALL) -> Figure:
    """One line per model (and per wait count / wait string when several were run), with 95% CI bars; each
    line is an errorbar container of the axes labelled "model[, series]". `measure` picks the y axis: accuracy
    over all items (default) or one kind's metric (KIND_MEASURES)."""
    runs = [r for r in metrics["runs"] if (models is None or r["model"] in models)
            and measure_of(r, measure) is not None]
    if not runs:
        raise ValueError(f"plot_accuracy_vs_thinking: no budget points for models {models}; "
                         f"the metrics have {metrics.get('models')}")
    lines = _lines(runs)
    palette = list(dict.fromkeys([*metrics.get("models", []), *(r["model"] for r in runs)]))
    series_in_plot = list(dict.fromkeys(series for _, series in lines))
    crowded = len(lines) > 4  # then the legend goes below the axes, which grow no smaller
    fig = Figure(figsize=(8, 4.5 + (0.22 * len(lines) if crowded else 0)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for (model, series), points in lines.items():
        points.sort(key=lambda r: r["mean_thinking_tokens"])
        x = [r["mean_thinking_tokens"] for r in points]
        values = [measure_of(r, measure) for r in points]
        y = [v for v, _ in values]
        yerr = [[v - ci[0] for v, ci in values], [ci[1] - v for v, ci in values]]
        # colour says the model, line style and marker the wait setting
        k = series_in_plot.index(series)
        ax.errorbar(x, y, yerr=yerr, capsize=3, color=f"C{palette.index(model) % 10}",
                    linestyle=LINESTYLES[k % len(LINESTYLES)], marker=MARKERS[k % len(MARKERS)],
                    label=model + (f", {series}" if series else ""))
        if len(lines) <= 2:  # name each point's cap; on a crowded plot the labels would overlap
            for r in points:
                cap = r["budget"].get("max_thinking_tokens")
                ax.annotate(f"≤{cap}" if cap is not None else "∞",
                            (r["mean_thinking_tokens"], measure_of(r, measure)[0]),
                            textcoords="offset points",
                            xytext=(4, 4 if k % 2 == 0 else -12), fontsize=7, alpha=0.7)
    xs = [r["mean_thinking_tokens"] for r in runs]
    if min(xs) > 0 and max(xs) / min(xs) > 20:  # budget grids are geometric (128 ... 4096)
        ax.set_xscale("log")
    ax.set_xlabel("mean thinking tokens")
    ax.set_ylabel(f"{measure[0]} (95% bootstrap CI)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"{measure[0].capitalize()} vs thinking tokens")
    if crowded:
        fig.legend(fontsize=8, loc="outside lower center")
    else:
        ax.legend(fontsize=8, loc="best")
    return fig


def write_plots(metrics: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """The combined plot, one per question kind when the items mix kinds or are not all multiple choice
    (closed accuracy and open recall apart), and one per model; returns their paths (combined first)."""
    out_dir = Path(out_dir)
    paths = [plot_accuracy_vs_thinking(metrics, out_dir / COMBINED_NAME)]
    kinds = list(dict.fromkeys(k for r in metrics["runs"] for k in r.get("by_kind", {})))
    if kinds != ["mcq"] and kinds:
        for kind in kinds:
            label = KIND_MEASURES[kind][0]
            paths.append(plot_accuracy_vs_thinking(metrics, out_dir / f"{slug(label)}_vs_thinking.png",
                                                   measure=KIND_MEASURES[kind]))
    for model in metrics["models"]:
        paths.append(
            plot_accuracy_vs_thinking(metrics, out_dir / f"acc_vs_thinking_{slug(model)}.png", [model],
                                      title=f"Accuracy vs thinking tokens: {model}"))
    return paths


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "model"


def _lines(runs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """{(model, series label): budget points}; the series names the wait setting only where it varies."""
    several_waits = len({r["budget"].get("num_waits") for r in runs}) > 1
    several_strings = len({r["budget"].get("wait_string") for r in runs}) > 1
    lines: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        series = []
        if several_waits:
            series.append(f"waits={r['budget'].get('num_waits')}")
        if several_strings:
            series.append(repr(r["budget"].get("wait_string")))
        lines.setdefault((r["model"], ", ".join(series)), []).append(r)
    return lines
