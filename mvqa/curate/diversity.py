"""How diverse a curated set is, side by side with the set it was drawn from.

Figures: size, distinct questions and images, mean pairwise cosine distance of the question texts in a
TF-IDF space fit on the input, and label / modality histograms. The mean pairwise distance is exact for any
size: with unit rows x_i, sum_{i != j} x_i.x_j = |sum_i x_i|^2 - sum_i |x_i|^2, so no pair loop or subsample.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from mvqa.data.records import VQAItem
from mvqa.data.storage import atomic_path, write_json

SPACE = "question text TF-IDF (default vocabulary, fit on the input), cosine distance"


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


def set_figures(items: list[VQAItem], vectorizer: TfidfVectorizer) -> dict[str, Any]:
    X = vectorizer.transform([it.question for it in items]) if items else None
    return {
        "n": len(items),
        "distinct_questions": len({it.question.strip() for it in items}),
        "distinct_images": len({it.image for it in items}),
        "mean_pairwise_cosine_distance": mean_pairwise_cosine_distance(X) if items else None,
        "labels": _histogram(it.answer_label or "open" for it in items),
        "modalities": _histogram(it.modality or "unknown" for it in items),
    }


def diversity_report(inputs: list[VQAItem], outputs: list[VQAItem]) -> dict[str, Any]:
    """{"space": ..., "input": figures, "output": figures}."""
    if not inputs:
        raise ValueError("diversity_report: the input set is empty")
    vectorizer = TfidfVectorizer().fit([it.question for it in inputs])
    return {"space": SPACE, "input": set_figures(inputs, vectorizer), "output": set_figures(outputs, vectorizer)}


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "n/a" if value is None else str(value)


def report_markdown(report: dict[str, Any]) -> str:
    inp, out = report["input"], report["output"]
    rows = [("items", "n"), ("distinct questions", "distinct_questions"), ("distinct images", "distinct_images"),
            ("mean pairwise cosine distance", "mean_pairwise_cosine_distance")]
    lines = ["# Diversity report", "", f"Distance space: {report['space']}.", "", "| | input | output |",
             "|---|---:|---:|"]
    lines += [f"| {label} | {_cell(inp[key])} | {_cell(out[key])} |" for label, key in rows]
    for title, key in (("Answer labels", "labels"), ("Modalities", "modalities")):
        lines += ["", f"## {title}", "", "| | input | output |", "|---|---:|---:|"]
        lines += [f"| {k} | {inp[key].get(k, 0)} | {out[key].get(k, 0)} |"
                  for k in sorted(set(inp[key]) | set(out[key]))]
    return "\n".join(lines) + "\n"


def write_diversity_report(report: dict[str, Any], out_dir: str | Path, name: str = "diversity") -> tuple[Path, Path]:
    """`<name>.json` and `<name>.md` in out_dir, each written atomically."""
    out_dir = Path(out_dir)
    json_path = write_json(report, out_dir / f"{name}.json")
    md_path = out_dir / f"{name}.md"
    with atomic_path(md_path) as tmp:
        tmp.write_text(report_markdown(report), encoding="utf-8")
    return json_path, md_path
