"""Helpers that Lightning strategy configs instantiate, and the checks a strategy needs before it wraps a
model."""

from __future__ import annotations

import importlib
from collections import defaultdict

import torch
from torch import nn


def decoder_layer_classes(names: list[str]) -> set[type]:
    """The decoder-layer classes FSDP wraps one unit each; names not in this transformers build are
    skipped."""
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


def unit_dtypes(model: nn.Module, wrap_classes) -> dict[str, set[torch.dtype]]:
    """The parameter dtypes of each FSDP unit of `model`: one unit per module of `wrap_classes` (innermost
    wins), the root ("") for every parameter outside them."""
    classes = tuple(wrap_classes)
    prefixes = sorted((f"{n}." for n, m in model.named_modules() if n and isinstance(m, classes)), key=len,
                      reverse=True)
    units: dict[str, set[torch.dtype]] = defaultdict(set)
    for name, p in model.named_parameters():
        units[next((u for u in prefixes if name.startswith(u)), "")].add(p.dtype)
    return dict(units)


def _wrap_classes(strategy) -> tuple[type, ...] | None:
    """The module classes an FSDP strategy's auto-wrap policy wraps; () without a policy, None when the policy
    is not a class set (a callable: its units cannot be known before wrapping)."""
    policy = getattr(strategy, "kwargs", {}).get("auto_wrap_policy")
    if policy is None:
        return ()
    if isinstance(policy, set | list | tuple):
        return tuple(policy)
    classes = getattr(policy, "_module_classes", None)
    return tuple(classes) if classes is not None else None


def check_fsdp_dtypes(model: nn.Module, strategy) -> None:
    """Fail before an FSDP strategy wraps `model` when one of its units would hold parameters of two dtypes.

    FSDP flattens each unit into one tensor and refuses mixed dtypes ("Must flatten tensors with uniform
    dtype") after the processes have started; a LoRA model on a 16-bit base has exactly that mix when PEFT
    upcasts its adapters to fp32 (recipe.adapter_dtype=float32, the default). Other strategies pass unchecked.
    """
    from pytorch_lightning.strategies import FSDPStrategy

    if not isinstance(strategy, FSDPStrategy):
        return
    classes = _wrap_classes(strategy)
    if classes is None:
        return
    for unit, dtypes in unit_dtypes(model, classes).items():
        if len(dtypes) < 2:
            continue
        names = " and ".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
        where = f"FSDP unit {unit.rstrip('.') or 'root'!r} holds {names} parameters"
        if not all(d.is_floating_point for d in dtypes):
            raise ValueError(f"{where}, but FSDP flattens a unit into one dtype: 4-bit weights "
                             "(model.quantize=4bit) do not shard under trainer=fsdp; use trainer=ddp")
        raise ValueError(
            f"{where}, but FSDP flattens a unit into one dtype (\"Must flatten tensors with uniform "
            "dtype\"). "
            "PEFT keeps LoRA adapters in float32 on a 16-bit base: set recipe.adapter_dtype=base (adapters "
            "in "
            "the base's dtype) or model.dtype=float32 (fp32 weights and adapters; bf16-mixed still computes "
            "in bf16)"
        )
