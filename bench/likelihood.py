"""Likelihood difficulty scoring: items/s with `scorer.batch_size` items per forward vs one item at a time.

The demo-size tiny LLaVA (random init) on synthetic items, each scored over its 4 choices. One item at a time
(one forward of 4 sequences per item) is the baseline; the batched scorer must give the same scores.

    python bench/likelihood.py [--items 96] [--batch 8] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
from types import SimpleNamespace

import torch
from budget import interleaved, record

from mvqa.curate.likelihood import LikelihoodScorer
from mvqa.data.synthetic import read_synthetic
from mvqa.models.load import load_model
from mvqa.models.tiny import tiny_conf


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    root = tempfile.mkdtemp(prefix="bench-likelihood-")
    bundle = load_model(tiny_conf("llava", size="demo", cache_dir=f"{root}/models"))
    items = read_synthetic(f"{root}/world", n_train=args.items, n_val=0, n_test=0)[0]
    ctx = SimpleNamespace(model=lambda key: bundle)
    scorers = {b: LikelihoodScorer(continuation="tagged_text", batch_size=b, progress=False)
               for b in (1, args.batch)}
    t, out = interleaved({"batched": lambda: scorers[args.batch].score(items, ctx)[0],
                          "one_by_one": lambda: scorers[1].score(items, ctx)[0]}, args.repeats)
    diff = max(abs(a - b) for x, y in zip(out["batched"], out["one_by_one"])
               for a, b in zip(x.extra["choice_logprobs"], y.extra["choice_logprobs"]))
    result = {"items": args.items, "batch": args.batch, "threads": args.threads,
              "batched_items_per_s": args.items / t["batched"],
              "one_by_one_items_per_s": args.items / t["one_by_one"],
              "speedup_vs_one_by_one": t["one_by_one"] / t["batched"], "same_scores_within_1e-4": diff < 1e-4}
    print(f"{args.items} items x 4 choices, demo-size tiny LLaVA, {args.threads} thread(s)")
    print(f"batch {args.batch:2d}: {result['batched_items_per_s']:7.1f} items/s ({t['batched']:.2f} s)")
    print(f"one by one: {result['one_by_one_items_per_s']:7.1f} items/s ({t['one_by_one']:.2f} s)")
    print(f"speedup {result['speedup_vs_one_by_one']:.2f}x; largest log-prob difference {diff:.2e}")
    return record(result, "likelihood", digits=4)


if __name__ == "__main__":
    main()
