"""Benchmark: the seed's k-means sampler vs the fast default (kcenter_svd), time and diversity, in one run.

Inputs: the 12,803 real PMC-VQA hard questions (../shared/data/mvqa1k/filtered_difficult_cases.csv) and sets
grown from them to 50k and 177k rows (PMC-VQA train size). Growing: copy r of a row gets a new figure id
(`<stem>_g<r>.jpg`, a new TF-IDF token, like a new PMC figure) and a light question variant (one of 7 lead-in
phrases, with or without a trailing "(see figure)"), so no (figure path, question) row appears twice.
The seed sampler runs at 12.8k and 50k (and 177k with --full, ~2+ minutes); the default at every size.
The last line is one JSON object; the latest result is written to bench/results/sampler.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mvqa.curate.diversity import diversity_report
from mvqa.curate.sample import (
    KCenterSVDSampler,
    KMeansSeedSampler,
    MiniBatchKMeansSampler,
    RandomSampler,
    SVDKMeansSampler,
)
from mvqa.data.records import VQAItem
from mvqa.data.storage import write_json

SOURCE = ROOT.parent / "shared" / "data" / "mvqa1k" / "filtered_difficult_cases.csv"
LEAD_INS = ["", "In this image, ", "Looking at the figure, ", "Based on the image, ", "According to the figure, ",
            "From the image shown, ", "In the picture, "]
GROWING = ("copy r of a row: figure id <stem>_g<r>.jpg and the question with lead-in phrase r mod 7 "
           "(lower-cased first letter) plus ' (see figure)' when r >= 7; no (figure path, question) row repeats")


def real_items() -> list[VQAItem]:
    frame = pd.read_csv(SOURCE, dtype=str, keep_default_na=False)
    return [VQAItem(id=f"pmc{i}", image=r.figure_path, question=r.question, choices=[], answer_label=None,
                    answer=r.true_answer, source="pmc_vqa") for i, r in enumerate(frame.itertuples())]


def variant(question: str, r: int) -> str:
    q = question.strip()
    lead = LEAD_INS[r % len(LEAD_INS)]
    q = lead + (q[:1].lower() + q[1:] if lead else q)
    return q + (" (see figure)" if r >= len(LEAD_INS) else "")


def grow(base: list[VQAItem], size: int) -> list[VQAItem]:
    items = list(base[:size])
    r = 0
    while len(items) < size:
        r += 1
        for it in base[: size - len(items)]:
            stem, _, ext = it.image.rpartition(".")
            items.append(it.replace(id=f"{it.id}_g{r}", image=f"{stem}_g{r}.{ext}", question=variant(it.question, r)))
    if len({(it.image, it.question) for it in items}) != len(items):
        raise AssertionError("grown rows repeat a row")
    return items


def run(sampler, items: list[VQAItem]) -> dict:
    start = time.perf_counter()
    out, _ = sampler(items)
    seconds = time.perf_counter() - start
    report = diversity_report(items, out)["output"]
    return {"seconds": round(seconds, 3), "n_out": len(out),
            "mean_pairwise_cosine_distance": round(report["mean_pairwise_cosine_distance"], 4),
            "distinct_questions": report["distinct_questions"], "distinct_images": report["distinct_images"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--full", action="store_true", help="also run the seed sampler at 177k (~2+ minutes)")
    parser.add_argument("--variants", action="store_true", help="also time the other samplers at 12.8k")
    args = parser.parse_args()

    base = real_items()
    sizes = {"12.8k": len(base), "50k": 50_000, "177k": 177_000}
    results: dict = {"n": args.n, "growing": GROWING, "sizes": {}}
    print(f"sampling n={args.n}; grown sets: {GROWING}")
    print(f"{'rows':>8} {'sampler':>16} {'seconds':>8} {'ratio':>7} {'div':>7} {'dist q':>7} {'dist img':>8}")
    for label, size in sizes.items():
        items = base if size == len(base) else grow(base, size)
        samplers = {"kcenter_svd": KCenterSVDSampler(n=args.n), "random": RandomSampler(n=args.n)}
        if label != "177k" or args.full:
            samplers["kmeans_seed"] = KMeansSeedSampler(n=args.n)
        if args.variants and label == "12.8k":
            samplers.update(minibatch_kmeans=MiniBatchKMeansSampler(n=args.n), svd_kmeans=SVDKMeansSampler(n=args.n))
        row = {name: run(s, items) for name, s in samplers.items()}
        if "kmeans_seed" in row:
            row["speedup_vs_seed"] = round(row["kmeans_seed"]["seconds"] / row["kcenter_svd"]["seconds"], 2)
        results["sizes"][label] = {"rows": len(items), **row}
        for name, fig in row.items():
            if isinstance(fig, dict):
                ratio = row["kmeans_seed"]["seconds"] / fig["seconds"] if "kmeans_seed" in row else float("nan")
                print(f"{len(items):>8} {name:>16} {fig['seconds']:>8.2f} {ratio:>6.1f}x "
                      f"{fig['mean_pairwise_cosine_distance']:>7.4f} {fig['distinct_questions']:>7} "
                      f"{fig['distinct_images']:>8}")
    small, big = results["sizes"]["12.8k"], results["sizes"]["177k"]
    results["goals"] = {
        "speedup_12k_ge_10x": small["speedup_vs_seed"] >= 10,
        "default_177k_under_30s": big["kcenter_svd"]["seconds"] < 30,
        "diversity_no_worse": all(s["kcenter_svd"]["mean_pairwise_cosine_distance"]
                                  >= s["kmeans_seed"]["mean_pairwise_cosine_distance"]
                                  for s in results["sizes"].values() if "kmeans_seed" in s),
    }
    print("ratio = kmeans_seed seconds / sampler seconds (same run); div = mean pairwise cosine distance of the "
          "sampled questions in a TF-IDF space fit on the input")
    write_json(results, ROOT / "bench" / "results" / "sampler.json")
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
