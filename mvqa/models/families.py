"""What the project knows about each model family, in one record per family.

load.py picks the transformers classes and the modules left out of quantization from it, lora.py the vision
tower and projector it never adapts (or trains as a whole), tiny.py the tokens, chat template and end-of-turn
token a from-scratch model of the family needs. A new family is one entry in FAMILIES.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import (
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)

from mvqa.models.processors import Qwen2VLImageOnlyProcessor

# The language model's decoder layers and their projections, the same names in both families: LoRA targets.
LM_LAYERS = r"model\.language_model\.layers\.\d+"
ATTN = r"self_attn\.(q_proj|k_proj|v_proj|o_proj)"
MLP = r"mlp\.(gate_proj|up_proj|down_proj)"
LORA_TARGETS = {"attn": ATTN, "attn_mlp": f"({ATTN}|{MLP})"}


@dataclass(frozen=True)
class Family:
    model_class: type
    config_class: type
    processor_class: type
    vision_module: str  # below `model.`: not quantized, never given adapters
    # a module name (inside the vision tower for Qwen2-VL); recipe.train_projector trains it
    projector_module: str
    chat_template: str  # the name in mvqa.models.chat_templates a tiny model of the family gets
    tokens: tuple[str, ...]  # the tokens its processor and chat template need, besides pad/bos/eos/unk
    end_of_turn: str | None  # the chat template's end-of-turn token, the tokenizer's eos; None: the base eos
    # The words its chat template adds around every turn (BPE learns them whole in a tiny model's tokenizer).
    template_words: str

    @property
    def vision_prefix(self) -> str:
        return f"model.{self.vision_module}."


FAMILIES = {
    "llava": Family(
        LlavaForConditionalGeneration, LlavaConfig, LlavaProcessor, vision_module="vision_tower",
        projector_module="multi_modal_projector", chat_template="mistral_instruct", tokens=("<image>",),
        end_of_turn=None, template_words="[INST] [/INST]",
    ),
    "qwen2_vl": Family(
        Qwen2VLForConditionalGeneration, Qwen2VLConfig, Qwen2VLImageOnlyProcessor, vision_module="visual",
        projector_module="merger", chat_template="qwen2_vl",
        tokens=("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                "<|video_pad|>"),
        end_of_turn="<|im_end|>", template_words="system\nYou are a helpful assistant.\nuser\nassistant\n",
    ),
}


def family_named(name: str, what: str = "model") -> Family:
    if name not in FAMILIES:
        raise ValueError(f"{what}: unknown family {name!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[name]
