"""FSDP with LoRA on a bf16 base: one dtype per flattened unit (recipe.adapter_dtype=base), checked before
wrapping, and a real two-rank FULL_SHARD run on CPU (gloo) with conf/trainer/fsdp.yaml's auto-wrap classes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from mvqa.config import CONFIG_DIR
from mvqa.models.load import load_model
from mvqa.models.lora import prepare_trainable
from mvqa.models.tiny import tiny_conf
from mvqa.schemas.recipe import RecipeConf
from mvqa.train.module import VQAFineTuner
from mvqa.train.strategies import check_fsdp_dtypes, decoder_layer_classes, unit_dtypes

CORPUS = ["What organ is shown in this CT image? The liver.",
          "Answer with the letter of the correct choice."] * 20
FSDP_CONF = OmegaConf.load(CONFIG_DIR / "trainer" / "fsdp.yaml")
WRAP = decoder_layer_classes(list(FSDP_CONF.strategy.auto_wrap_policy.names))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fsdp-models"))


def bf16_base(cache):
    return load_model(
        tiny_conf("llava", size="unit", cache_dir=cache, tokenizer_corpus=CORPUS, dtype="bfloat16"))


def lora(cache, **recipe):
    return prepare_trainable(bf16_base(cache).model, RecipeConf(**recipe))


def batch(bundle) -> dict[str, torch.Tensor]:
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which organ?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "The liver."}]}]
    text = bundle.processor.apply_chat_template(msgs, tokenize=False)
    image = Image.linear_gradient("L").convert("RGB").resize((48, 40))
    enc = dict(bundle.processor(text=[text], images=[image], return_tensors="pt", add_special_tokens=False))
    enc["labels"] = enc["input_ids"].clone()
    return enc


def test_adapter_dtype_base_gives_every_fsdp_unit_one_dtype(cache):
    bf16, fp32 = torch.bfloat16, torch.float32
    default = unit_dtypes(lora(cache), WRAP)
    layers = [u for u in default if u]
    assert len(layers) == 2 and all(default[u] == {bf16, fp32} for u in layers)  # PEFT's fp32 adapters
    assert default[""] == {bf16}  # the root: vision tower, projector, embeddings, LM head
    for extra in ({}, {"train_projector": True, "target": "attn_mlp"}):
        model = lora(cache, adapter_dtype="base", **extra)
        assert all(dtypes == {bf16} for dtypes in unit_dtypes(model, WRAP).values())
        assert all(p.dtype == bf16 for n, p in model.named_parameters() if "lora_" in n)
    with pytest.raises(ValueError, match=r"recipe.adapter_dtype must be one of \['float32', 'base'\]"):
        lora(cache, adapter_dtype="bf16")


def test_the_fsdp_trainer_fails_before_wrapping_and_names_the_fix(cache):
    strategy = instantiate(FSDP_CONF.strategy)  # what trainer=fsdp builds
    model = lora(cache)
    with pytest.raises(ValueError, match=r"layers.0' holds bfloat16 and float32.*recipe.adapter_dtype=base.*"
                                         r"model.dtype=float32"):
        check_fsdp_dtypes(model, strategy)
    # The training module runs the check in its setup hook, which Lightning calls before the strategy wraps
    # it.
    module = VQAFineTuner(model, None, RecipeConf())
    module.trainer = SimpleNamespace(strategy=strategy)
    with pytest.raises(ValueError, match="recipe.adapter_dtype=base"):
        module.setup("fit")
    check_fsdp_dtypes(lora(cache, adapter_dtype="base"), strategy)
    from pytorch_lightning.strategies import DDPStrategy

    check_fsdp_dtypes(model, DDPStrategy())  # DDP replicates: mixed dtypes are fine


def _rank(rank: int, world: int, init_file: str, cache: str, inputs: dict, out_file: str) -> None:
    from torch.distributed.fsdp import FullyShardedDataParallel, MixedPrecision, ShardingStrategy
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        def wrap(module):
            return FullyShardedDataParallel(module, auto_wrap_policy=ModuleWrapPolicy(WRAP),
                                            use_orig_params=True,
                                            sharding_strategy=ShardingStrategy.FULL_SHARD,
                                            # bf16-mixed
                                            mixed_precision=MixedPrecision(*[torch.bfloat16] * 3),
                                            device_id=torch.device("cpu"))

        # the original failure
        with pytest.raises(ValueError, match="Must flatten tensors with uniform dtype"):
            wrap(VQAFineTuner(lora(cache), None, RecipeConf()))
        recipe = RecipeConf(adapter_dtype="base")
        # As the README's 7B commands train: gradient checkpointing on (HF's, non-reentrant, set before
        # wrapping).
        module = VQAFineTuner(lora(cache, adapter_dtype="base"), None, recipe, gradient_checkpointing=True)
        module.on_fit_start()  # train mode, as Lightning starts a fit (checkpointing only runs in train mode)
        before = {n: p.detach().clone() for n, p in module.named_parameters() if "lora_B" in n}
        fsdp = wrap(module)
        module.trainer = SimpleNamespace(model=fsdp)
        optimizer = torch.optim.AdamW([p for p in fsdp.parameters() if p.requires_grad], lr=1e-2)
        loss = fsdp(inputs)
        loss.loss.backward()
        norm = float(fsdp.clip_grad_norm_(float("inf")))  # measures, clips nothing
        # Lightning's plugin refuses norm under FSDP
        module.configure_gradient_clipping(optimizer, 1e-3, "norm")
        clipped = float(fsdp.clip_grad_norm_(float("inf")))
        grad_dtypes = {p.grad.dtype for p in fsdp.parameters() if p.grad is not None}
        checkpointed = [m.gradient_checkpointing for m in fsdp.modules() if isinstance(m, tuple(WRAP))]
        optimizer.step()
        state = fsdp.state_dict()  # a full state dict, as checkpoints and save_adapter take it
        if rank == 0:
            changed = [n for n in before if n in state and not torch.equal(state[n], before[n])]
            figures = {"loss": float(loss.loss), "norm": norm, "clipped": clipped, "grad_dtypes": grad_dtypes,
                       "changed": changed, "n_lora_B": len(before), "n_state": len(state),
                       "state_dtypes": {v.dtype for v in state.values()}, "checkpointed": checkpointed}
            torch.save(figures, out_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_rank_full_shard_trains_lora_on_a_bf16_base(cache, tmp_path):
    bundle = bf16_base(cache)  # built once: the ranks load it from the cache
    # Spawned, not forked: forked after earlier tests ran OpenMP-parallel ops, the ranks hung in their
    # collectives. Rank 0 writes its figures to a file (start_processes raises if a rank fails).
    mp.start_processes(_rank, args=(2, str(tmp_path / "fsdp-init"), cache, batch(bundle),
                                    str(tmp_path / "rank0.pt")), nprocs=2, start_method="spawn")
    out = torch.load(tmp_path / "rank0.pt", weights_only=False)
    assert torch.isfinite(torch.tensor(out["loss"])) and out["norm"] > 1e-3
    assert out["clipped"] == pytest.approx(1e-3, rel=0.05)  # clipped over both ranks' shards
    assert out["grad_dtypes"] == {torch.bfloat16}
    assert out["checkpointed"] == [True, True]
    assert out["n_lora_B"] > 0 and len(out["changed"]) == out["n_lora_B"]  # lora_B starts at zero and moved
    assert out["state_dtypes"] == {torch.bfloat16}
    assert out["n_state"] == len(bundle.model.state_dict()) + 2 * 4 * 2  # + lora_A/B on q/k/v/o of 2 layers
