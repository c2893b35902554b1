"""What every model loader returns, so curation, training and evaluation never care which VLM they got."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SpecialTokens:
    """The strings that delimit the image, the reasoning and the answer for one model.

    They are single added tokens in the tiny models; in real checkpoints (Med-R1 writes `<think>` as plain
    text) they may tokenize to several ids, so consumers must match them as token sequences.
    """

    image: str = "<image>"
    think_start: str = "<think>"
    think_end: str = "</think>"
    answer_start: str = "<answer>"
    answer_end: str = "</answer>"
    pad: str = "<pad>"


@dataclass
class ModelBundle:
    """(model, processor, chat template, special tokens) for one entry of the `model/` group."""

    model: Any  # a transformers PreTrainedModel (possibly wrapped by PEFT)
    processor: Any  # a ProcessorMixin taking text and images; `.tokenizer` is its tokenizer
    chat_template: str  # jinja, also set on the processor so `apply_chat_template` uses it
    special_tokens: SpecialTokens = field(default_factory=SpecialTokens)
    name: str = ""
    source: str = ""  # hub id or local path it was loaded from
    # PEFT adapter name -> the dir it was loaded from: engine=vllm loads adapters from disk, not from memory.
    adapter_dirs: dict[str, str] = field(default_factory=dict)

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)
