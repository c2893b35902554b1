"""Evaluation metrics over prediction records: accuracy with bootstrap intervals, breakdowns, s1's
test-time-scaling metrics and paired comparisons of each model against the base (m1: report flips).

A prediction record is one item x model x budget point (a plain dict, written by the evaluation runner):
model, budget_id, budget {max_thinking_tokens, min_thinking_tokens, num_waits, wait_string}, item_id,
modality, content_type, answer_label, raw_output, thinking, parsed_answer, parse_status ("ok" |
"unparseable"), correct, thinking_tokens, waits_used, forced_end; and per question kind (mvqa.data.grading)
kind ("mcq" | "closed" | "open"), exact_match, recall and f1 (a record without them is an mcq one: recall = f1
= correct).

Per kind, the field's metrics: mcq and closed accuracy; open normalised exact match (its `accuracy`), token
recall (LLaVA-Med's open-set recall) and token F1. Each has a bootstrap interval, in every cell (model x
budget point) and split by kind, content type and modality; each paired comparison carries the same splits.

The result of `compute_metrics` is plain JSON (it is written as `metrics.json`): undefined values are None.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy.stats import binomtest

REQUIRED_KEYS = ("model", "budget_id", "budget", "item_id", "parse_status", "correct", "thinking_tokens",
                 "waits_used", "forced_end")
PARSE_STATUSES = ("ok", "unparseable")
BREAKDOWNS = {"by_kind": "kind", "by_modality": "modality", "by_content_type": "content_type",
              "by_answer_label": "answer_label"}
PAIRED_BREAKDOWNS = {"by_kind": "kind", "by_modality": "modality", "by_content_type": "content_type"}
KIND_ORDER = ("mcq", "closed", "open")
UNKNOWN = "unknown"  # the breakdown key for a record without modality / content type / label


UNFORCED = "unforced"  # the budget_id of a plain run without budget forcing


def compute_metrics(predictions: Iterable[Mapping[str, Any]], n_bootstrap: int = 1000, seed: int = 0,
                    base_model: str | None = None) -> dict[str, Any]:
    """Metrics per (model, budget point), s1 scaling metrics per model, and each model vs the base.

    `base_model` defaults to the model labelled "base" if present, else the first model seen. Deterministic
    for a given seed (each cell draws from its own seed, so adding a model changes nothing else). """
    preds = [_checked(p, i) for i, p in enumerate(predictions)]
    if not preds:
        raise ValueError("compute_metrics: no prediction records")
    models = list(dict.fromkeys(p["model"] for p in preds))
    base = base_model if base_model is not None else ("base" if "base" in models else models[0])
    if base not in models:
        raise ValueError(f"compute_metrics: base_model={base!r} has no predictions; models are {models}")
    models.remove(base)
    models.insert(0, base)

    budgets = _budgets(preds)
    cells: dict[tuple[str, str], list[dict]] = {}
    for p in preds:
        cells.setdefault((p["model"], p["budget_id"]), []).append(p)
    seen: set[tuple[str, str, str]] = set()
    for p in preds:
        key = (p["model"], p["budget_id"], str(p["item_id"]))
        if key in seen:
            raise ValueError(f"compute_metrics: item {key[2]!r} appears twice for model {key[0]!r} at "
                             f"budget {key[1]!r}")
        seen.add(key)

    order = sorted(budgets, key=lambda b: budget_sort_key(budgets[b]))
    runs = [_cell_metrics(m, b, budgets[b], cells[m, b], n_bootstrap, seed)
            for m in models for b in order if (m, b) in cells]
    # s1's metrics describe the budget curve: a model's unforced run is no point on it (unless it is all
    # it has).
    scaling = {m: _scaling_metrics([r for r in runs if r["model"] == m and r["budget_id"] != UNFORCED]
                                   or [r for r in runs if r["model"] == m], cells, m) for m in models}
    comparisons, warnings = [], []
    # Each model is paired with the base at the same budget point (s1's protocol) and, when the base also ran
    # unforced (as it is used), with that run at every budget point.
    for m in models[1:]:
        pairs = [(b, b) for b in order if (m, b) in cells and (base, b) in cells]
        if (base, UNFORCED) in cells:
            pairs += [(b, UNFORCED) for b in order if (m, b) in cells and b != UNFORCED]
        if not pairs:
            warnings.append(f"model {m!r} shares no budget point with base {base!r}: no paired comparison")
        comparisons += [_paired(base, m, b, base_b, cells, n_bootstrap, seed) for b, base_b in pairs]
    return {"base_model": base, "models": models, "budget_ids": order, "n_predictions": len(preds),
            "n_bootstrap": n_bootstrap, "seed": seed, "runs": runs, "scaling": scaling,
            "comparisons": comparisons, "warnings": warnings}


def budget_sort_key(budget: Mapping[str, Any]) -> tuple:
    """Smaller thinking budgets first; an uncapped budget (max None) last."""
    cap = budget.get("max_thinking_tokens")
    return (cap is None, cap or 0, budget.get("min_thinking_tokens") or 0, budget.get("num_waits") or 0,
            str(budget.get("wait_string") or ""))


def bootstrap_accuracy_ci(correct: np.ndarray, n_bootstrap: int, rng: np.random.Generator) -> tuple[float,
                                                                                                    float]:
    """Percentile 95% interval of the mean of 0/1 outcomes.

    Resampling n outcomes with replacement draws Binomial(n, accuracy) successes, so that is sampled directly:
    the same distribution as index resampling, at O(n_bootstrap) instead of O(n_bootstrap * n).
    """
    n = len(correct)
    means = rng.binomial(n, correct.mean(), size=n_bootstrap) / n
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def paired_bootstrap_diff_ci(base: np.ndarray, other: np.ndarray, n_bootstrap: int,
                             rng: np.random.Generator) -> tuple[float, float]:
    """Percentile 95% interval of mean(other) - mean(base) over resampled items (pairs kept together).

    A resample of pairs is a multinomial draw over the four (base, other) outcome cells, sampled directly.
    """
    n = len(base)
    cells = np.array(
        [np.sum(base & ~other), np.sum(~base & other), np.sum(base & other), np.sum(~base & ~other)])
    draws = rng.multinomial(n, cells / n, size=n_bootstrap)
    diffs = (draws[:, 1] - draws[:, 0]) / n
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(lo), float(hi)


def mcnemar_exact_p(right_to_wrong: int, wrong_to_right: int) -> float:
    """Two-sided exact McNemar test: a binomial test of the discordant pairs against 1/2."""
    n = right_to_wrong + wrong_to_right
    return 1.0 if n == 0 else float(binomtest(wrong_to_right, n, 0.5).pvalue)


def s1_scaling(points: list[tuple[float, float]]) -> float | None:
    """s1's Scaling: the mean over all pairs a < b of (acc(b) - acc(a)) / (b - a), x = mean thinking tokens.

    Pairs with equal x have no slope and are left out; None when no pair is left.
    """
    slopes = [(yb - ya) / (xb - xa) for (xa, ya),
              (xb, yb) in itertools.combinations(sorted(points), 2) if xb > xa]
    return float(np.mean(slopes)) if slopes else None


def _rng(seed: int, *key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32("\x1f".join(key).encode())])


def _checked(p: Mapping[str, Any], index: int) -> dict[str, Any]:
    where = f"prediction #{index} (item_id={p.get('item_id')!r}, model={p.get('model')!r})"
    missing = [k for k in REQUIRED_KEYS if k not in p]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}")
    if p["parse_status"] not in PARSE_STATUSES:
        raise ValueError(f"{where}: parse_status {p['parse_status']!r}, expected one of {PARSE_STATUSES}")
    if not isinstance(p["correct"], (bool, np.bool_)):
        raise TypeError(f"{where}: correct must be a bool, got {p['correct']!r}")
    if p["correct"] and p["parse_status"] == "unparseable":
        raise ValueError(f"{where}: marked correct but unparseable (an unparseable answer counts as wrong)")
    if not isinstance(p["budget"], Mapping):
        raise TypeError(f"{where}: budget must be a dict of max/min thinking tokens, num_waits, wait_string")
    for k in ("thinking_tokens", "waits_used"):
        if not isinstance(p[k], (int, np.integer)) or isinstance(p[k], bool) or p[k] < 0:
            raise ValueError(f"{where}: {k} must be a non-negative int, got {p[k]!r}")
    out = dict(p)
    out.setdefault("kind", "mcq")
    if out["kind"] not in KIND_ORDER:
        raise ValueError(f"{where}: kind {out['kind']!r}, expected one of {KIND_ORDER}")
    for k in ("recall", "f1"):
        value = float(out.get(k, float(bool(out["correct"]))))
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{where}: {k} must be within [0, 1], got {value!r}")
        out[k] = value
    out.setdefault("exact_match", bool(out["correct"]))
    return out


def _budgets(preds: list[dict]) -> dict[str, dict]:
    budgets: dict[str, dict] = {}
    for p in preds:
        b = dict(p["budget"])
        if budgets.setdefault(p["budget_id"], b) != b:
            raise ValueError(
                f"budget_id {p['budget_id']!r} names two budgets: {budgets[p['budget_id']]} and {b} "
                f"(item {p['item_id']!r}, model {p['model']!r})")
    return budgets


def _within_budget(p: dict) -> bool:
    """s1's Control criterion for one run: min <= thinking tokens <= max (an absent bound does not bind)."""
    b = p["budget"]
    cap, floor = b.get("max_thinking_tokens"), b.get("min_thinking_tokens") or 0
    return floor <= p["thinking_tokens"] and (cap is None or p["thinking_tokens"] <= cap)


def _groups(rows: list[dict], field: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for p in rows:
        value = p.get(field)
        groups.setdefault(UNKNOWN if value in (None, "") else str(value), []).append(p)
    order = list(KIND_ORDER) if field == "kind" else []
    return dict(
        sorted(groups.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])))


def bootstrap_mean_ci(values: np.ndarray, n_bootstrap: int, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile 95% interval of the mean of values in [0, 1] (recall, F1) by resampling items."""
    draws = rng.integers(0, len(values), size=(n_bootstrap, len(values)))
    lo, hi = np.percentile(values[draws].mean(axis=1), [2.5, 97.5])
    return float(lo), float(hi)


def _group_metrics(rows: list[dict], n_bootstrap: int, rng: np.random.Generator) -> dict[str, Any]:
    """n and accuracy with its interval; where open items are present, exact match, recall and F1 over
    them."""
    correct = np.array([bool(p["correct"]) for p in rows])
    out: dict[str, Any] = {"n": len(rows), "accuracy": float(correct.mean()),
                           "ci95": list(bootstrap_accuracy_ci(correct, n_bootstrap, rng))}
    open_rows = [p for p in rows if p["kind"] == "open"]
    if open_rows:
        em = np.array([bool(p["exact_match"]) for p in open_rows])
        out["open"] = {"n": len(open_rows), "exact_match": float(em.mean()),
                       "exact_match_ci95": list(bootstrap_accuracy_ci(em, n_bootstrap, rng))}
        for key in ("recall", "f1"):
            values = np.array([p[key] for p in open_rows])
            out["open"][key] = float(values.mean())
            out["open"][f"{key}_ci95"] = list(bootstrap_mean_ci(values, n_bootstrap, rng))
    return out


def _accuracy_by(rows: list[dict], field: str, n_bootstrap: int, rng: np.random.Generator) -> dict[str, dict]:
    return {k: _group_metrics(v, n_bootstrap, rng) for k, v in _groups(rows, field).items()}


def _cell_metrics(model: str, budget_id: str, budget: dict, rows: list[dict], n_bootstrap: int,
                  seed: int) -> dict[str, Any]:
    correct = np.array([bool(p["correct"]) for p in rows])
    unparseable = sum(p["parse_status"] == "unparseable" for p in rows)
    lo, hi = bootstrap_accuracy_ci(correct, n_bootstrap, _rng(seed, "acc", model, budget_id))
    return {
        "model": model, "budget_id": budget_id, "budget": budget, "n": len(rows),
        "n_correct": int(correct.sum()), "accuracy": float(correct.mean()), "ci95": [lo, hi],
        **{name: _accuracy_by(rows, field, n_bootstrap, _rng(seed, name, model, budget_id))
           for name, field in BREAKDOWNS.items()},
        "n_unparseable": int(unparseable), "parse_failure_rate": unparseable / len(rows),
        "mean_thinking_tokens": float(np.mean([p["thinking_tokens"] for p in rows])),
        "mean_waits_used": float(np.mean([p["waits_used"] for p in rows])),
        "forced_share": float(np.mean([bool(p["forced_end"]) for p in rows])),
        "within_budget_share": float(np.mean([_within_budget(p) for p in rows])),
    }


def series_id(budget: Mapping[str, Any]) -> str:
    """The wait setting a budget point belongs to; a series sweeps the thinking cap with it fixed."""
    min_thinking, waits = budget.get("min_thinking_tokens") or 0, budget.get("num_waits") or 0
    return f"min{min_thinking}_w{waits}_{budget.get('wait_string')}"


def _scaling_metrics(runs: list[dict], cells: dict, model: str) -> dict[str, Any]:
    rows = [p for r in runs for p in cells[model, r["budget_id"]]]
    best = max(runs, key=lambda r: r["accuracy"])  # first of equals: the smaller budget
    series: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        series.setdefault(series_id(r["budget"]), []).append((r["mean_thinking_tokens"], r["accuracy"]))
    return {
        "control": float(np.mean([_within_budget(p) for p in rows])),
        "scaling": s1_scaling([(r["mean_thinking_tokens"], r["accuracy"]) for r in runs]),
        # Over the whole grid, points with almost equal thinking tokens (e.g. several wait counts at a cap
        # the model always hits) give huge noisy slopes; per series the slope is that of one control knob.
        "scaling_by_series": {k: s1_scaling(v) for k, v in series.items()},
        "performance": best["accuracy"], "best_budget_id": best["budget_id"], "n_budget_points": len(runs),
    }


def _paired(base: str, model: str, budget_id: str, base_budget_id: str, cells: dict, n_bootstrap: int,
            seed: int) -> dict[str, Any]:
    base_rows, rows = cells[base, base_budget_id], cells[model, budget_id]
    base_by_item = {str(p["item_id"]): bool(p["correct"]) for p in base_rows}
    by_item = {str(p["item_id"]): bool(p["correct"]) for p in rows}
    items = sorted(base_by_item.keys() & by_item.keys())
    out = {"model": model, "base": base, "budget_id": budget_id, "base_budget_id": base_budget_id,
           "n_paired": len(items),
           "n_only_base": len(base_by_item.keys() - by_item.keys()),
           "n_only_model": len(by_item.keys() - base_by_item.keys())}
    if not items:
        return {**out, "accuracy_diff": None, "ci95": None, "mcnemar_p": None, "right_to_wrong": 0,
                "wrong_to_right": 0, "both_right": 0, "both_wrong": 0}
    rng = _rng(seed, "paired", base, model, budget_id)
    overall = _paired_accuracy(items, base_by_item, by_item, n_bootstrap, rng)
    base_rows_by_item = {str(p["item_id"]): p for p in base_rows}
    rows_by_item = {str(p["item_id"]): p for p in rows}
    splits = {}
    for name, field in PAIRED_BREAKDOWNS.items():
        groups = _groups([rows_by_item[i] for i in items], field)
        splits[name] = {}
        for key, group in groups.items():
            ids = [str(p["item_id"]) for p in group]
            cell = _paired_accuracy(ids, base_by_item, by_item, n_bootstrap, rng)
            if key == "open" or (field != "kind" and any(p["kind"] == "open" for p in group)):
                open_ids = [str(p["item_id"]) for p in group if p["kind"] == "open"]
                cell["open_recall"] = _paired_mean(
                    np.array([base_rows_by_item[i]["recall"] for i in open_ids]),
                    np.array([rows_by_item[i]["recall"] for i in open_ids]), n_bootstrap, rng)
            splits[name][key] = cell
    return {**out, **overall, **splits}


def _paired_accuracy(ids: list[str], base_by_item: dict[str, bool], by_item: dict[str, bool],
                     n_bootstrap: int,
                     rng: np.random.Generator) -> dict[str, Any]:
    a = np.array([base_by_item[i] for i in ids])
    b = np.array([by_item[i] for i in ids])
    right_to_wrong, wrong_to_right = int(np.sum(a & ~b)), int(np.sum(~a & b))
    lo, hi = paired_bootstrap_diff_ci(a, b, n_bootstrap, rng)
    return {"n": len(ids), "base_accuracy": float(a.mean()), "model_accuracy": float(b.mean()),
            "accuracy_diff": float(b.mean() - a.mean()), "ci95": [lo, hi],
            "mcnemar_p": mcnemar_exact_p(right_to_wrong, wrong_to_right),
            "right_to_wrong": right_to_wrong, "wrong_to_right": wrong_to_right,
            "both_right": int(np.sum(a & b)), "both_wrong": int(np.sum(~a & ~b))}


# scipy's wilcoxon falls back to a permutation test for 13 or fewer pairs with ties or zeros (paired 0/1
# correctness always has them) and computes its statistic once per sign pattern in Python: 1.4 s a call, 3 of
# the demo's 9 minutes went there. The same exact test, vectorised over the 2^m sign patterns.
EXACT_SIGN_FLIP_MAX = 13


def wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of paired differences (zeros dropped, midranks for ties), as
    scipy.stats.wilcoxon(diff) gives it; 1.0 when every pair is tied."""
    from scipy.stats import rankdata, wilcoxon

    diff = np.asarray(diff, dtype=float)
    nonzero = diff[diff != 0]
    if not len(nonzero):
        return 1.0
    ranks = rankdata(np.abs(nonzero))
    if len(diff) > EXACT_SIGN_FLIP_MAX or (len(nonzero) == len(diff) and len(np.unique(ranks)) == len(ranks)):
        return float(wilcoxon(diff).pvalue)  # scipy's own exact or normal-approximation test: fast
    observed = ranks[nonzero > 0].sum()
    # Every sign pattern of the nonzero pairs (a zero's sign changes nothing: each pattern counts alike).
    patterns = (np.arange(2 ** len(nonzero))[:, None] >> np.arange(len(nonzero))) & 1
    null = patterns @ ranks
    gamma = abs(observed) * np.finfo(float).eps * 100  # scipy's tolerance for a tie with the observed value
    less, greater = np.mean(null <= observed + gamma), np.mean(null >= observed - gamma)
    return float(min(1.0, 2 * min(less, greater)))


def _paired_mean(base: np.ndarray, other: np.ndarray, n_bootstrap: int,
                 rng: np.random.Generator) -> dict[str, Any]:
    """A continuous per-item score (open recall) paired: its mean difference, bootstrap interval and the
    two-sided Wilcoxon signed-rank p (1.0 when every pair is tied)."""
    diff = other - base
    draws = rng.integers(0, len(diff), size=(n_bootstrap, len(diff)))
    lo, hi = np.percentile(diff[draws].mean(axis=1), [2.5, 97.5])
    p = wilcoxon_p(diff)
    return {"n": len(diff), "base": float(base.mean()), "model": float(other.mean()),
            "diff": float(diff.mean()), "ci95": [float(lo), float(hi)], "wilcoxon_p": p}
