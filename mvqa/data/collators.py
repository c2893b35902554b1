"""Batches for LLaVA-style and Qwen2-VL-style processors, with TRL-style completion-only labels.

Each example is encoded on its own: the chat-templated prompt goes through the processor with its image (which
expands the image placeholder into the model's image tokens), the target (opening, thinking, closing and the
template's end of turn) through the tokenizer. Labels are -100 on the prompt, the image tokens and padding, so
the loss falls on the assistant's tokens only. Training pads on the right, generation on the left.
A sequence over `max_length` loses thinking tokens, never its prompt or answer. `max_length` counts the image
tokens the processor expands the placeholder into (576 for LLaVA-Med's CLIP ViT-L/14-336).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from mvqa.data.images import load_image
from mvqa.data.prompts import chat_prompt, end_of_turn
from mvqa.data.prompts import format_question as default_format_question
from mvqa.data.records import VQAItem

IGNORE_INDEX = -100
# Processor outputs with one value per prompt token (Qwen2-VL marks its image tokens this way).
PER_TOKEN = ("mm_token_type_ids", "token_type_ids")


def image_token_id(processor) -> int | None:
    """The id of the token an image placeholder expands into (`<image>`, `<|image_pad|>`), if the processor
    has one."""
    token_id = getattr(processor, "image_token_id", None)
    token = getattr(processor, "image_token", None)
    if token_id is None and token:
        token_id = getattr(processor, "tokenizer", processor).convert_tokens_to_ids(token)
    return token_id


def suggested_max_length(needed: int) -> int:
    """A round `data.max_length` that holds `needed` tokens: the next multiple of 256."""
    return -(-needed // 256) * 256


@dataclass
class TooLong:
    """An example whose prompt and answer alone exceed max_length (its thinking is not even counted)."""

    item_id: str
    image_tokens: int  # of the prompt, as the processor expanded the placeholder
    required: int  # prompt + opening + closing: the least max_length that keeps the example
    full: int  # with all of its thinking


@dataclass
class EncodingStats:
    truncated: int = 0  # thinking cut to fit max_length
    too_long: list[str] = field(default_factory=list)  # prompt + answer alone exceed max_length


class VQACollator:
    """Turns items into model inputs. mode="train" needs `item.extra["target"]` (see trace formatting)."""

    def __init__(self, processor, prompt_template: str, max_length: int = 512, mode: str = "train",
                 format_question=None) -> None:
        if mode not in ("train", "generate"):
            raise ValueError(f"collator mode must be 'train' or 'generate', got {mode!r}")
        format_question = format_question or default_format_question
        self.processor, self.prompt_template = processor, prompt_template
        self.max_length, self.mode = max_length, mode
        self.format_question = format_question
        self.tokenizer = getattr(processor, "tokenizer", processor)
        if self.tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token: the model config must name one")
        self.eot = end_of_turn(processor) if mode == "train" else ""
        self.image_token_id = image_token_id(processor)
        self.stats = EncodingStats()
        self._dropped: list[TooLong] = []  # this batch's

    def prompt_text(self, item: VQAItem) -> str:
        return chat_prompt(self.processor, self.format_question(item, self.prompt_template))

    def encode_prompt(self, item: VQAItem) -> dict[str, torch.Tensor]:
        enc = self.processor(text=[self.prompt_text(item)], images=[load_image(item)], return_tensors="pt",
                             add_special_tokens=False)
        return dict(enc)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def encode_train(self, item: VQAItem) -> dict[str, Any] | None:
        enc = self.encode_prompt(item)
        prompt = enc.pop("input_ids")[0].tolist()
        enc.pop("attention_mask", None)
        target = item.extra["target"]
        opening, thinking = self._ids(target["opening"]), self._ids(target["thinking"])
        closing = self._ids(target["closing"] + self.eot)
        required = len(prompt) + len(opening) + len(closing)
        room = self.max_length - required
        if room < 0:
            self.stats.too_long.append(item.id)
            images = prompt.count(self.image_token_id) if self.image_token_id is not None else 0
            self._dropped.append(TooLong(item.id, images, required, required + len(thinking)))
            return None
        if len(thinking) > room:
            thinking = thinking[:room]
            self.stats.truncated += 1
        completion = opening + thinking + closing
        return {"input_ids": prompt + completion, "labels": [IGNORE_INDEX] * len(prompt) + completion, **enc}

    def __call__(self, items: list[VQAItem]) -> dict[str, Any]:
        if self.mode == "generate":
            return self._batch([{"input_ids": e.pop("input_ids")[0].tolist(), **e}
                                for e in (self._strip_mask(self.encode_prompt(it)) for it in items)],
                               items, left=True)
        self._dropped = []
        encoded = [(it, self.encode_train(it)) for it in items]
        kept = [(it, e) for it, e in encoded if e is not None]
        if not kept:
            raise ValueError(self.too_long_message(self._dropped))
        return self._batch([e for _, e in kept], [it for it, _ in kept], left=False)

    def too_long_message(self, dropped: list[TooLong]) -> str:
        """Why no example of a batch fits max_length, and the data.max_length that would fit them."""
        images = max(d.image_tokens for d in dropped)
        required, full = max(d.required for d in dropped), max(d.full for d in dropped)
        ids = [d.item_id for d in dropped]
        fix = (
            f"set data.max_length to at least {required} (prompt with its image tokens, and the answer), "
            "e.g. "
            f"data.max_length={suggested_max_length(full)}, which also keeps the longest thinking ({full} "
            "tokens)")
        if images >= self.max_length:
            return (
                f"every example in the batch exceeds data.max_length={self.max_length}: the {images} image "
                "tokens "
                f"of each prompt fill it alone (the processor expands the image placeholder into {images} "
                "tokens, "
                f"and max_length counts them), leaving no room for the text; {fix}. Examples: {ids}")
        return (f"every example in the batch exceeds data.max_length={self.max_length} before any thinking "
                f"(prompt with {images} image tokens, and the answer); {fix}. Examples: {ids}")

    @staticmethod
    def _strip_mask(enc: dict) -> dict:
        enc.pop("attention_mask", None)
        return enc

    def _batch(self, examples: list[dict], items: list[VQAItem], left: bool) -> dict[str, Any]:
        width = max(len(e["input_ids"]) for e in examples)
        pad = self.tokenizer.pad_token_id
        ids, mask, labels = [], [], []
        for e in examples:
            n = width - len(e["input_ids"])
            ids.append(([pad] * n + e["input_ids"]) if left else (e["input_ids"] + [pad] * n))
            ones = [1] * len(e["input_ids"])
            mask.append(([0] * n + ones) if left else (ones + [0] * n))
            if "labels" in e:
                labels.append(e["labels"] + [IGNORE_INDEX] * n)
        batch: dict[str, Any] = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
        if labels:
            batch["labels"] = torch.tensor(labels)
        for key in examples[0]:
            if key in ("input_ids", "labels"):
                continue
            if key in PER_TOKEN:  # aligned with the prompt's tokens: zero for the completion and padding
                rows = []
                for e in examples:
                    values = e[key][0].tolist()
                    values += [0] * (len(e["input_ids"]) - len(values))
                    n = width - len(values)
                    rows.append(([0] * n + values) if left else (values + [0] * n))
                batch[key] = torch.tensor(rows)
            else:  # image tensors (LLaVA: [1, 3, H, W] per image; Qwen2-VL: patches, grid_thw) stack on dim 0
                batch[key] = torch.cat([e[key] for e in examples])
        batch["items"] = list(items)  # validation grades each output against its item (mvqa.data.grading)
        batch["item_ids"] = [it.id for it in items]
        batch["answer_labels"] = [it.answer_label for it in items]
        batch["choices"] = [it.choices for it in items]
        return batch


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The tensors a model's forward takes (drops the item metadata the collator carries along)."""
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
