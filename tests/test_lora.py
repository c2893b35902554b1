"""LoRA on tiny VLMs: what gets adapters, gradients, adapter round trips, merging, recipes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mvqa.models.load import load_model
from mvqa.models.lora import (
    attach_lora,
    count_parameters,
    load_adapter,
    merge_and_export,
    optimizer_groups,
    prepare_trainable,
    save_adapter,
)
from mvqa.models.tiny import tiny_conf
from mvqa.schemas.model import ModelConf
from mvqa.schemas.recipe import RecipeConf

CORPUS = [
    "What organ is shown in this CT image? The liver.",
    "The MRI shows a lesion in the left lung.",
    "Answer with the letter of the correct choice.",
] * 20
LM_PROJ = r"model\.language_model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("lora-models")


def base(family, cache, **fields):
    return load_model(tiny_conf(family, size="unit", cache_dir=str(cache), tokenizer_corpus=CORPUS, **fields))


def batch(bundle):
    msgs = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which organ?"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "<think>the liver</think><answer>A</answer>"}],
        },
    ]
    text = bundle.processor.apply_chat_template(msgs, tokenize=False)
    image = Image.linear_gradient("L").convert("RGB").resize((48, 40))
    enc = dict(bundle.processor(text=[text], images=[image], return_tensors="pt", add_special_tokens=False))
    enc["labels"] = enc["input_ids"].clone()
    return enc


def randomize_adapter(model, seed=0):
    """LoRA B starts at zero (adapter = identity); make it non-trivial so round trips prove something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
@pytest.mark.parametrize("target", ["attn", "attn_mlp"])
def test_only_language_model_projections_get_adapters(cache, family, target):
    model = attach_lora(base(family, cache).model, RecipeConf(target=target))
    adapted = [n.removeprefix("base_model.model.") for n, m in model.named_modules() if hasattr(m, "lora_A")]
    import re

    assert adapted and all(re.fullmatch(LM_PROJ, n) for n in adapted)
    assert any("mlp" in n for n in adapted) == (target == "attn_mlp")
    assert len(adapted) == 2 * (4 if target == "attn" else 7)  # two layers
    # the vision towers have q/k/v projections (CLIP) or a fused qkv (Qwen2-VL) that must stay untouched
    assert not any("vision_tower" in n or "visual" in n for n in adapted)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_gradients_reach_lora_only_and_base_stays_frozen(cache, family):
    bundle = base(family, cache)
    model = attach_lora(bundle.model, RecipeConf())
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    model.train()
    model(**batch(bundle)).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all("lora_" in n for n in with_grad)
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if "lora_" not in n)


def test_projector_trained_in_full_when_asked(cache):
    bundle = base("llava", cache)
    model = attach_lora(bundle.model, RecipeConf(train_projector=True, lr=1e-3, projector_lr=1e-4))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    projector = {n for n in trainable if "multi_modal_projector.modules_to_save" in n}
    assert len(projector) == 4 and trainable - projector == {n for n in trainable if "lora_" in n}
    model.train()
    model(**batch(bundle)).loss.backward()
    assert all(dict(model.named_parameters())[n].grad.abs().sum() > 0 for n in projector)
    groups = optimizer_groups(model, RecipeConf(lr=1e-3, projector_lr=1e-4))
    assert [g["lr"] for g in groups] == [1e-3, 1e-4] and len(groups[1]["params"]) == 4


def test_trainable_token_rows(cache):
    bundle = base("llava", cache)
    ids = bundle.tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    plain, _ = count_parameters(attach_lora(base("llava", cache).model, RecipeConf()))
    with_rows, _ = count_parameters(attach_lora(bundle.model, RecipeConf(), train_token_ids=ids))
    hidden = bundle.model.config.text_config.hidden_size
    assert with_rows - plain == 2 * len(ids) * hidden  # embedding rows and LM-head rows


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_adapter_round_trip_and_merge(cache, tmp_path, family):
    bundle = base(family, cache)
    inputs = batch(bundle)
    inputs.pop("labels")
    model = attach_lora(bundle.model, RecipeConf(train_projector=True))
    randomize_adapter(model)
    model.eval()
    with torch.no_grad():
        expected = model(**inputs).logits
        plain = load_model(tiny_conf(family, size="unit", cache_dir=str(cache), tokenizer_corpus=CORPUS))
        assert not torch.allclose(plain.model(**inputs).logits, expected)  # the adapter changes the output

    save_adapter(model, tmp_path / "adapter")
    saved = save_adapter(model, tmp_path / "adapter")  # overwriting swaps the dir in whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    files = sorted(p.name for p in saved.iterdir())
    assert files == ["README.md", "adapter_config.json", "adapter_model.safetensors", "mvqa_adapter.json"]
    from safetensors import safe_open

    with safe_open(saved / "adapter_model.safetensors", "pt") as f:
        names = f.keys()
    assert all(
        "lora_" in k or "multi_modal_projector" in k or "merger" in k for k in names
    )  # no base weights

    conf = tiny_conf(family, size="unit", cache_dir=str(cache), tokenizer_corpus=CORPUS, adapter=str(saved))
    reloaded = load_model(conf)  # model.adapter=PATH
    with torch.no_grad():
        assert torch.equal(reloaded.model(**inputs).logits, expected)

    out = merge_and_export(model, bundle.processor, tmp_path / "merged")
    merged = load_model(ModelConf(name="merged", family=family, path=str(out)))
    assert not hasattr(merged.model, "peft_config")
    with torch.no_grad():
        torch.testing.assert_close(merged.model(**inputs).logits, expected, atol=1e-5, rtol=1e-4)


def test_adapter_for_another_base_fails_naming_both(cache, tmp_path):
    llava = attach_lora(base("llava", cache).model, RecipeConf())
    path = save_adapter(llava, tmp_path / "adapter")
    qwen = base("qwen2_vl", cache).model
    with pytest.raises(ValueError, match=r"tiny_llava-.*\(llava\).*tiny_qwen2_vl-.*\(qwen2_vl\)"):
        load_adapter(qwen, path)
    wider = base("llava", cache, hidden=32, heads=2, kv_heads=1).model  # same family, other shapes
    with pytest.raises(ValueError, match=r"trained on '.*tiny_llava-\w+'.*the base is '.*tiny_llava-\w+'"):
        load_adapter(wider, path)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(qwen, tmp_path / "missing")


def test_full_recipe_trains_language_model_and_projector_not_vision(cache):
    model = prepare_trainable(base("qwen2_vl", cache).model, RecipeConf(method="full", train_projector=True))
    state = {n: p.requires_grad for n, p in model.named_parameters()}
    assert not any(v for n, v in state.items() if n.startswith("model.visual.") and ".merger." not in n)
    assert all(v for n, v in state.items() if ".merger." in n or n.startswith("model.language_model."))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU error path")
def test_qlora_without_cuda_is_a_clear_error(cache):
    with pytest.raises(RuntimeError, match="QLoRA needs a CUDA GPU"):
        attach_lora(base("llava", cache).model, RecipeConf(method="qlora"))
    with pytest.raises(RuntimeError, match="QLoRA needs a CUDA GPU"):
        load_model(
            tiny_conf("llava", size="unit", cache_dir=str(cache), tokenizer_corpus=CORPUS, quantize="4bit")
        )


def test_recipe_options(compose):
    r = compose("common", ["+recipe=llava_lora_r128"]).recipe
    assert (r.r, r.alpha, r.lr, r.projector_lr, r.warmup_ratio, r.scheduler, r.epochs, r.train_projector) == (
        128,
        256,
        2e-4,
        2e-5,
        0.03,
        "cosine",
        1,
        True,
    )
    s1 = compose("common", ["+recipe=s1_full"]).recipe
    assert (s1.method, s1.lr, s1.epochs, s1.warmup_ratio, s1.weight_decay, list(s1.betas)) == (
        "full",
        1e-5,
        5,
        0.05,
        1e-4,
        [0.9, 0.95],
    )
    assert compose("common", ["+recipe=lora_r8"]).recipe.r == 8
    assert compose("common", ["+recipe=lora_r16_attn_mlp"]).recipe.target == "attn_mlp"
    assert compose("common", ["+recipe=qlora"]).recipe.method == "qlora"
