"""HF engine overhead: `HFEngine.generate` items/s vs calling `model.generate` directly on the same batches.

Same ~3M-parameter random Llama as bench/budget.py, greedy, the same left-padded batches. The direct baseline
is timed twice: `generate` alone on pre-tokenized batches (strict), and tokenize + generate + decode (what a
caller of `model.generate` also has to do). Goal: engine overhead <= 10% against the strict baseline.

    python bench/generate.py [--items 64] [--batch 8] [--max-new-tokens 64] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch
from budget import bench_bundle, interleaved, questions, record

from mvqa.generation import GenerationRequest, HFEngine


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    bundle = bench_bundle()
    model, tokenizer = bundle.model, bundle.tokenizer
    prompts = questions(args.items)
    requests = [GenerationRequest(prompt=p) for p in prompts]
    engine = HFEngine(batch_size=args.batch, progress=False, max_new_tokens=args.max_new_tokens)
    chunks = [prompts[i:i + args.batch] for i in range(0, len(prompts), args.batch)]
    batches = [engine.encode(bundle, chunk, [[] for _ in chunk]) for chunk in chunks]
    kwargs = dict(max_new_tokens=args.max_new_tokens, **engine.generate_kwargs(bundle, engine.params))

    def direct_generate_only():
        return [model.generate(**b, **kwargs) for b in batches]

    def direct_with_text():
        texts = []
        for chunk in chunks:
            batch = engine.encode(bundle, chunk, [[] for _ in chunk])
            out = model.generate(**batch, **kwargs)
            texts += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=False)
        return texts

    engine.generate(bundle, requests[:2])  # warm-up
    with torch.inference_mode():
        runs = {"engine": lambda: engine.generate(bundle, requests), "direct": direct_generate_only,
                "direct_text": direct_with_text}
        t, out = interleaved(runs, args.repeats)
    width = [b["input_ids"].shape[1] for b in batches]
    direct_ids = [row[w:].tolist() for o, w in zip(out["direct"], width) for row in o]
    identical = [g.token_ids for g in out["engine"]] == [ids[:len(g.token_ids)] for g, ids in
                                                          zip(out["engine"], direct_ids)]
    result = {
        "items": args.items, "batch": args.batch, "max_new_tokens": args.max_new_tokens,
        "threads": args.threads,
        "engine_items_per_s": args.items / t["engine"],
        "direct_generate_items_per_s": args.items / t["direct"],
        "direct_with_text_items_per_s": args.items / t["direct_text"],
        "overhead_vs_generate": t["engine"] / t["direct"] - 1,
        "overhead_vs_generate_with_text": t["engine"] / t["direct_text"] - 1,
        "ratio_engine_vs_generate": t["direct"] / t["engine"],
        "same_tokens": identical,
    }
    print(
        f"{args.items} items, batch {args.batch}, {args.max_new_tokens} new tokens, {args.threads} thread(s)")
    print(f"HFEngine.generate              {result['engine_items_per_s']:7.2f} items/s ({t['engine']:.3f} s)")
    print(
        f"model.generate (pre-tokenized) {result['direct_generate_items_per_s']:7.2f} items/s "
        f"({t['direct']:.3f} s)")
    print(f"tokenize + generate + decode   {result['direct_with_text_items_per_s']:7.2f} items/s "
          f"({t['direct_text']:.3f} s)")
    print(f"engine overhead {result['overhead_vs_generate']:+.1%} vs generate alone (goal <= 10%), "
          f"{result['overhead_vs_generate_with_text']:+.1%} vs tokenize+generate+decode; "
          f"ratio {result['ratio_engine_vs_generate']:.3f}x; same tokens: {identical}")
    return record(result, "generate", digits=4)


if __name__ == "__main__":
    main()
