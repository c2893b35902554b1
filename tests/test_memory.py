"""Per-GPU memory of the 7B LLaVA-Med fine-tunes, computed from the configs on the meta device.

The expected figures are worked out by hand from the configs' dimensions (the arithmetic is in the comments),
not recomputed with the estimator's formulas. Each meta model is built once per module (a fixture).
"""

from __future__ import annotations

from itertools import pairwise

import pytest

from mvqa.models.load import build_empty
from mvqa.models.lora import count_parameters, prepare_trainable
from mvqa.train.memory import (
    GIB,
    NF4_BYTES,
    MixedDtypeUnit,
    activation_bytes,
    count_params,
    logits_bytes,
    main,
    per_gpu,
)

# 576 image tokens + 448 text tokens: the collator counts both in max_length (the README's 7B commands).
LLAVA = ["model=llava_med", "data.max_length=1024", "data.batch_size=1", "gradient_checkpointing=true"]
GPUS = (1, 2, 4, 8)
LORA_R8 = 6_815_744  # 8 x 32 layers x (q, o: 4096 + 4096; k, v: 4096 + 1024 under GQA) = 8 x 32 x 26,624


@pytest.fixture(scope="module")
def train_cfg():
    """compose("train", overrides) for the whole module: composing is cheap, the meta models are not."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from mvqa.config import CONFIG_DIR, setup

    setup()

    def _compose(overrides: list[str]):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="train"):
            return compose(config_name="train", overrides=["paths.output_dir=/nonexistent", *overrides])

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def lora8(train_cfg):
    """(config, parameter counts) of LoRA r 8 on the 7B LLaVA-Med, its meta model built once."""
    cfg = train_cfg([*LLAVA, "recipe=lora_r8"])
    return cfg, count_params(cfg)


@pytest.fixture(scope="module")
def qlora4(train_cfg):
    cfg = train_cfg([*LLAVA, "recipe=qlora", "model.quantize=4bit"])
    return cfg, count_params(cfg)


@pytest.fixture(scope="module")
def qwen8(train_cfg):
    cfg = train_cfg(["model=qwen2_vl_2b", *LLAVA[1:], "recipe=lora_r8"])
    return cfg, count_params(cfg)


def test_counts_are_what_training_prepares(lora8):
    cfg, fp = lora8
    trainable, total = count_parameters(prepare_trainable(build_empty(cfg.model), cfg.recipe, None))
    assert (fp.trainable, fp.total) == (trainable, total)
    assert (trainable, total) == (LORA_R8, 7_573_559_296)  # cross-check: tests/test_meta_architectures.py
    # LLaVA's two-layer MLP projector: 1024 x 4096 + 4096, then 4096 x 4096 + 4096.
    assert fp.projector == 4_194_304 + 4_096 + 16_777_216 + 4_096 == 20_979_712
    assert 0.29e9 < fp.vision < 0.31e9  # CLIP ViT-L/14-336
    assert fp.image_tokens == 576  # (336 / 14)^2


def test_fsdp_shards_with_gpus_and_ddp_replicates(compose, lora8):
    cfg, fp = lora8
    ddp = [per_gpu(cfg, "ddp", n, fp).total for n in GPUS]
    assert len(set(ddp)) == 1
    # FSDP flattens each decoder layer into one tensor: bf16 weights and PEFT's fp32 adapters cannot share it.
    with pytest.raises(MixedDtypeUnit, match=r"recipe.adapter_dtype=base .*model.dtype=float32"):
        per_gpu(cfg, "fsdp", 2, fp)
    fp32 = compose("train", [*LLAVA, "recipe=lora_r8", "model.dtype=float32"])
    fsdp32 = [per_gpu(fp32, "fsdp", n, fp).total for n in GPUS]
    assert all(a > b for a, b in pairwise(fsdp32))
    assert fsdp32[-1] < ddp[0] < fsdp32[0]
    # Adapters in the base's bf16: one dtype per unit without fp32 weights, about half of the fp32 rows.
    base = compose("train", [*LLAVA, "recipe=lora_r8", "recipe.adapter_dtype=base"])
    fsdp16 = [per_gpu(base, "fsdp", n, fp) for n in GPUS]
    assert all(a.total > b.total for a, b in pairwise(fsdp16))
    # the gathered units are 16-bit in both
    assert all(0.5 < b.total / f < 0.7 for b, f in zip(fsdp16, fsdp32))
    assert fsdp16[-1].total < ddp[0] < fsdp16[0].total
    # AdamW's two states in bf16 like the adapters: 2 x 2 B x LORA_R8
    assert fsdp16[0].optimizer == 27_262_976


def test_adapter_dtype_base_stores_adapters_in_16_bit(compose, lora8, qlora4):
    f32, fp = lora8
    b16 = compose("train", [*LLAVA, "recipe=lora_r8", "recipe.adapter_dtype=base"])
    a, b = per_gpu(f32, "ddp", 1, fp), per_gpu(b16, "ddp", 1, fp)
    assert (a.optimizer, b.optimizer) == (54_525_952, 27_262_976)  # AdamW's 2 states x 4 B or 2 B x LORA_R8
    assert a.weights - b.weights == 13_631_488  # the adapters themselves: 2 B saved on each of LORA_R8
    # A 4-bit base keeps fp32 adapters whatever adapter_dtype says (PEFT casts only to floating base weights).
    q32, qfp = qlora4
    q16 = compose("train", [*LLAVA, "recipe=qlora", "model.quantize=4bit", "recipe.adapter_dtype=base"])
    assert per_gpu(q32, "ddp", 1, qfp) == per_gpu(q16, "ddp", 1, qfp)


def test_deepspeed_shards_the_optimizer_not_the_weights(lora8):
    cfg, fp = lora8
    zero2 = [per_gpu(cfg, "deepspeed_stage2", n, fp) for n in GPUS]
    assert all(a.optimizer > b.optimizer for a, b in pairwise(zero2))
    assert zero2[0].optimizer == 81_788_928  # fp32 master + AdamW's two fp32 states: 12 B x LORA_R8
    assert len({b.weights for b in zero2}) == 1


def test_activations_pin_the_bench_configs(lora8, qwen8):
    """bench/gpu_memory.py's two configs (batch 1 x 1024 tokens, checkpointing, one GPU): what the estimator
    gives, against the H200's step peaks in bench/results/gpu_memory.json (14.94 and 6.11 GiB).

    Checkpointed inputs of every layer (layers x 1024 tokens x hidden x 2 B), then the loss's three fp32
    logits copies (3 x 4 B x 1024 x vocab, larger than a recomputed layer in both): the Korthikanti layer
    adds nothing.
    LLaVA-Med: 32 x 1024 x 4096 x 2 = 268,435,456 + 12 x 1024 x 32,064 = 394,002,432.
    Qwen2-VL-2B: 28 x 1024 x 1536 x 2 = 88,080,384 + 12 x 1024 x 151,936 = 1,866,989,568.
    """
    for (cfg, fp), acts, gib in ((lora8, 268_435_456 + 394_002_432, (0.617, 14.838)),
                                 (qwen8, 88_080_384 + 1_866_989_568, (1.821, 5.976))):
        b = per_gpu(cfg, "ddp", 1, fp)
        assert b.activations == acts
        assert (round(b.activations / GIB, 3), round(b.total / GIB, 3)) == gib


def test_logits_term_scales_with_vocab_times_tokens(compose, qwen8):
    # fp32 log-softmax, its gradient, the logits' gradient: 3 x 4 B x 1024 x 151,936
    assert logits_bytes(1024, 151936) == 1_866_989_568
    assert logits_bytes(2048, 151936) == logits_bytes(1024, 2 * 151936) == 3_733_979_136
    cfg = compose("train", ["model=qwen2_vl_2b", *LLAVA[1:], "recipe=lora_r8"])  # its own, mutated below
    fp = qwen8[1]
    text = fp.model.config.get_text_config()
    try:
        _vocab_free_rest(cfg, fp, text)
    finally:
        text.vocab_size = 151936  # the module's shared meta model


def _vocab_free_rest(cfg, fp, text):
    for checkpointing in (True, False):
        cfg.gradient_checkpointing = checkpointing
        base = {}
        for vocab in (151936, 2 * 151936):
            text.vocab_size = vocab  # only the size activation_bytes reads (the meta model is not run)
            for b, s in ((1, 1024), (2, 1024), (1, 2048)):
                cfg.data.batch_size, cfg.data.max_length = b, s
                rest = activation_bytes(cfg, fp, 2) - logits_bytes(b * s, vocab)
                # What is not the logits term does not depend on the vocabulary
                assert base.setdefault((b, s), rest) == rest
        text.vocab_size = 151936
    # A small vocabulary: the recomputed layer, not the logits, sets the checkpointed peak. Korthikanti's
    # s x h x (34 + 5 a s / h) = 1024 x 1536 x (34 + 5 x 12 x 1024 / 1536 = 74) = 116,391,936, over the
    # checkpoints 88,080,384.
    cfg.gradient_checkpointing, cfg.data.batch_size, cfg.data.max_length = True, 1, 1024
    text.vocab_size = 1000
    assert activation_bytes(cfg, fp, 2) == 88_080_384 + 116_391_936


def test_gradient_checkpointing_lowers_activations(compose, lora8):
    on, fp = lora8
    off = compose("train", [*LLAVA, "recipe=lora_r8", "gradient_checkpointing=false"])
    assert per_gpu(on, "ddp", 1, fp).activations < per_gpu(off, "ddp", 1, fp).activations / 4


def test_qlora_weights_are_a_fraction_of_bf16(compose, qlora4):
    qlora, q = qlora4
    bf16 = compose("train", [*LLAVA, "recipe=lora_r16_attn_mlp"])  # the same adapters on a bf16 base
    b = count_params(bf16)
    assert q.trainable == b.trainable
    quantized = sum(p.numel for p in q.params if p.kind == "nf4")
    assert quantized > 0.9 * q.total  # the language model's linears
    ratio = per_gpu(qlora, "ddp", 1, q).weights / per_gpu(bf16, "ddp", 1, b).weights
    # NF4 alone would be ~1/4 of bf16; prepare_model_for_kbit_training upcasts the unquantized rest (vision
    # tower, embeddings, LM head) to fp32, which lifts the whole to ~0.4.
    assert NF4_BYTES / 2 < ratio < 0.45
    with pytest.raises(ValueError, match="model.quantize=4bit"):
        count_params(compose("train", [*LLAVA, "recipe=qlora"]))


def test_full_finetune_needs_far_more_than_lora(compose, lora8):
    full = compose("train", [*LLAVA, "recipe=s1_full"])
    lora, lo = lora8
    f = count_params(full)
    assert f.trainable > 0.9 * f.total and lo.trainable < 0.001 * lo.total
    for n in (1, 8):
        assert per_gpu(full, "ddp", n, f).total > 3 * per_gpu(lora, "ddp", n, lo).total
    assert per_gpu(full, "deepspeed_stage2", 8, f).total < per_gpu(full, "ddp", 8, f).total / 2


def test_unknown_strategy_is_named(lora8):
    cfg, fp = lora8
    with pytest.raises(ValueError, match=r"'ddpp'.*'ddp', 'deepspeed_stage2', 'fsdp'"):
        per_gpu(cfg, "ddpp", 2, fp)


def test_cli_prints_a_row_per_strategy_and_gpu_count(capsys):
    main([*LLAVA, "recipe=lora_r8", "--gpus", "1,8"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "GPUs" not in line]
    assert [r.split(" | ")[1] for r in rows] == ["1", "8"] * 3
    assert "6,815,744 trainable" in out and "model.dtype=float32" in out
    assert "| fsdp ¹ (recipe.adapter_dtype=base) | 8 |" in out
    with pytest.raises(SystemExit):
        main(["model=llava_med", "recipe=lora_r8", "data.max_length=384"])
    err = capsys.readouterr().err
    assert "576 image tokens" in err and "data.max_length=1024" in err
