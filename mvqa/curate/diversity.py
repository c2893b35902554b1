"""How diverse a curated set is, side by side with the set it was drawn from.

All distances are cosine distances in the seed's feature space: TF-IDF of the question text (512 features)
plus TF-IDF of the figure path x 0.25, rows L2-normalised, fit on the whole input. Figures per set: size,
distinct questions and images, label / modality histograms, and
- spread: the mean pairwise cosine distance (exact for any size: with unit rows x_i,
  sum_{i != j} x_i.x_j = |sum_i x_i|^2 - sum_i |x_i|^2, so no pair loop or subsample); higher is wider;
- coverage: the mean over ALL input rows of 1 - the cosine similarity to the nearest picked row; lower is
  better (the input covers itself: 0);
- outliers: rows whose nearest-neighbour distance within the input is in the input's top 5%; for the
  output, how many picks are such rows. Past OUTLIER_EXACT_ROWS input rows the 95th percentile is
  estimated from a seeded sample of that many rows (the picks' own distances stay exact);
- spread_minus_coverage: the two in one figure (higher is better), what hparams_search=sampler_optuna
  maximises.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from mvqa.data.records import VQAItem
from mvqa.data.storage import atomic_path, write_json

SPACE = ("the seed's: question text TF-IDF (512 features) + figure path TF-IDF x 0.25, rows L2-normalised, "
         "fit on the input; cosine distance")
OUTLIER_SHARE = 0.05
OUTLIER_EXACT_ROWS = 20000


def seed_space(items: list[VQAItem]) -> sp.csr_matrix:
    """The seed's feature space, fit on `items` (float32 CSR, unit rows)."""
    questions = TfidfVectorizer(max_features=512,
                                dtype=np.float32).fit_transform([it.question for it in items])
    images = TfidfVectorizer(dtype=np.float32).fit_transform([it.image for it in items]).multiply(0.25)
    return normalize(sp.hstack([questions, images]).tocsr())


def nearest_similarity(X: sp.csr_matrix, P: sp.csr_matrix, chunk: int = 4096) -> np.ndarray:
    """For every row of X, the highest cosine similarity to a row of P (unit rows both; 0 when P is empty).
    Only the feature columns P uses matter, so P becomes a small dense block."""
    if P.shape[0] == 0:
        return np.zeros(X.shape[0])
    used = np.unique(P.indices)
    block = P[:, used].T.toarray()
    Xu = X[:, used].tocsr()
    best = np.empty(X.shape[0])
    for start in range(0, X.shape[0], chunk):
        best[start:start + chunk] = np.asarray(Xu[start:start + chunk] @ block).max(axis=1)
    return best


def coverage(X: sp.csr_matrix, picks: np.ndarray) -> float:
    """Mean over all rows of X of 1 - cosine similarity to the nearest picked row."""
    return float(np.mean(1.0 - nearest_similarity(X, X[np.asarray(picks, dtype=int)])))


def nearest_neighbour_distance(X: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """Cosine distance from each of `rows` to its nearest other row of X (a duplicate row counts: 0)."""
    rows = np.asarray(rows, dtype=int)
    return np.concatenate(
        [1.0 - _best_other(X, rows[start:start + 2048]) for start in range(0, len(rows), 2048)]
        or [np.zeros(0)])


def _best_other(X: sp.csr_matrix, part: np.ndarray) -> np.ndarray:
    """For each row index in `part`, its highest cosine similarity to any other row of X."""
    P = X[part]
    used = np.unique(P.indices)
    block = P[:, used].T.toarray()  # features x len(part)
    Xu = X[:, used].tocsr()
    best = np.full(len(part), -np.inf)
    cols = np.arange(len(part))
    for start in range(0, X.shape[0], 8192):
        S = np.asarray(Xu[start:start + 8192] @ block)  # rows x part
        inside = (part >= start) & (part < start + S.shape[0])
        S[part[inside] - start, cols[inside]] = -np.inf
        np.maximum(best, S.max(axis=0), out=best)
    return np.maximum(best, 0.0) if X.shape[0] > 1 else np.zeros(len(part))


def outlier_figures(X: sp.csr_matrix, picks: np.ndarray, seed: int = 0) -> tuple[dict, dict]:
    """(input figures, output figures) about outliers: rows whose nearest-neighbour distance within the input
    is in its top OUTLIER_SHARE."""
    n = X.shape[0]
    exact = n <= OUTLIER_EXACT_ROWS
    sample = np.arange(n) if exact else np.sort(np.random.default_rng(seed).choice(n, OUTLIER_EXACT_ROWS,
                                                                                   replace=False))
    nn_sample = nearest_neighbour_distance(X, sample)
    threshold = float(np.quantile(nn_sample, 1.0 - OUTLIER_SHARE))
    picks = np.asarray(picks, dtype=int)
    nn_picks = nn_sample[picks] if exact else nearest_neighbour_distance(X, picks)
    # Strictly above the 95th percentile, so a pool of equidistant rows has no outliers.
    n_in = int((nn_sample > threshold).sum()) if exact else round((nn_sample > threshold).mean() * n)
    how = "all rows" if exact else f"{OUTLIER_EXACT_ROWS} sampled rows (seed {seed})"
    return ({"outliers": n_in, "outlier_threshold": round(threshold, 4), "outlier_threshold_from": how},
            {"outliers": int((nn_picks > threshold).sum())})


def mean_pairwise_cosine_distance(X) -> float | None:
    """Mean over ordered pairs i != j of 1 - cos(x_i, x_j), rows of X already L2-normalised (an all-zero row
    counts as similarity 0 to everything). None for fewer than two rows (JSON has no NaN)."""
    n = X.shape[0]
    if n < 2:
        return None
    total = np.asarray(X.sum(axis=0)).ravel()
    self_sim = float(X.multiply(X).sum()) if hasattr(X, "multiply") else float((X * X).sum())
    return 1.0 - (float(total @ total) - self_sim) / (n * (n - 1))


def _histogram(values) -> dict[str, int]:
    return dict(sorted(collections.Counter(values).items()))


def set_figures(items: list[VQAItem], X) -> dict[str, Any]:
    return {
        "n": len(items),
        "distinct_questions": len({it.question.strip() for it in items}),
        "distinct_images": len({it.image for it in items}),
        "mean_pairwise_cosine_distance": mean_pairwise_cosine_distance(X) if items else None,
        "labels": _histogram(it.answer_label or "open" for it in items),
        "modalities": _histogram(it.modality or "unknown" for it in items),
    }


def pick_rows(inputs: list[VQAItem], outputs: list[VQAItem]) -> np.ndarray:
    """Row of each output item in the input, by id."""
    where = {it.id: i for i, it in enumerate(inputs)}
    if len(where) != len(inputs):
        raise ValueError("diversity_report: input item ids repeat; cannot tell which rows were picked")
    missing = [it.id for it in outputs if it.id not in where]
    if missing:
        raise ValueError(f"diversity_report: output item(s) {missing[:3]} are not in the input")
    return np.asarray([where[it.id] for it in outputs], dtype=int)


def diversity_report(inputs: list[VQAItem], outputs: list[VQAItem],
                     clusters: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"space": ..., "input": figures, "output": figures[, "clusters": cluster-size balance]}. Spread is
    `mean_pairwise_cosine_distance`; the input's coverage is 0 by definition (it covers itself)."""
    if not inputs:
        raise ValueError("diversity_report: the input set is empty")
    X = seed_space(inputs)
    picks = pick_rows(inputs, outputs)
    inp, out = set_figures(inputs, X), set_figures(outputs, X[picks])
    inp["coverage"], out["coverage"] = 0.0, coverage(X, picks) if len(picks) else None
    # The combined objective hparams_search=sampler_optuna maximises (cover_spread's own, with weight 1).
    for figures in (inp, out):
        spread, cover = figures["mean_pairwise_cosine_distance"], figures["coverage"]
        figures["spread_minus_coverage"] = None if spread is None or cover is None else spread - cover
    inp_outliers, out_outliers = outlier_figures(X, picks)
    inp.update(inp_outliers)
    out.update(out_outliers)
    report = {"space": SPACE, "input": inp, "output": out}
    if clusters:
        report["clusters"] = clusters
    return report


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "n/a" if value is None else str(value)


def report_markdown(report: dict[str, Any]) -> str:
    inp, out = report["input"], report["output"]
    rows = [("items", "n"), ("distinct questions", "distinct_questions"),
            ("distinct images", "distinct_images"),
            ("spread: mean pairwise cosine distance (higher: wider)", "mean_pairwise_cosine_distance"),
            ("coverage: mean distance of an input row to its nearest pick (lower: better)", "coverage"),
            ("outliers: nearest-neighbour distance in the input's top 5%", "outliers")]
    lines = ["# Diversity report", "", f"Distance space: {report['space']}.", "", "| | input | output |",
             "|---|---:|---:|"]
    lines += [f"| {label} | {_cell(inp.get(key))} | {_cell(out.get(key))} |" for label, key in rows]
    if "outlier_threshold" in inp:
        lines += ["", (f"Outlier threshold: nearest-neighbour distance > {inp['outlier_threshold']} "
                       f"(95th percentile over {inp['outlier_threshold_from']}).")]
    if report.get("clusters"):
        c = report["clusters"]
        lines += ["", "## Cluster sizes", "", "| clusters | min | median | max | singletons | cv |",
                  "|---:|---:|---:|---:|---:|---:|",
                  "| " + " | ".join(str(c[k]) for k in ("count", "min", "median", "max", "singletons", "cv"))
                  + " |"]
    for title, key in (("Answer labels", "labels"), ("Modalities", "modalities")):
        lines += ["", f"## {title}", "", "| | input | output |", "|---|---:|---:|"]
        lines += [f"| {k} | {inp[key].get(k, 0)} | {out[key].get(k, 0)} |"
                  for k in sorted(set(inp[key]) | set(out[key]))]
    return "\n".join(lines) + "\n"


def write_diversity_report(report: dict[str, Any], out_dir: str | Path,
                           name: str = "diversity") -> tuple[Path, Path]:
    """`<name>.json` and `<name>.md` in out_dir, each written atomically."""
    out_dir = Path(out_dir)
    json_path = write_json(report, out_dir / f"{name}.json")
    md_path = out_dir / f"{name}.md"
    with atomic_path(md_path) as tmp:
        tmp.write_text(report_markdown(report), encoding="utf-8")
    return json_path, md_path
