"""Helpers that Lightning strategy configs instantiate."""

from __future__ import annotations

import importlib


def decoder_layer_classes(names: list[str]) -> set[type]:
    """The decoder-layer classes FSDP wraps one unit each; names not in this transformers build are skipped."""
    found = set()
    for name in names:
        family = name.removesuffix("DecoderLayer").lower()
        family = {"qwen2vl": "qwen2_vl"}.get(family, family)
        try:
            module = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
        except ImportError:
            continue
        if hasattr(module, name):
            found.add(getattr(module, name))
    if not found:
        raise ValueError(f"none of the decoder layer classes {names} exist in this transformers build")
    return found
