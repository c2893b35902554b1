"""The selection study's report: every arm against `random` and the base, per budget point and question kind.

Each arm is fine-tuned once per seed and every fine-tune answers the same held-out items at every budget
point,
so per item an arm's score is its mean over seeds (closed/mcq: correct; open: correct is exact match and
recall
is reported beside it). Intervals are percentile bootstraps over items of those per-item means; an arm's
spread
is the range of its seeds' accuracies. A paired comparison takes, per item, the arm's mean minus the other's
(random's mean over the same seeds; the base's single run), with a bootstrap interval over items and the
Wilcoxon signed-rank p of the per-item differences.
"""

from __future__ import annotations

import io
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from mvqa.data.storage import atomic_path, write_json
from mvqa.eval.metrics import UNFORCED, bootstrap_mean_ci, budget_sort_key, wilcoxon_p
from mvqa.eval.report import _markdown, _rich, fmt_acc, fmt_diff

BASE, BASE_AS_USED = "base (forced)", "base (as used)"
_ARM_LABEL = re.compile(r"^base\+(?P<arm>.+)-seed(?P<seed>-?\d+)/adapter$")
KIND_METRIC = {"mcq": "correct", "closed": "correct", "open": "recall"}


def arm_of(model_label: str) -> tuple[str, int] | None:
    m = _ARM_LABEL.match(model_label)
    return (m["arm"], int(m["seed"])) if m else None


def _rng(*key: str) -> np.random.Generator:
    import zlib

    return np.random.default_rng(zlib.crc32("\x1f".join(key).encode()))


def per_item(preds: list[dict]) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """{(arm, budget_id): {item_id: {kind, correct, recall, thinking_tokens}}}, averaged over the arm's
    seeds."""
    by_cell: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    seeds: dict[str, set[int]] = defaultdict(set)
    for p in preds:
        arm_seed = arm_of(p["model"])
        if arm_seed:
            arm, seed = arm_seed
            seeds[arm].add(seed)
        elif p["model"] == "base":
            arm = BASE_AS_USED if p["budget_id"] == UNFORCED else BASE
        else:
            continue
        by_cell[arm, p["budget_id"]][str(p["item_id"])].append(p)
    out = {}
    for key, items in by_cell.items():
        out[key] = {
            i: {
                "kind": rs[0].get("kind", "mcq"),
                "content_type": rs[0].get("content_type") or "",
                "correct": float(np.mean([r["correct"] for r in rs])),
                "recall": float(np.mean([r.get("recall", float(r["correct"])) for r in rs])),
                "thinking_tokens": float(np.mean([r["thinking_tokens"] for r in rs])),
                "n_seeds": len(rs),
            }
            for i, rs in items.items()
        }
    return out


def _seed_accuracies(preds: list[dict], arm: str, budget_id: str) -> list[float]:
    per_seed: dict[int, list[bool]] = defaultdict(list)
    for p in preds:
        a = arm_of(p["model"])
        if a and a[0] == arm and p["budget_id"] == budget_id:
            per_seed[a[1]].append(bool(p["correct"]))
    return [float(np.mean(v)) for _, v in sorted(per_seed.items())]


def _summary(cell: dict[str, dict], ids: list[str], metric: str, *key: str) -> dict[str, Any]:
    values = np.array([cell[i][metric] for i in ids])
    return {
        "n": len(ids),
        "mean": float(values.mean()),
        "ci95": list(bootstrap_mean_ci(values, 1000, _rng(*key))),
    }


def _paired(a: dict[str, dict], b: dict[str, dict], ids: list[str], metric: str, *key: str) -> dict[str, Any]:
    diff = np.array([a[i][metric] - b[i][metric] for i in ids])
    draws = _rng(*key).integers(0, len(diff), size=(1000, len(diff)))
    lo, hi = np.percentile(diff[draws].mean(axis=1), [2.5, 97.5])
    p = wilcoxon_p(diff)
    return {"n": len(ids), "diff": float(diff.mean()), "ci95": [float(lo), float(hi)], "wilcoxon_p": p}


def _by_type(cell: dict[str, dict], ids: list[str], *key: str) -> dict[str, Any]:
    """Accuracy per question type (content_type), every kind together as in the overall accuracy."""
    types = sorted({cell[i]["content_type"] for i in ids} - {""})
    return {t: _summary(cell, [i for i in ids if cell[i]["content_type"] == t], "correct", *key, t)
            for t in types}


def _paired_by_type(a: dict[str, dict], b: dict[str, dict], ids: list[str], *key: str) -> dict[str, Any]:
    types = sorted({a[i]["content_type"] for i in ids} - {""})
    return {t: _paired(a, b, [i for i in ids if a[i]["content_type"] == t], "correct", *key, t)
            for t in types}


def study_metrics(preds: list[dict], arms: list[str]) -> dict[str, Any]:
    cells = per_item(preds)
    budgets = {p["budget_id"]: p["budget"] for p in preds}
    forced = sorted((b for b in budgets if b != UNFORCED), key=lambda b: budget_sort_key(budgets[b]))
    rows, comparisons = [], []
    for arm in [BASE, *arms]:
        for b in forced:
            cell = cells.get((arm, b))
            if cell is None:
                continue
            ids = sorted(cell)
            row = {
                "arm": arm,
                "budget_id": b,
                "budget": budgets[b],
                "n_items": len(ids),
                "accuracy": _summary(cell, ids, "correct", arm, b),
                "mean_thinking_tokens": float(np.mean([cell[i]["thinking_tokens"] for i in ids])),
                "seed_accuracies": _seed_accuracies(preds, arm, b) if arm != BASE else [],
                "by_kind": {},
                "by_content_type": _by_type(cell, ids, arm, b),
            }
            for kind in ("mcq", "closed", "open"):
                kind_ids = [i for i in ids if cell[i]["kind"] == kind]
                if kind_ids:
                    row["by_kind"][kind] = {
                        "metric": "recall" if kind == "open" else "accuracy",
                        **_summary(cell, kind_ids, KIND_METRIC[kind], arm, b, kind),
                    }
            rows.append(row)
            if arm == BASE:
                continue
            others = [
                ("random", cells.get(("random", b))),
                (BASE, cells.get((BASE, b))),
                (BASE_AS_USED, cells.get((BASE_AS_USED, UNFORCED))),
            ]
            for other, other_cell in others:
                if other == arm or other_cell is None:
                    continue
                shared = sorted(set(ids) & set(other_cell))
                comp = {
                    "arm": arm,
                    "against": other,
                    "budget_id": b,
                    "accuracy": _paired(cell, other_cell, shared, "correct", arm, other, b),
                    "by_kind": {},
                    "by_content_type": _paired_by_type(cell, other_cell, shared, arm, other, b),
                }
                for kind in ("mcq", "closed", "open"):
                    kind_ids = [i for i in shared if cell[i]["kind"] == kind]
                    if kind_ids:
                        comp["by_kind"][kind] = _paired(
                            cell, other_cell, kind_ids, KIND_METRIC[kind], arm, other, b, kind
                        )
                comparisons.append(comp)
    as_used = cells.get((BASE_AS_USED, UNFORCED))
    base_as_used = None
    if as_used:
        ids = sorted(as_used)
        base_as_used = {
            "accuracy": _summary(as_used, ids, "correct", BASE_AS_USED),
            "by_kind": {
                k: _summary(
                    as_used, [i for i in ids if as_used[i]["kind"] == k], KIND_METRIC[k], BASE_AS_USED, k
                )
                for k in ("mcq", "closed", "open")
                if any(as_used[i]["kind"] == k for i in ids)
            },
            "by_content_type": _by_type(as_used, ids, BASE_AS_USED),
        }
    return {
        "arms": arms,
        "budget_ids": forced,
        "rows": rows,
        "comparisons": comparisons,
        "base_as_used": base_as_used,
    }


# ------------------------------------------------------------------------------------------------ tables
def _fmt(summary: dict | None) -> str:
    return "–" if summary is None else fmt_acc(summary["mean"], summary["ci95"])


def table_rows(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    kinds = [k for k in ("mcq", "closed", "open") if any(k in r["by_kind"] for r in metrics["rows"])]
    header = [
        "arm",
        "budget",
        "accuracy [95% CI]",
        "seeds (min–max)",
        *[f"{k} {'recall' if k == 'open' else 'accuracy'}" for k in kinds],
        "thinking tokens",
    ]
    rows = []
    for r in metrics["rows"]:
        seeds = r["seed_accuracies"]
        spread = f"{len(seeds)}: {min(seeds):.3f}–{max(seeds):.3f}" if seeds else "–"
        rows.append(
            [
                r["arm"],
                r["budget_id"],
                _fmt(r["accuracy"]),
                spread,
                *[_fmt(r["by_kind"].get(k)) for k in kinds],
                f"{r['mean_thinking_tokens']:.1f}",
            ]
        )
    used = metrics.get("base_as_used")
    if used:
        rows.append(
            [
                BASE_AS_USED,
                UNFORCED,
                _fmt(used["accuracy"]),
                "–",
                *[_fmt(used["by_kind"].get(k)) for k in kinds],
                "–",
            ]
        )
    return header, rows


def type_rows(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Accuracy per question type: every arm at every budget point, and the base as it is used."""
    used = metrics.get("base_as_used") or {}
    rows_in = [*metrics["rows"], *([{"arm": BASE_AS_USED, "budget_id": UNFORCED, **used}] if used else [])]
    types = sorted({t for r in rows_in for t in r.get("by_content_type", {})})
    rows = [[r["arm"], r["budget_id"], *[_fmt(r["by_content_type"].get(t)) for t in types]] for r in rows_in]
    return ["arm", "budget", *types], rows


def type_comparison_rows(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Paired differences per question type against random and the base as it is used (the forced base is
    in the per-kind table)."""
    comps = [c for c in metrics["comparisons"] if c["against"] != BASE]
    types = sorted({t for c in comps for t in c.get("by_content_type", {})})
    rows = [[c["arm"], c["against"], c["budget_id"],
             *[fmt_diff(c["by_content_type"][t]["diff"], c["by_content_type"][t]["ci95"])
               if t in c["by_content_type"] else "–" for t in types]] for c in comps]
    return ["arm", "against", "budget", *[f"Δ {t}" for t in types]], rows


def comparison_rows(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    kinds = [k for k in ("mcq", "closed", "open") if any(k in c["by_kind"] for c in metrics["comparisons"])]
    header = [
        "arm",
        "against",
        "budget",
        "Δ accuracy [95% CI]",
        "Wilcoxon p",
        *[f"Δ {k} {'recall' if k == 'open' else 'accuracy'}" for k in kinds],
    ]
    rows = []
    for c in metrics["comparisons"]:
        a = c["accuracy"]
        rows.append(
            [
                c["arm"],
                c["against"],
                c["budget_id"],
                fmt_diff(a["diff"], a["ci95"]),
                f"{a['wilcoxon_p']:.3g}",
                *[
                    fmt_diff(c["by_kind"][k]["diff"], c["by_kind"][k]["ci95"]) if k in c["by_kind"] else "–"
                    for k in kinds
                ],
            ]
        )
    return header, rows


def verdict_lines(metrics: dict[str, Any]) -> list[str]:
    """One plain sentence per comparison at each arm's best budget point: wins, loses, or within noise (the
    paired interval holds 0), so a loss is said as plainly as a win."""
    lines = []
    arms = [a for a in metrics["arms"] if a != "random"] + [a for a in metrics["arms"] if a == "random"]
    for arm in arms:
        rows = [r for r in metrics["rows"] if r["arm"] == arm]
        if not rows:
            continue
        best = max(rows, key=lambda r: r["accuracy"]["mean"])
        for c in metrics["comparisons"]:
            if c["arm"] != arm or c["budget_id"] != best["budget_id"]:
                continue
            a = c["accuracy"]
            lo, hi = a["ci95"]
            word = "beats" if lo > 0 else "loses to" if hi < 0 else "is within noise of"
            point = f"{best['budget_id']}: {best['accuracy']['mean']:.3f}"
            lines.append(f"{arm} (at its best point, {point}) {word} {c['against']}: "
                         f"{fmt_diff(a['diff'], a['ci95'])}, Wilcoxon p = {a['wilcoxon_p']:.2g}")
    return lines


def funnel_rows(pool_funnel: list[dict], funnels: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    pool = " → ".join(f"{f['stage']} {f['n_out']}" for f in pool_funnel)
    rows = []
    for arm, f in funnels.items():
        left = ", ".join(f"{r} {n}" for r, n in sorted(f.get("drop_reasons", {}).items())) or "–"
        rows.append(
            [arm, pool, str(f["n_in"]), str(f["metrics"].get("after_hard", f["n_in"])), str(f["n_out"]), left]
        )
    return ["arm", "pool (shared)", "correct traces", "after hard", "selected", "left out"], rows


def format_study(study: dict[str, Any], width: int = 160) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False)
    console.print(_rich(*funnel_rows(study["pool_funnel"], study["funnels"]), "Selection funnel per arm"))
    console.print(_rich(*table_rows(study["metrics"]), "Accuracy per arm and budget (mean over seeds)"))
    console.print(_rich(*comparison_rows(study["metrics"]), "Paired: each arm against random and the base"))
    console.print(_rich(*type_rows(study["metrics"]), "Accuracy per question type (mean over seeds)"))
    console.print(_rich(*type_comparison_rows(study["metrics"]), "Paired per question type"))
    console.print("Verdict:\n" + "\n".join(f"  {line}" for line in verdict_lines(study["metrics"])))
    return buf.getvalue()


def report_markdown(study: dict[str, Any], plot: str) -> str:
    return (
        "\n\n".join(
            [
                f"# Selection study `{study['name']}`\n\n{study['n']} items per arm "
                "(`all`: every correct trace), "
                f"seeds {study['seeds']}, {study['n_eval_items']} held-out items. "
                + __doc__.split("\n\n", 1)[1].strip(),
                "## Selection funnel",
                _markdown(*funnel_rows(study["pool_funnel"], study["funnels"])),
                "## Verdict\n\n" + "\n".join(f"- {line}" for line in verdict_lines(study["metrics"])),
                "## Accuracy per arm and budget",
                _markdown(*table_rows(study["metrics"])),
                "## Paired comparisons",
                _markdown(*comparison_rows(study["metrics"])),
                "## Accuracy per question type",
                _markdown(*type_rows(study["metrics"])),
                "## Paired per question type",
                _markdown(*type_comparison_rows(study["metrics"])),
                f"## Budget scaling\n\n![{plot}]({plot})",
            ]
        )
        + "\n"
    )


def plot_study(metrics: dict[str, Any], path: Path) -> Path:
    from mvqa.eval.plots import plot_accuracy_vs_thinking

    runs = [
        {
            "model": r["arm"],
            "budget_id": r["budget_id"],
            "budget": r["budget"],
            "accuracy": r["accuracy"]["mean"],
            "ci95": r["accuracy"]["ci95"],
            "mean_thinking_tokens": r["mean_thinking_tokens"],
        }
        for r in metrics["rows"]
    ]
    return plot_accuracy_vs_thinking(
        {"runs": runs, "models": [BASE, *metrics["arms"]]},
        path,
        title="Selection study: accuracy vs thinking tokens (mean over seeds)",
    )


def write_study_report(cfg, study_dir: Path, pool: Path, funnels: dict[str, dict], eval_dir: Path) -> dict:
    preds = [json.loads(line) for line in (eval_dir / "predictions.jsonl").read_text().splitlines() if line]
    arms = list(cfg.study.run)
    metrics = study_metrics(preds, arms)
    pool_funnel = json.loads((pool / "summary.json").read_text())["funnel"]
    study = {
        "name": cfg.study.name,
        "n": cfg.study.n,
        "seeds": list(cfg.study.seeds),
        "arms": arms,
        "n_eval_items": len({p["item_id"] for p in preds}),
        "pool_funnel": pool_funnel,
        "funnels": funnels,
        "metrics": metrics,
    }
    plot = plot_study(metrics, study_dir / "study_acc_vs_thinking.png")
    write_json(study, study_dir / "study.json")
    with atomic_path(study_dir / "study_report.md") as tmp:
        tmp.write_text(report_markdown(study, plot.name), encoding="utf-8")
    print(format_study(study), end="")
    print(f"report: {study_dir / 'study_report.md'}\nplot: {plot}")
    log_study(cfg, study_dir, study, plot)
    return study


def log_study(cfg, study_dir: Path, study: dict, plot: Path) -> None:
    """The summary run of the study's W&B group: the table and the plot, so the dashboard shows the
    ablation."""
    from omegaconf import OmegaConf

    from mvqa.tracking import finish_run, start_run

    cfg = OmegaConf.merge(cfg, {"logger": {"group": f"study-{cfg.study.name}"}})
    run = start_run(cfg, "study", study_dir)
    if run is None:
        return
    try:
        import wandb

        header, rows = table_rows(study["metrics"])
        comp_header, comp_rows = comparison_rows(study["metrics"])
        run.log(
            {
                "study/accuracy": wandb.Table(columns=header, data=rows),
                "study/paired": wandb.Table(columns=comp_header, data=comp_rows),
                "study/acc_vs_thinking": wandb.Image(str(plot)),
            }
        )
        for r in study["metrics"]["rows"]:
            run.summary[f"{r['arm']}/{r['budget_id']}/accuracy"] = r["accuracy"]["mean"]
    finally:
        finish_run(run)
    (study_dir / "wandb_group.txt").write_text(f"study-{cfg.study.name}\n")
