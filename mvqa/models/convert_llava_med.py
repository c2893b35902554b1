"""Convert an original LLaVA-Med v1.5 checkpoint (`llava_mistral`) to LlavaForConditionalGeneration format.

    python -m mvqa.models.convert_llava_med --src DIR --dst DIR

`microsoft/llava-med-v1.5-mistral-7b` stores Mistral's weights under `model.*`/`lm_head`, the CLIP tower under
`model.vision_tower.vision_tower.vision_model.*` and the mlp2x_gelu projector as `model.mm_projector.{0,2}`,
with a config that names the tower (`mm_vision_tower`) instead of describing it. The output is a dir that
`load_model` (and plain transformers) reads: weights, config, processor (pad-to-square CLIP preprocessing) and
the mistral_instruct chat template. `<image>` and `<pad>` are added to the vocabulary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors.torch import load_file
from transformers import (
    AddedToken,
    AutoTokenizer,
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    MistralConfig,
)

from mvqa.data.storage import write_dir_atomically
from mvqa.models.chat_templates import MISTRAL_INSTRUCT
from mvqa.models.processors import llava_image_processor

# Towers named by hub id, described here so conversion needs no download of the tower's own config.
KNOWN_VISION_TOWERS = {
    "openai/clip-vit-large-patch14-336": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 336,
        "patch_size": 14,
        "projection_dim": 768,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    },
}
TEXT_KEYS = [
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "rope_theta",
    "sliding_window",
    "attention_dropout",
    "bos_token_id",
    "eos_token_id",
    "tie_word_embeddings",
]
# original key prefix -> LlavaForConditionalGeneration's, first match wins
KEY_MAP = [
    ("model.vision_tower.vision_tower.vision_model.", "model.vision_tower."),
    ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
    ("model.", "model.language_model."),
    ("lm_head.", "lm_head."),
]
DROPPED_SUFFIXES = (".rotary_emb.inv_freq", "embeddings.position_ids")  # buffers, rebuilt by the model
PAD_TO = 64  # the vocab is padded to a multiple of 64, as transformers' own LLaVA conversion does


def _expect(orig: dict, key: str, allowed, src: Path) -> None:
    value = orig.get(key)
    if value not in allowed:
        raise ValueError(
            f"{src / 'config.json'}: {key}={value!r} is not supported; expected one of {allowed}"
        )


def read_original_config(src: Path) -> dict:
    path = src / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --src must be an original LLaVA-Med checkpoint dir")
    orig = json.loads(path.read_text())
    _expect(orig, "model_type", ["llava_mistral"], src)
    _expect(orig, "mm_projector_type", ["mlp2x_gelu"], src)
    _expect(orig, "mm_vision_select_feature", ["patch", None], src)
    _expect(orig, "mm_use_im_start_end", [False, None], src)
    return orig


def vision_config(tower: str, src: Path) -> CLIPVisionConfig:
    if tower in KNOWN_VISION_TOWERS:
        return CLIPVisionConfig(**KNOWN_VISION_TOWERS[tower])
    if Path(tower).is_dir():  # the original code also accepts a local tower dir
        return CLIPVisionConfig.from_pretrained(tower)
    raise ValueError(
        f"{src / 'config.json'}: mm_vision_tower {tower!r} is neither a local dir nor one of "
        f"{sorted(KNOWN_VISION_TOWERS)}"
    )


def llava_config(orig: dict, src: Path) -> LlavaConfig:
    text = MistralConfig(**{k: orig[k] for k in TEXT_KEYS if k in orig})
    return LlavaConfig(
        vision_config=vision_config(orig["mm_vision_tower"], src),
        text_config=text,
        vision_feature_layer=orig.get("mm_vision_select_layer", -2),
        vision_feature_select_strategy="default",  # "patch": the CLS feature is dropped
        projector_hidden_act="gelu",  # mlp2x_gelu = Linear, GELU, Linear
        multimodal_projector_bias=True,
    )


def convert_state_dict(original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in original.items():
        if key.endswith(DROPPED_SUFFIXES):
            continue
        prefix = next((p for p, _ in KEY_MAP if key.startswith(p)), None)
        if prefix is None:
            raise ValueError(f"unexpected weight {key!r} in the original checkpoint")
        out[dict(KEY_MAP)[prefix] + key[len(prefix) :]] = value
    return out


def load_original_weights(src: Path) -> dict[str, torch.Tensor]:
    files = sorted(src.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"no *.safetensors in {src}: the LLaVA-Med v1.5 release ships safetensors shards"
        )
    weights = {}
    for f in files:
        weights.update(load_file(f))
    return weights


@torch.no_grad()
def convert(src: str | Path, dst: str | Path) -> Path:
    src, dst = Path(src), Path(dst)
    orig = read_original_config(src)
    config = llava_config(orig, src)
    tokenizer = AutoTokenizer.from_pretrained(src)
    tokenizer.add_tokens([AddedToken("<image>", special=True, normalized=False)], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
    config.image_token_id = tokenizer.convert_tokens_to_ids("<image>")

    weights = convert_state_dict(load_original_weights(src))
    dtype = next(iter(weights.values())).dtype
    with init_empty_weights(include_buffers=False):  # weights come from the checkpoint; buffers are built
        model = LlavaForConditionalGeneration(config)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = sorted(set(model.state_dict()) - set(weights) - tied)
    if missing:
        raise ValueError(
            f"{src}: the checkpoint lacks {len(missing)} weights the model needs, e.g. {missing[:5]}"
        )
    model.load_state_dict(weights, strict=False, assign=True)
    model.to(dtype)
    old = config.text_config.vocab_size
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=PAD_TO, mean_resizing=False)
    for w in {
        id(t): t for t in (model.get_input_embeddings().weight, model.get_output_embeddings().weight)
    }.values():
        w[old:] = w[:old].mean(0)  # new rows (image, pad, padding) start at the mean: deterministic, harmless
    model.config.text_config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id

    processor = LlavaProcessor(
        image_processor=llava_image_processor(
            config.vision_config.image_size, pad_to_square=orig.get("image_aspect_ratio") == "pad"
        ),
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=MISTRAL_INSTRUCT,
    )

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)

    return write_dir_atomically(write, dst)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--src", required=True, help="original checkpoint dir (microsoft/llava-med-v1.5-mistral-7b)"
    )
    parser.add_argument("--dst", required=True, help="output dir, HF LlavaForConditionalGeneration format")
    args = parser.parse_args(argv)
    print(f"converted {args.src} -> {convert(args.src, args.dst)}")


if __name__ == "__main__":
    main()
