"""LoRA adapters (and full / QLoRA set-ups) on the language model of a VLM, from a `recipe/` config.

Targets are a regex over the language model's module names: the CLIP / Qwen vision towers also have
q/k/v projections and must never get adapters.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

from mvqa.data.storage import write_dir_atomically
from mvqa.models.families import FAMILIES, LM_LAYERS, LORA_TARGETS, family_named

ADAPTER_INFO = "mvqa_adapter.json"
# recipe.adapter_dtype: float32 (PEFT upcasts adapters on 16-bit bases) | base (the adapted weights' own
# dtype).
ADAPTER_DTYPES = ("float32", "base")


def target_regex(target: str) -> str:
    if target not in LORA_TARGETS:
        raise ValueError(f"recipe.target must be one of {sorted(LORA_TARGETS)}, got {target!r}")
    return rf"{LM_LAYERS}\.{LORA_TARGETS[target]}"


def _model_type(model) -> str:
    model_type = model.config.model_type
    family_named(model_type, "LoRA")  # the config's model_type is the family's name
    return model_type


def is_projector(name: str, model_type: str) -> bool:
    return f"{FAMILIES[model_type].projector_module}." in name


def is_vision(name: str, model_type: str) -> bool:
    return FAMILIES[model_type].vision_prefix in name and not is_projector(name, model_type)


def check_qlora_available() -> None:
    if not torch.cuda.is_available():
        raise RuntimeError(
            "QLoRA needs a CUDA GPU (bitsandbytes 4-bit) and none is visible; use recipe=lora_r8"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError("QLoRA needs bitsandbytes: pip install bitsandbytes")


def lora_config(model, recipe, train_token_ids: list[int] | None = None) -> LoraConfig:
    """`train_token_ids`: rows of the embeddings and LM head to train too (tokens added to a real vocab)."""
    model_type = _model_type(model)
    return LoraConfig(
        r=recipe.r,
        lora_alpha=recipe.alpha,
        lora_dropout=recipe.dropout,
        target_modules=target_regex(recipe.target),
        modules_to_save=[FAMILIES[model_type].projector_module] if recipe.train_projector else None,
        trainable_token_indices={"embed_tokens": list(train_token_ids), "lm_head": list(train_token_ids)}
        if train_token_ids
        else None,
        task_type="CAUSAL_LM",
    )


def adapter_dtype(recipe) -> str:
    value = getattr(recipe, "adapter_dtype", "float32")
    if value not in ADAPTER_DTYPES:
        raise ValueError(f"recipe.adapter_dtype must be one of {list(ADAPTER_DTYPES)}, got {value!r}")
    return value


def attach_lora(model, recipe, train_token_ids: list[int] | None = None) -> PeftModel:
    """Wrap `model` with LoRA adapters from `recipe` (method lora or qlora); the base is frozen.

    `recipe.adapter_dtype`: float32 upcasts adapters on a 16-bit base to fp32 (PEFT's
    `autocast_adapter_dtype`); base leaves them in the dtype of the weight each one adapts, so a bf16 base
    gives an all-bf16 model (what FSDP needs to flatten a decoder layer into one tensor). A 4-bit base keeps
    fp32 adapters either way. """
    if recipe.method not in ("lora", "qlora"):
        raise ValueError(f"attach_lora takes recipe.method lora or qlora, got {recipe.method!r}")
    autocast = adapter_dtype(recipe) == "float32"
    if recipe.method == "qlora":
        check_qlora_available()
        if not getattr(model, "is_loaded_in_4bit", False):
            raise ValueError("recipe qlora needs a 4-bit base: load it with model.quantize=4bit")
        model = prepare_model_for_kbit_training(model)
    return get_peft_model(model, lora_config(model, recipe, train_token_ids), autocast_adapter_dtype=autocast)


def prepare_trainable(model, recipe, train_token_ids: list[int] | None = None):
    """What training calls: LoRA/QLoRA adapters, or for method full the language model (and projector when
    `train_projector`) trainable with the vision tower frozen unless `train_vision` (a from-scratch model)."""
    if recipe.method != "full":
        return attach_lora(model, recipe, train_token_ids)
    model_type = _model_type(model)
    for name, p in model.named_parameters():
        if is_vision(name, model_type):
            p.requires_grad = bool(getattr(recipe, "train_vision", False))
        else:
            p.requires_grad = recipe.train_projector or not is_projector(name, model_type)
    return model


def optimizer_groups(model, recipe) -> list[dict]:
    """Trainable parameters split into the projector (at `projector_lr`) and the rest (at `lr`)."""
    model_type = _model_type(_base(model))
    groups = {True: [], False: []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[is_projector(name, model_type)].append(p)
    proj_lr = recipe.projector_lr if recipe.projector_lr is not None else recipe.lr
    return [
        g
        for g in (
            {"params": groups[False], "lr": recipe.lr, "weight_decay": recipe.weight_decay},
            {"params": groups[True], "lr": proj_lr, "weight_decay": recipe.weight_decay},
        )
        if g["params"]
    ]


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def _base(model):
    return model.get_base_model() if isinstance(model, PeftModel) else model


# PEFT's wrappers around a base weight: their names are stripped so a wrapped base and a bare one agree.
_WRAPPER_PARTS = (".base_layer", ".original_module", ".token_adapter")
_ADAPTER_PARTS = ("lora_", "modules_to_save.", "trainable_tokens_")
BASE_CHECKS = ("warn", "error")


def base_fingerprint(model, samples_per_tensor: int = 1024) -> str | None:
    """A hash of the frozen base weights: names, shapes and `samples_per_tensor` evenly spaced values of each
    tensor (rounded to bf16, so a base loaded in another float dtype agrees). Adapter weights are left out, so
    a base before and after attaching adapters gives the same value. None when weights are not materialised
    (meta or sharded tensors)."""
    h = hashlib.sha256()
    try:
        for name, param in sorted(_base(model).named_parameters(), key=lambda kv: kv[0]):
            if any(part in name for part in _ADAPTER_PARTS):
                continue
            for part in _WRAPPER_PARTS:
                name = name.replace(part, "")
            flat = param.detach().reshape(-1)
            h.update(f"{name}:{tuple(param.shape)}".encode())
            if flat.is_floating_point():
                index = torch.linspace(0, flat.numel() - 1, min(samples_per_tensor, flat.numel())).long()
                h.update(
                    flat[index.to(flat.device)].to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes())
    except (RuntimeError, NotImplementedError):  # meta tensors, FSDP flat params
        return None
    return h.hexdigest()[:16]


def save_adapter(model: PeftModel, path: str | os.PathLike) -> Path:
    """The adapter only (safetensors + adapter_config.json), with the base it was trained on (name, type and
    a fingerprint of its weights)."""
    if not isinstance(model, PeftModel):
        raise TypeError(f"save_adapter takes a PeftModel, got {type(model).__name__}")
    base = model.get_base_model()
    info = {"model_type": base.config.model_type, "base": base.config.name_or_path,
            "base_fingerprint": base_fingerprint(model)}

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / ADAPTER_INFO).write_text(json.dumps(info, indent=2))

    return write_dir_atomically(write, path)


def load_adapter(base, path: str | os.PathLike, is_trainable: bool = False, adapter_name: str = "default",
                 base_check: str = "warn") -> PeftModel:
    """A saved adapter onto `base`; one trained for another base fails naming both.

    One trained on a base of the same type and shape but other weights (its recorded base_fingerprint differs)
    gets a warning, or fails with `base_check="error"` (model.adapter_base_check).

    `base` may already be a PeftModel: the adapter is then added under `adapter_name`, so several adapters
    share one base in memory (switch with `set_adapter`, or `disable_adapter()` for the bare base).
    """
    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"no adapter at {path}: expected {path / 'adapter_config.json'} (see save_adapter)"
        )
    info_file = path / ADAPTER_INFO
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    trained_on = info.get("base") or json.loads((path / "adapter_config.json").read_text()).get(
        "base_model_name_or_path"
    )
    config = _base(base).config
    mismatch = (
        f"adapter {path} was trained on {trained_on!r} ({info.get('model_type', '?')}) but the base is "
        f"{config.name_or_path!r} ({config.model_type})"
    )
    if info.get("model_type", config.model_type) != config.model_type:
        raise ValueError(mismatch)
    if base_check not in BASE_CHECKS:
        raise ValueError(f"adapter base_check={base_check!r}: expected one of {list(BASE_CHECKS)}")
    recorded = info.get("base_fingerprint")
    if recorded:
        current = base_fingerprint(base)
        if current is not None and current != recorded:
            message = (
                f"adapter {path} was trained on base weights with fingerprint {recorded} ({trained_on!r}); "
                f"the base {config.name_or_path!r} has {current}: same type and shapes, other weights")
            if base_check == "error":
                raise ValueError(message + " (model.adapter_base_check=error)")
            warnings.warn(message + "; model.adapter_base_check=error makes this an error", stacklevel=2)
    try:
        if isinstance(base, PeftModel):
            base.load_adapter(path, adapter_name=adapter_name, is_trainable=is_trainable)
            return base
        return PeftModel.from_pretrained(base, path, is_trainable=is_trainable, adapter_name=adapter_name)
    except (RuntimeError, ValueError, KeyError) as err:  # shape mismatches, target modules absent
        raise ValueError(f"{mismatch}: {str(err).splitlines()[0]}") from err


def merge_and_export(model, processor, path: str | os.PathLike) -> Path:
    """Fold the adapter into the base weights and write a standalone checkpoint (weights, config, processor).

    The PeftModel is unloaded in the process: use the returned dir (or the model it held) afterwards.
    """
    merged = model.merge_and_unload() if isinstance(model, PeftModel) else model

    def write(tmp: Path) -> None:
        merged.save_pretrained(tmp)
        processor.save_pretrained(tmp)

    return write_dir_atomically(write, path)
