"""The GPU paths, run for real on tiny offline models: skipped where no CUDA device is visible (CI's CPUs).

- LoRA fine-tunes of the tiny LLaVA through the recipe (`run_training`) and `train.py` with `trainer=gpu`
  (bf16-mixed), on a bf16 base with fp32 or bf16 adapters: the loss falls, the adapter is saved and reloads.
- Budget forcing on CUDA in bf16: the CPU suite's rules (tests/budget_rules.py) rerun against the
  same closing Llama moved to the GPU, and batched == one by one == the multi-pass reference.
- What only a GPU decides: `model.dtype=auto` is bf16 (what `mvqa.train.memory` assumes), inputs follow the
  model onto the device in its dtype, QLoRA and vLLM name only what is missing besides the GPU.

bf16 runs of the same rows in different batches can differ in the last bit of a logit (other kernels, other
padding). Where two greedy runs part, the test recomputes the logits at that point in fp32 and accepts the
split only when the leading candidates are closer than the bf16 logits' own error there (a rounding tie); any
other difference fails.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from budget_rules import RULES, Forcing, rule_id
from helpers import (
    TINY,
    closing_llama,
    count_runs,
    engine,
    forced,
    ids_of,
    requests,
    summary,
    tiny_llava,
    tiny_tokenizer,
)

from mvqa.data.collators import VQACollator, model_inputs
from mvqa.data.prompts import chat_prompt
from mvqa.generation import BudgetPoint, GenerationParams, GenerationRequest, HFEngine
from mvqa.generation.engine import prompt_text
from mvqa.models.load import load_model, resolve_dtype

DEVICE = "cuda"
GPU_TRAINER = ["trainer=gpu"]  # accelerator gpu, precision bf16-mixed
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def to_device(bundle, dtype=torch.bfloat16):
    bundle.model.to(DEVICE, dtype=dtype)
    return bundle


# ------------------------------------------------------------------------------------------------------------
# Greedy runs that must agree, up to bf16 rounding ties


def first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@functools.cache
def _fp32_copy(model):
    return copy.deepcopy(model).float().eval()


def tie_margin(
    bundle, request: GenerationRequest, params: GenerationParams, prefix: list[int]
) -> tuple[float, float]:
    """(smallest gap among the three leading fp32 logits, largest |bf16 - fp32| logit) for the token after the
    prompt (as the engine encodes it) and `prefix` of the completion."""
    enc = HFEngine(progress=False).encode(bundle, [prompt_text(request, params, bundle)], [request.images])
    assert set(enc) <= {"input_ids", "attention_mask", "pixel_values"}, sorted(enc)
    ids = torch.cat([enc["input_ids"], torch.tensor([prefix], dtype=torch.long, device=DEVICE)], 1)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    pixels = enc.get("pixel_values")
    with torch.inference_mode():
        low = (
            bundle.model(**inputs, **({"pixel_values": pixels} if pixels is not None else {}))
            .logits[0, -1]
            .float()
        )
        high = _fp32_copy(bundle.model)(
            **inputs, **({"pixel_values": pixels.float()} if pixels is not None else {})
        )
        high = high.logits[0, -1].float()
        high[bundle.tokenizer.pad_token_id] = -float("inf")  # never generated (suppress_tokens)
        top = high.topk(3).values
        finite = torch.isfinite(high)
        return float((top[:-1] - top[1:]).min()), float((low - high)[finite].abs().max())


def assert_same_up_to_bf16_ties(bundle, reqs, params, got, want, what: str) -> None:
    ties = []
    for req, g, w in zip(reqs, got, want, strict=True):
        if summary([g]) == summary([w]):
            continue
        i = first_divergence(g.token_ids, w.token_ids)
        assert i is not None, (
            f"{what}, {req.id or req.prompt!r}: same tokens, other counts: {summary([g])} vs {summary([w])}"
        )
        gap, err = tie_margin(bundle, req, params, g.token_ids[:i])
        assert gap <= 4 * err, (
            f"{what}, {req.id or req.prompt!r}: the runs part at completion token {i}, where the "
            f"leading logits are {gap:.3g} apart, over 4x their bf16 error {err:.3g}: not a tie"
        )
        ties.append(f"{req.id or req.prompt!r} at token {i} (gap {gap:.2g}, bf16 error {err:.2g})")
    if ties:
        warnings.warn(
            f"{what}: {len(ties)} of {len(reqs)} rows parted at a bf16 rounding tie: {ties}", stacklevel=2
        )


# ------------------------------------------------------------------------------------------------------------
# What only a GPU decides


def test_auto_dtype_is_bf16_on_the_gpu_as_the_memory_estimator_assumes(compose, tmp_path):
    from mvqa.train.memory import Param, stored_bytes

    assert resolve_dtype("auto") == torch.bfloat16
    cfg = compose("train", [*TINY, *GPU_TRAINER, "model.device_map=cuda"])
    assert (
        cfg.model.dtype == "auto"
        and cfg.trainer.accelerator == "gpu"
        and cfg.trainer.precision == "bf16-mixed"
    )
    assert stored_bytes(Param("w", 1, False, "base"), cfg) == resolve_dtype("auto").itemsize == 2
    bundle = load_model(cfg.model)  # what evaluate.py loads with model.device_map=cuda
    assert {(p.device.type, p.dtype) for p in bundle.model.parameters()} == {("cuda", torch.bfloat16)}
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(3)]
    reqs = [
        GenerationRequest(
            prompt=chat_prompt(bundle.processor, f"Question {i}: which organ?"), images=[im], id=f"q{i}"
        )
        for i, im in enumerate(images)
    ]
    engine = HFEngine(batch_size=3, progress=False, max_new_tokens=6)
    enc = engine.encode(bundle, [r.prompt for r in reqs], [r.images for r in reqs])
    assert enc["input_ids"].device.type == "cuda" and enc["pixel_values"].dtype == torch.bfloat16
    params = GenerationParams(budget=BudgetPoint(8, num_waits=1, max_answer_tokens=4))
    batched = engine.generate(bundle, reqs, params)
    assert all(g.thinking_tokens <= 8 and g.completion_tokens <= 8 + 1 + 4 for g in batched)
    alone = [engine.generate(bundle, [r], params)[0] for r in reqs]
    assert_same_up_to_bf16_ties(bundle, reqs, params, batched, alone, "tiny LLaVA, images, batched vs alone")


def test_qlora_and_vllm_name_only_what_is_missing_besides_the_gpu():
    import importlib.util

    from mvqa.generation import VLLMEngine
    from mvqa.models.lora import check_qlora_available

    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(RuntimeError, match="QLoRA needs bitsandbytes") as err:
            check_qlora_available()
        assert "CUDA" not in str(err.value)
    else:
        check_qlora_available()
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(RuntimeError, match=r"engine=vllm needs the vllm package") as err:
            VLLMEngine()
        assert "CUDA GPU" not in str(err.value)


# ------------------------------------------------------------------------------------------------------------
# LoRA fine-tuning on the GPU


def _train_losses(run_dir: Path) -> list[float]:
    metrics = pd.read_csv(next((run_dir / "csv").rglob("metrics.csv")))
    rows = metrics.dropna(subset=["train/loss"]).sort_values("step")
    return rows["train/loss"].tolist()


@pytest.mark.parametrize(
    "dtype, adapter_dtype, checkpointing",
    [
        ("auto", "float32", True),  # the 7B recipe: bf16 base, PEFT's fp32 adapters, gradient checkpointing
        ("bfloat16", "base", False),  # what FSDP needs: adapters in the base's bf16
    ],
    ids=["auto-fp32_adapters-ckpt", "bf16-bf16_adapters"],
)
def test_lora_finetune_on_the_gpu_learns_saves_and_reloads(
    compose, tmp_path, monkeypatch, dtype, adapter_dtype, checkpointing
):
    from mvqa.train.module import VQAFineTuner
    from mvqa.train.recipe import run_training, split_train_val
    from mvqa.train.trace_format import TraceFormatter

    seen: dict[str, set] = {"params": set(), "autocast": set(), "finite": set()}
    real_step = VQAFineTuner.training_step

    def training_step(self, batch, batch_idx):
        seen["autocast"].add((torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")))
        return real_step(self, batch, batch_idx)

    def on_before_optimizer_step(self, optimizer):
        for p in self.model.parameters():
            seen["params"].add((p.device.type, p.requires_grad, p.dtype))
            if p.requires_grad:
                seen["finite"].add(p.grad is not None and bool(torch.isfinite(p.grad).all()))

    monkeypatch.setattr(VQAFineTuner, "training_step", training_step)
    monkeypatch.setattr(VQAFineTuner, "on_before_optimizer_step", on_before_optimizer_step, raising=False)
    out = tmp_path / "run"
    # 16 items in batches of 4: 4 steps an epoch, 6 epochs.
    cfg = compose(
        "train",
        [
            *TINY,
            *GPU_TRAINER,
            "logger=csv",
            f"model.dtype={dtype}",
            f"recipe.adapter_dtype={adapter_dtype}",
            f"gradient_checkpointing={str(checkpointing).lower()}",
            "recipe.lr=3e-3",
            "recipe.epochs=6",
            "trainer.log_every_n_steps=1",
        ],
        out,
    )
    result = run_training(cfg, out)

    adapters = torch.float32 if adapter_dtype == "float32" else torch.bfloat16
    assert seen["params"] == {("cuda", False, torch.bfloat16), ("cuda", True, adapters)}
    assert seen["autocast"] == {(True, torch.bfloat16)} and seen["finite"] == {True}
    losses = _train_losses(out)
    assert result["global_step"] == len(losses) == 24 and 0 <= result["val_acc"] <= 1
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    # A random-init base: LoRA moves its loss from ln(vocab) towards a plateau ~0.3 nats lower (0.28 on CPU).
    assert last < first - 0.15, f"loss did not fall: first epoch {first:.3f}, last epoch {last:.3f}: {losses}"

    saved = load_file(out / "adapter" / "adapter_model.safetensors")
    assert saved and all("lora_" in k for k in saved)
    assert {v.dtype for v in saved.values()} == {adapters}
    assert any(float(v.abs().max()) > 0 for k, v in saved.items() if "lora_B" in k)  # B starts at zero
    # Reload onto a fresh bf16 base on the GPU, as evaluate.py does with adapters=[...] and device_map=cuda.
    cfg.model.adapter, cfg.model.device_map = str(out / "adapter"), DEVICE
    bundle = load_model(cfg.model)
    state = {
        n.removeprefix("base_model.model.").replace(".default", ""): p
        for n, p in bundle.model.named_parameters()
        if "lora_" in n
    }
    assert state.keys() == {k.removeprefix("base_model.model.") for k in saved}
    for name, value in saved.items():
        torch.testing.assert_close(
            state[name.removeprefix("base_model.model.")].float().cpu(),
            value.float(),
            rtol=0,
            atol=0,
            msg=name,
        )
    items, _ = TraceFormatter(**{k: v for k, v in cfg.trace_format.items() if k != "_target_"})(
        split_train_val(cfg)[0], bundle.special_tokens
    )
    batch = VQACollator(bundle.processor, cfg.data.prompt, max_length=cfg.data.max_length)(items[:8])
    inputs = {k: v.to(DEVICE) for k, v in model_inputs(batch).items()}
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        tuned = float(bundle.model(**inputs).loss)
        with bundle.model.disable_adapter():
            base = float(bundle.model(**inputs).loss)
    assert tuned < base - 0.1, f"reloaded adapter: loss {tuned:.3f} vs base {base:.3f}"


def test_train_py_on_the_gpu(tmp_path):
    """The entry point itself: Hydra composes trainer=gpu, Lightning trains on the GPU, the adapter is
    written."""
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        str(PROJECT_ROOT / "train.py"),
        *TINY,
        *GPU_TRAINER,
        "logger=csv",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=0",
        f"hydra.run.dir={run}",
    ]
    proc = subprocess.run(cmd, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "GPU available: True (cuda), used: True" in proc.stdout + proc.stderr
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 2
    assert (run / "adapter" / "adapter_model.safetensors").is_file()


# ------------------------------------------------------------------------------------------------------------
# Budget forcing on CUDA in bf16


@pytest.fixture(scope="module", params=["single_token_end", "multi_token_end"])
def closer(request):
    """tests/test_budget_forcing.py's closing Llama, on the GPU in bf16."""
    tokenizer = tiny_tokenizer(single_token_delimiters=request.param == "single_token_end")
    return to_device(closing_llama(tokenizer))


@pytest.mark.parametrize(
    "point",
    [
        BudgetPoint(24),
        BudgetPoint(24, num_waits=2),
        BudgetPoint(24, num_waits=2, min_thinking_tokens=8),
        BudgetPoint(6, num_waits=1),
    ],
    ids=lambda p: p.id,
)
def test_bf16_batched_equals_one_by_one_and_the_multipass_reference(closer, point):
    assert (closer.model.device.type, closer.model.dtype) == ("cuda", torch.bfloat16)
    params = GenerationParams(budget=point)
    batched = forced(closer, point)
    for g in batched:
        assert g.thinking_tokens <= point.max_thinking_tokens and g.waits_used <= point.num_waits
        assert count_runs(g.token_ids[: g.thinking_tokens], ids_of(closer, point.wait_string)) == g.waits_used
        assert point.min_thinking_tokens <= g.thinking_tokens
    multipass = forced(closer, point, budget_impl="multi_pass")
    assert_same_up_to_bf16_ties(
        closer, requests(), params, batched, multipass, f"{point.id}: 1 pass vs multi-pass"
    )
    alone = [engine().generate(closer, [r], params)[0] for r in requests()]
    assert_same_up_to_bf16_ties(closer, requests(), params, batched, alone, f"{point.id}: batched vs alone")


@pytest.mark.parametrize("rule", RULES, ids=rule_id)
def test_the_cpu_suites_forcing_rules_hold_on_cuda_in_bf16(closer, rule):
    rule(Forcing(closer))


def test_llava_with_images_forced_on_cuda_batched_equals_one_by_one():
    """test_engine's tiny LLaVA (it tries to close its thinking now and then) in bf16 on the GPU: pixel values
    follow the model's dtype, Waits get used, batched rows equal their one-by-one runs."""
    bundle = to_device(tiny_llava(tiny_tokenizer()))
    rng = np.random.default_rng(0)
    reqs = [
        GenerationRequest(
            prompt=f"<image>\nQuestion {i}: which organ?",
            id=f"q{i}",
            images=[Image.fromarray(rng.integers(0, 255, (40 + 4 * i, 48, 3), dtype=np.uint8))],
        )
        for i in range(4)
    ]
    engine = HFEngine(batch_size=3, progress=False)
    params = GenerationParams(budget=BudgetPoint(max_thinking_tokens=12, num_waits=2, max_answer_tokens=4))
    batched = engine.generate(bundle, reqs, params)
    assert sum(g.waits_used for g in batched) > 0
    alone = [engine.generate(bundle, [r], params)[0] for r in reqs]
    assert_same_up_to_bf16_ties(bundle, reqs, params, batched, alone, "LLaVA + images: batched vs alone")
    multipass = engine.generate(bundle, reqs, dataclasses.replace(params, budget_impl="multi_pass"))
    assert_same_up_to_bf16_ties(
        bundle, reqs, params, batched, multipass, "LLaVA + images: 1 pass vs multi-pass"
    )
