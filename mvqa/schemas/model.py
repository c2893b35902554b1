"""Schemas of the `model/` group: pretrained checkpoints (hub id or local dir), tiny models built offline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

GROUP = "model"


@dataclass
class ModelConf:
    name: str = MISSING
    family: str = MISSING  # llava | qwen2_vl: which transformers model and processor classes
    path: str | None = (
        None  # hub id or local dir of an HF-format checkpoint (tiny models: null, built on use)
    )
    subfolder: str = ""
    revision: str | None = None
    processor_path: str | None = None  # where the processor lives when not next to the weights
    adapter: str | None = None  # a saved PEFT adapter dir, loaded onto the base
    # An adapter whose recorded base-weight fingerprint differs from this base's: warn | error.
    adapter_base_check: str = "warn"
    dtype: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU; or float32 | bfloat16 | float16
    device_map: Any = None
    attn_implementation: str | None = None  # null: transformers' default (sdpa)
    trust_remote_code: bool = False
    local_files_only: bool = False
    quantize: str | None = None  # 4bit: bitsandbytes NF4 for QLoRA (CUDA only)
    chat_template: str | None = None  # a name in mvqa.models.chat_templates; null keeps the checkpoint's own
    image_size: int | None = None  # Qwen2-VL family: resize images to this square first (Med-R1: 384)
    # Missing think/answer/pad tokens: add them and resize the embeddings (true), or raise (false).
    add_special_tokens: bool = True
    # The model writes <think>/<answer> as plain text (Med-R1, Qwen2-VL): leave its vocabulary alone.
    think_tokens_as_text: bool = False
    download_hint: str = ""  # how to get the weights, shown when they are absent
    # The HF config (sub-configs included) of the real architecture, to build it on the meta device.
    architecture: dict[str, Any] = field(default_factory=dict)


@dataclass
class TinyModelConf(ModelConf):
    """A random-init VLM built offline on first use and cached; null dims come from the `size` preset."""

    size: str = "demo"  # unit (~0.2M params, 32 px images) | demo (a few M, 64 px)
    hidden: int | None = None
    layers: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    intermediate: int | None = None
    vision_hidden: int | None = None
    vision_layers: int | None = None
    vision_heads: int | None = None
    image_size: int | None = None
    patch: int | None = None
    vocab_size: int | None = None
    seed: int = 0
    cache_dir: str = "${paths.cache}/models"
    # A list of strings, or a `_target_` node returning one: the tokenizer's training text.
    tokenizer_corpus: Any = field(
        default_factory=lambda: {
            "_target_": "mvqa.data.synthetic.synthetic_corpus",
            "seed": 0,
            "n_items": 2000,
        }
    )


SCHEMAS = {"schema_model": ModelConf, "schema_tiny_model": TinyModelConf}
