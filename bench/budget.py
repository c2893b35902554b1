"""Budget forcing speed: the single-pass processor vs plain generation and vs s1's multi-pass re-prefill loop.

On a random ~3M-parameter Llama (BPE tokenizer trained here) that tries to close its thinking now and then:
- single-pass forcing vs plain `generate` through the same engine, same batch, same number of decode steps
  (eos is ruled out so both run every step): goal >= 0.85x tokens/s;
- single-pass vs the multi-pass re-prefill loop at 2 Waits on the same prompts (token-identical outputs,
  checked): goal >= 1.5x tokens/s.

    python bench/budget.py [--batch 8] [--max-thinking 192] [--waits 2] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from mvqa.generation import BudgetPoint, GenerationParams, GenerationRequest, HFEngine
from mvqa.models.bundle import ModelBundle

RESULTS = Path(__file__).parent / "results"
ORGANS = ["liver", "lung", "heart", "kidney", "brain", "spleen", "colon", "bladder"]
MODALITIES = ["CT", "MRI", "X-ray", "ultrasound", "PET", "histology"]


def questions(n: int) -> list[str]:
    """Chat-formatted multiple-choice prompts of varying length."""
    out = []
    for i in range(n):
        organ, modality = ORGANS[i % len(ORGANS)], MODALITIES[i % len(MODALITIES)]
        choices = " ".join(f"{l}. {ORGANS[(i + k) % len(ORGANS)]}" for k, l in enumerate("ABCD"))
        extra = " Consider the margins and the density of the lesion." * (i % 3)
        out.append(f"<s>[INST] <image>\nWhich organ does this {modality} image of the {organ} show?{extra}\n"
                   f"Choices: {choices} [/INST] ")
    return out


def bench_bundle(end_bias: float = 0.8, hidden: int = 256, layers: int = 4, vocab: int = 512,
                 seed: int = 0) -> ModelBundle:
    """A random Llama of a few M parameters; `</think>` nudged up so it tries to end its thinking (0.8: some
    rows soon, some late, some never: a mixed batch), eos ruled out so rows end only at their caps (plain and
    forced runs then take the same number of steps)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>", "<image>", "<think>", "</think>", "<answer>", "</answer>"]
    tok.train_from_iterator(questions(64) * 4, trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>")
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)).eval()
    head = torch.nn.Linear(hidden, len(tokenizer), bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[tokenizer.convert_tokens_to_ids("</think>")] = end_bias
        head.bias[tokenizer.eos_token_id] = -100.0
    model.lm_head = head
    return ModelBundle(model=model, processor=tokenizer, chat_template="", name="bench-llama")


def interleaved(runs: dict, repeats: int) -> tuple[dict[str, float], dict]:
    """Median seconds per run, the runs taking turns so load from other processes hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs = {}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, outputs


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-thinking", type=int, default=192)
    parser.add_argument("--waits", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--end-bias", type=float, default=0.8, help="logit bias of </think>")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    bundle = bench_bundle(args.end_bias)
    params_m = sum(p.numel() for p in bundle.model.parameters()) / 1e6
    requests = [GenerationRequest(prompt=q) for q in questions(args.batch)]
    engine = HFEngine(batch_size=args.batch, progress=False)
    point = BudgetPoint(args.max_thinking, num_waits=args.waits, max_answer_tokens=32)
    single = GenerationParams(budget=point)
    multi = dataclasses.replace(single, budget_impl="multi_pass")
    engine.generate(bundle, requests[:2], single)  # warm-up

    # decode steps the forced batch takes (no eos possible): the plain run takes exactly as many
    steps = max(g.completion_tokens for g in engine.generate(bundle, requests, single))
    plain = dataclasses.replace(single, budget=None, max_new_tokens=steps)
    t, out = interleaved(
        {p: (lambda p=p: engine.generate(bundle, requests, p)) for p in (plain, single, multi)},
        args.repeats)
    (t_plain, unforced), (t_single, forced), (t_multi,
                                              reference) = ((t[p], out[p]) for p in (plain, single, multi))

    tokens = sum(g.completion_tokens for g in forced)
    identical = [g.token_ids for g in forced] == [g.token_ids for g in reference]
    assert all(g.completion_tokens == steps for g in unforced), "the plain run must take the same steps"
    result = {
        "model_params_m": round(params_m, 2), "batch": args.batch, "threads": args.threads,
        "end_bias": args.end_bias,
        "max_thinking_tokens": args.max_thinking, "num_waits": args.waits, "decode_steps": steps,
        "waits_used_mean": statistics.mean(g.waits_used for g in forced),
        "forced_share": statistics.mean(float(g.forced_end) for g in forced),
        "plain_step_tokens_per_s": args.batch * steps / t_plain,
        "forced_step_tokens_per_s": args.batch * steps / t_single,
        "forced_tokens_per_s": tokens / t_single,
        "multipass_tokens_per_s": tokens / t_multi,
        "ratio_forced_vs_plain": t_plain / t_single,
        "ratio_single_vs_multipass": t_multi / t_single,
        "single_equals_multipass": identical,
    }
    print(f"model {params_m:.2f}M params, batch {args.batch}, {args.threads} thread(s), budget {point.id}: "
          f"{steps} decode steps, {result['waits_used_mean']:.2f} Waits/row, {result['forced_share']:.0%} "
          "forced; "
          f"per row (thinking, Waits): {[(g.thinking_tokens, g.waits_used) for g in forced]}")
    print(f"plain generate        {result['plain_step_tokens_per_s']:8.1f} tokens/s ({t_plain:.3f} s)")
    print(f"budget-forced, 1 pass {result['forced_step_tokens_per_s']:8.1f} tokens/s ({t_single:.3f} s; "
          f"{result['forced_tokens_per_s']:.1f} tokens/s counting only tokens of unfinished rows)")
    print(f"s1 multi-pass loop    {result['multipass_tokens_per_s']:8.1f} tokens/s ({t_multi:.3f} s)")
    print(f"ratio forced/plain    {result['ratio_forced_vs_plain']:.3f}x (goal >= 0.85)")
    print(f"ratio 1-pass/multi    {result['ratio_single_vs_multipass']:.3f}x (goal >= 1.5), "
          f"outputs identical: {identical}")
    return record(result, "budget", digits=3)


def record(result: dict, name: str, digits: int) -> dict:
    """Round the figures, keep them in bench/results/<name>.json and print them as the last line."""
    result = {k: round(v, digits) if isinstance(v, float) else v for k, v in result.items()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
