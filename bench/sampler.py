"""Benchmark: every sampler's spread, coverage and time, against the seed's k-means sampler in the same run.

Inputs: the 12,803 real PMC-VQA hard questions (../shared/data/mvqa1k/filtered_difficult_cases.csv) and sets
grown from them to 50k and 177k rows (PMC-VQA train size). Growing: copy r of a row gets a new figure id
(`<stem>_g<r>.jpg`, a new TF-IDF token, like a new PMC figure) and a light question variant (one of 7 lead-in
phrases, with or without a trailing "(see figure)"), so no (figure path, question) row appears twice.
Also SLAKE's 7,033 English questions (train + validate + test) and the synthetic world's 2,500 (train + val +
test, made in a temporary folder), each sampled at the same share of the pool as n is of the 12.8k rows.
Measures (mvqa.curate.diversity, the seed's feature space): spread = mean pairwise cosine distance of the
picks (higher: wider), coverage = mean distance of every input row to its nearest pick (lower: better);
outliers among the picks on the real 12.8k rows. Figures compare at the 4 decimals printed. Times at 12.8k are
the best of 3 calls per sampler (same rows each time), elsewhere one call. The default must also beat the seed
sampler at other sampler seeds: 16 on SLAKE and the world, 3 at 12.8k (SWEEP_SEEDS).
The seed sampler runs at 12.8k and 50k (and 177k with --full, many minutes); the others at every size.
The last line is one JSON object; the latest result is written to bench/results/sampler.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mvqa.curate.diversity import (
    coverage,
    mean_pairwise_cosine_distance,
    outlier_figures,
    pick_rows,
    seed_space,
)
from mvqa.curate.sample import (
    CoverSpreadSampler,
    KCenterSVDSampler,
    KMeansSeedSampler,
    MiniBatchKMeansSampler,
    RandomSampler,
    SVDKMeansSampler,
)
from mvqa.data.records import VQAItem
from mvqa.data.storage import write_json

SOURCE = ROOT.parent / "shared" / "data" / "mvqa1k" / "filtered_difficult_cases.csv"
SLAKE = ROOT.parent / "shared" / "data" / "slake"
DEFAULT = "cover_spread"
REPEATS_12K = 3
# Other sampler seeds the default must also win at (besides the default seed 42): all 16 on the small pools,
# 3 at 12.8k where kmeans_seed takes seconds a call.
SWEEP_SEEDS = {"12.8k": range(3), "slake": range(16), "world": range(16)}
LEAD_INS = ["", "In this image, ", "Looking at the figure, ", "Based on the image, ",
            "According to the figure, ",
            "From the image shown, ", "In the picture, "]
GROWING = ("copy r of a row: figure id <stem>_g<r>.jpg and the question with lead-in phrase r mod 7 "
           "(lower-cased first letter) plus ' (see figure)' when r >= 7; no (figure path, question) row "
           "repeats")


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
            items.append(
                it.replace(id=f"{it.id}_g{r}", image=f"{stem}_g{r}.{ext}", question=variant(it.question, r)))
    if len({(it.image, it.question) for it in items}) != len(items):
        raise AssertionError("grown rows repeat a row")
    return items


def slake_items() -> list[VQAItem]:
    from mvqa.data.readers import read_slake

    return [it for split in ("train", "validate", "test") for it in read_slake(SLAKE, split=split)[0]]


def world_items(root: str) -> list[VQAItem]:
    from mvqa.data.synthetic import read_synthetic

    return [it for split in ("train", "val", "test") for it in read_synthetic(root, split=split)[0]]


def run(sampler, items: list[VQAItem], X, outliers: bool = False, repeats: int = 1) -> dict:
    """Figures of one sampler; seconds = the best of `repeats` calls (they must pick the same rows)."""
    times, picked = [], set()
    for _ in range(repeats):
        start = time.perf_counter()
        out, stats = sampler(items)
        times.append(time.perf_counter() - start)
        picked.add(tuple(it.id for it in out))
    if len(picked) != 1:
        raise AssertionError(f"sampler {sampler.name} picked different rows on repeated calls")
    picks = pick_rows(items, out)
    fig = {"seconds": round(min(times), 3), "n_out": len(out),
           "spread": round(mean_pairwise_cosine_distance(X[picks]), 4),
           "coverage": round(coverage(X, picks), 4),
           "distinct_questions": len({it.question.strip() for it in out})}
    if outliers:
        fig["outliers"] = outlier_figures(X, picks)[1]["outliers"]
    if "clusters" in stats.metrics:
        fig["cluster_cv"] = stats.metrics["clusters"]["cv"]
    return fig


def seed_sweep(items: list[VQAItem], X, n: int, seeds: range) -> dict:
    """The default against kmeans_seed at other sampler seeds (figures only, no times): a win at one seed
    could be luck where the two are close."""
    diffs = []
    for seed in seeds:
        fig = {}
        for name, cls in ((DEFAULT, CoverSpreadSampler), ("kmeans_seed", KMeansSeedSampler)):
            picks = pick_rows(items, cls(n=n, seed=seed)(items)[0])
            fig[name] = {"spread": round(mean_pairwise_cosine_distance(X[picks]), 4),
                         "coverage": round(coverage(X, picks), 4)}
        diffs.append((fig, round(fig[DEFAULT]["spread"] - fig["kmeans_seed"]["spread"], 4),
                      round(fig[DEFAULT]["coverage"] - fig["kmeans_seed"]["coverage"], 4)))
    return {"seeds": f"{seeds.start}-{seeds.stop - 1}", "no_worse": sum(no_worse(f) for f, _, _ in diffs),
            "of": len(diffs), "spread_diff_min": min(d for _, d, _ in diffs),
            "coverage_diff_max": max(d for _, _, d in diffs)}


def no_worse(row: dict, name: str = DEFAULT) -> bool:
    seed = row["kmeans_seed"]
    return row[name]["spread"] >= seed["spread"] and row[name]["coverage"] <= seed["coverage"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--full", action="store_true",
                        help="also run the seed sampler at 177k (many minutes)")
    parser.add_argument("--variants", action="store_true",
                        help="also run svd_kmeans and minibatch_kmeans at 12.8k")
    args = parser.parse_args()

    base = real_items()
    share = args.n / len(base)
    with tempfile.TemporaryDirectory() as world_root:
        pools = {"12.8k": base, "50k": 50_000, "177k": 177_000, "slake": slake_items(),
                 "world": world_items(world_root)}
    # Thread count matters for the ratio: kmeans_seed (sklearn KMeans) uses OpenMP threads, the others one.
    results: dict = {"n": args.n, "growing": GROWING, "repeats_12k": REPEATS_12K,
                     "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "all"),
                     "sizes": {}}
    print(f"sampling n={args.n} (SLAKE and world: {share:.4f} of the pool); grown sets: {GROWING}")
    print(f"{'pool':>6} {'rows':>7} {'n':>5} {'sampler':>16} {'seconds':>8} {'ratio':>7} {'spread':>7} "
          f"{'coverage':>8} {'outliers':>8}")
    for label, pool in pools.items():
        items = grow(base, pool) if isinstance(pool, int) else pool
        n = args.n if label[0].isdigit() else max(2, round(share * len(items)))
        X = seed_space(items)
        samplers = {DEFAULT: CoverSpreadSampler(n=n), "kcenter_svd": KCenterSVDSampler(n=n),
                    "random": RandomSampler(n=n)}
        if label != "177k" or args.full:
            samplers["kmeans_seed"] = KMeansSeedSampler(n=n)
        if args.variants and label == "12.8k":
            samplers.update(minibatch_kmeans=MiniBatchKMeansSampler(n=n), svd_kmeans=SVDKMeansSampler(n=n))
        # Best of REPEATS_12K calls at 12.8k, where the 10x goal is judged: a shared machine's load
        # comes and goes.
        repeats = REPEATS_12K if label == "12.8k" else 1
        row = {name: run(s, items, X, outliers=label == "12.8k", repeats=repeats) for name,
               s in samplers.items()}
        if "kmeans_seed" in row:
            row["speedup_vs_seed"] = round(row["kmeans_seed"]["seconds"] / row[DEFAULT]["seconds"], 2)
        results["sizes"][label] = {"rows": len(items), "n": n, **row}
        if label in SWEEP_SEEDS:
            sweep = results["sizes"][label]["other_seeds"] = seed_sweep(items, X, n, SWEEP_SEEDS[label])
            print(f"{label:>6} {DEFAULT} no worse than kmeans_seed on both at {sweep['no_worse']} of "
                  f"{sweep['of']} other seeds ({sweep['seeds']}); spread - seed's >= "
                  f"{sweep['spread_diff_min']:+.4f}, coverage - seed's <= {sweep['coverage_diff_max']:+.4f}",
                  flush=True)
        for name, fig in row.items():
            if isinstance(fig, dict):
                ratio = (row["kmeans_seed"]["seconds"] / fig["seconds"] if "kmeans_seed" in row
                         else float("nan"))
                print(f"{label:>6} {len(items):>7} {n:>5} {name:>16} {fig['seconds']:>8.2f} {ratio:>6.1f}x "
                      f"{fig['spread']:>7.4f} {fig['coverage']:>8.4f} {fig.get('outliers', ''):>8}",
                      flush=True)
    sizes = results["sizes"]
    results["goals"] = {
        **{f"no_worse_than_seed_{key}": no_worse(sizes[label])
           and sizes[label]["other_seeds"]["no_worse"] == sizes[label]["other_seeds"]["of"]
           for key, label in (("12k", "12.8k"), ("slake", "slake"), ("world", "world"))},
        "no_worse_than_seed_every_size": all(no_worse(s) for s in sizes.values() if "kmeans_seed" in s),
        "speedup_12k_ge_10x": sizes["12.8k"]["speedup_vs_seed"] >= 10,
        "default_177k_under_30s": sizes["177k"][DEFAULT]["seconds"] <= 30,
    }
    results["goals"]["all"] = all(results["goals"].values())
    print(
        f"ratio = kmeans_seed seconds / sampler seconds (same run); default = {DEFAULT}; spread = mean "
        "pairwise "
        "cosine distance of the picks, coverage = mean distance of every input row to its nearest pick, "
        "outliers = picks whose nearest-neighbour distance is in the pool's top 5% (seed feature space)")
    write_json(results, ROOT / "bench" / "results" / "sampler.json")
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
