"""LLaVA-Med conversion: a tiny checkpoint in the original `llava_mistral` layout, converted, must compute
what the original code computes (CLIP layer -2 without CLS, mlp2x_gelu projector, spliced into Mistral)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
)

from mvqa.models.convert_llava_med import convert
from mvqa.models.convert_llava_med import main as convert_main
from mvqa.models.load import load_model
from mvqa.models.tiny import train_tokenizer
from mvqa.schemas.model import ModelConf

CORPUS = ["What organ is shown in this CT image? The liver.", "The MRI shows a lesion in the left lung."] * 20
MISTRAL = {
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "rope_theta": 1e6,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
}
CLIP = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
    "projection_dim": 32,
    "hidden_act": "quick_gelu",
}


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """Weights, config and tokenizer of a tiny llava_mistral checkpoint, laid out as the original release."""
    root = tmp_path_factory.mktemp("llava-med-orig")
    tower_dir, src = root / "clip", root / "orig"
    CLIPVisionConfig(**CLIP).save_pretrained(tower_dir)
    torch.manual_seed(0)
    clip = CLIPVisionModel(CLIPVisionConfig(**CLIP))
    lm = MistralForCausalLM(MistralConfig(**MISTRAL, bos_token_id=0, eos_token_id=1))
    proj = {
        "model.mm_projector.0.weight": torch.randn(64, 32) * 0.2,
        "model.mm_projector.0.bias": torch.randn(64),
        "model.mm_projector.2.weight": torch.randn(64, 64) * 0.2,
        "model.mm_projector.2.bias": torch.randn(64),
    }
    weights = {
        **lm.state_dict(),
        **proj,
        **{f"model.vision_tower.vision_tower.vision_model.{k}": v for k, v in clip.state_dict().items()},
    }
    src.mkdir()
    keys = sorted(weights)
    half = len(keys) // 2  # sharded like the release
    save_file({k: weights[k].contiguous() for k in keys[:half]}, src / "model-00001-of-00002.safetensors")
    save_file({k: weights[k].contiguous() for k in keys[half:]}, src / "model-00002-of-00002.safetensors")
    config = {
        **MISTRAL,
        "architectures": ["LlavaMistralForCausalLM"],
        "model_type": "llava_mistral",
        "bos_token_id": 0,
        "eos_token_id": 1,
        "mm_vision_tower": str(tower_dir),
        "mm_hidden_size": 32,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "image_aspect_ratio": "pad",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "tokenizer_model_max_length": 2048,
    }
    (src / "config.json").write_text(json.dumps(config))
    tok = train_tokenizer(CORPUS, MISTRAL["vocab_size"], ["<s>", "</s>", "<unk>"])
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(src)
    return src, weights


def original_logits(weights, input_ids, image_token_id, pixel_values):
    """LLaVA's own computation, from the original weights by their original names."""
    clip = CLIPVisionModel(CLIPVisionConfig(**CLIP))
    prefix = "model.vision_tower.vision_tower.vision_model."
    clip.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)})
    lm = MistralForCausalLM(MistralConfig(**MISTRAL, bos_token_id=0, eos_token_id=1))
    lm.load_state_dict(
        {k: v for k, v in weights.items() if not k.startswith(("model.mm_", "model.vision_tower"))}
    )
    feats = clip(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]  # select_feature "patch"
    feats = F.linear(
        F.gelu(F.linear(feats, weights["model.mm_projector.0.weight"], weights["model.mm_projector.0.bias"])),
        weights["model.mm_projector.2.weight"],
        weights["model.mm_projector.2.bias"],
    )
    is_image = input_ids[0] == image_token_id
    embeds = lm.get_input_embeddings()(torch.where(is_image, 0, input_ids[0]))
    embeds[is_image] = feats[0]
    return lm(inputs_embeds=embeds[None]).logits


@pytest.fixture(scope="module")
def converted(original, tmp_path_factory):
    src, _ = original
    return convert(src, tmp_path_factory.mktemp("llava-med-hf") / "out")


def test_converted_logits_equal_the_original_computation(original, converted):
    _, weights = original
    b = load_model(
        ModelConf(name="llava_med", family="llava", path=str(converted), chat_template="mistral_instruct")
    )
    msgs = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What organ is shown?"}]}
    ]
    text = b.processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == "<s>[INST] <image>\nWhat organ is shown? [/INST]"
    enc = b.processor(
        text=[text],
        images=[Image.linear_gradient("L").convert("RGB").resize((40, 24))],
        return_tensors="pt",
        add_special_tokens=False,
    )
    image_id = b.model.config.image_token_id
    assert int((enc["input_ids"] == image_id).sum()) == 16  # (32/8)^2, CLS dropped
    with torch.no_grad():
        got = b.model(**enc).logits
        want = original_logits(weights, enc["input_ids"], image_id, enc["pixel_values"])
    torch.testing.assert_close(got[..., : MISTRAL["vocab_size"]], want, atol=1e-5, rtol=1e-5)


def test_processor_pads_to_square_with_the_mean_colour_like_llava(converted):
    """LLaVA's expand2square (PIL, background = CLIP mean) followed by plain CLIP preprocessing."""
    b = load_model(ModelConf(name="llava_med", family="llava", path=str(converted)))
    image = Image.linear_gradient("L").convert("RGB").resize((40, 24))
    mean = tuple(int(x * 255) for x in b.processor.image_processor.image_mean)
    square = Image.new("RGB", (40, 40), mean)
    square.paste(image, (0, (40 - 24) // 2))
    clip = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    want = clip(square, return_tensors="pt")["pixel_values"]
    got = b.processor.image_processor(image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_converted_dir_is_plain_hf_format(converted):
    config = json.loads((converted / "config.json").read_text())
    assert config["model_type"] == "llava" and config["vision_feature_layer"] == -2
    assert config["text_config"]["vocab_size"] % 64 == 0  # <image>, <pad> added, padded to 64
    assert (converted / "chat_template.jinja").read_text().startswith("{{ bos_token }}")
    assert not list(converted.parent.glob(".*tmp*"))


def test_unsupported_original_is_refused_naming_the_key(original, tmp_path):
    src, _ = original
    bad = tmp_path / "bad"
    bad.mkdir()
    config = json.loads((src / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "mm_projector_type": "linear"}))
    with pytest.raises(ValueError, match=r"config.json: mm_projector_type='linear'"):
        convert(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_weights_are_named(original, tmp_path):
    src, weights = original
    partial = tmp_path / "partial"
    partial.mkdir()
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            (partial / f.name).write_bytes(f.read_bytes())
    save_file(
        {k: v.contiguous() for k, v in weights.items() if "vision_tower" not in k},
        partial / "model.safetensors",
    )
    with pytest.raises(ValueError, match=r"lacks \d+ weights.*model\.vision_tower\."):
        convert(partial, tmp_path / "out")


@pytest.mark.slow
def test_command_line(original, tmp_path, capsys):
    """`python -m mvqa.models.convert_llava_med --src SRC --dst DST`: its main(), in this process."""
    src, _ = original
    convert_main(["--src", str(src), "--dst", str(tmp_path / "cli")])
    said, written = capsys.readouterr().out.strip().split(" -> ")
    assert said == f"converted {src}" and Path(written).resolve() == (tmp_path / "cli").resolve()
    assert (tmp_path / "cli" / "model.safetensors").is_file()
