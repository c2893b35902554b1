"""One loader for every entry of the `model/` group: real checkpoints and tiny offline models alike.

`load_model(cfg)` returns a ModelBundle; tiny models are built into the cache first and then read through the
same `from_pretrained` calls as a hub id or a local HF-format dir.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tokenizers import AddedToken

from mvqa.models.bundle import ModelBundle, SpecialTokens
from mvqa.models.chat_templates import get_chat_template
from mvqa.models.families import Family, family_named
from mvqa.models.processors import Qwen2VLImageOnlyProcessor
from mvqa.schemas.model import ModelConf, TinyModelConf

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def as_model_conf(cfg) -> ModelConf:
    """A ModelConf/TinyModelConf from a composed `model` node, a plain mapping, or the dataclass itself."""
    if dataclasses.is_dataclass(cfg):
        return cfg
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    schema = OmegaConf.get_type(cfg)
    if schema not in (ModelConf, TinyModelConf):
        schema = TinyModelConf if "size" in cfg else ModelConf
        cfg = OmegaConf.merge(OmegaConf.structured(schema), cfg)
    return OmegaConf.to_object(cfg)


def family_of(conf: ModelConf) -> Family:
    return family_named(conf.family, f"model {conf.name!r}")


def resolve_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if name not in DTYPES:
        raise ValueError(f"model.dtype must be auto or one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def _looks_local(path: str) -> bool:
    return path.startswith(("/", ".", "~")) or Path(path).exists()


def _not_found(conf: ModelConf, source: str, reason: str) -> FileNotFoundError:
    where = f"{source!r}" + (f" (subfolder {conf.subfolder!r})" if conf.subfolder else "")
    hint = (
        conf.download_hint or f"huggingface-cli download {source}, or set model.path to a local HF-format dir"
    )
    return FileNotFoundError(f"model {conf.name!r}: no weights at {where}: {reason}\nGet them with: {hint}")


def _quantization(conf: ModelConf, family: Family):
    if conf.quantize is None:
        return None
    if conf.quantize != "4bit":
        raise ValueError(f"model.quantize must be null or 4bit, got {conf.quantize!r}")
    from mvqa.models.lora import check_qlora_available

    check_qlora_available()
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=[family.vision_module, family.projector_module, "lm_head"],
    )


def _single_token(tokenizer, text: str) -> bool:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) == 1


@torch.no_grad()
def ensure_special_tokens(model, processor, conf: ModelConf) -> SpecialTokens:
    """Make the think/answer tags and pad single tokens, or stop, as `conf.add_special_tokens` says.

    A new token's embedding (and output row) starts as the mean of the pieces its text tokenized to before,
    so the tags start distinct and close to what the model already reads for them.
    """
    tok = processor.tokenizer
    tokens = SpecialTokens(image=processor.image_token, pad=tok.pad_token or SpecialTokens.pad)
    tags = (
        []
        if conf.think_tokens_as_text
        else [tokens.think_start, tokens.think_end, tokens.answer_start, tokens.answer_end]
    )
    missing = [t for t in tags if not _single_token(tok, t)]
    if not missing and tok.pad_token is not None:
        return tokens
    lacking = missing + ([] if tok.pad_token is not None else ["a pad token"])
    if not conf.add_special_tokens:
        raise ValueError(
            f"model {conf.name!r}: the tokenizer lacks {lacking}. Set model.add_special_tokens=true to add "
            "them (the embeddings are resized), or model.think_tokens_as_text=true to match the tags as text."
        )
    pieces = {t: tok(t, add_special_tokens=False)["input_ids"] for t in missing}
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing])
    if tok.pad_token is None:
        tok.add_special_tokens({"pad_token": tokens.pad})
        pieces[tokens.pad] = []
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(max(len(tok), old), mean_resizing=False)
    weights = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight is not weights[0]:
        weights.append(out.weight)
    for text, ids in pieces.items():
        new_id = tok.convert_tokens_to_ids(text)
        for w in weights:
            w[new_id] = w[ids].mean(0) if ids else w[:old].mean(0)
    model.config.get_text_config().pad_token_id = tok.pad_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return tokens


def load_model(cfg) -> ModelBundle:
    """Model, processor, chat template and special tokens for any `model/` option (node or dataclass)."""
    conf = as_model_conf(cfg)
    family = family_of(conf)
    if conf.path:
        source = conf.path
    elif isinstance(conf, TinyModelConf):
        from mvqa.models.tiny import build_tiny

        source = str(build_tiny(conf))
    else:
        raise ValueError(f"model {conf.name!r}: model.path is empty; give a hub id or a local checkpoint dir")
    if _looks_local(source) and not Path(source).expanduser().is_dir():
        raise _not_found(conf, source, "the directory does not exist")
    hub = {
        "subfolder": conf.subfolder,
        "revision": conf.revision,
        "local_files_only": conf.local_files_only,
        "trust_remote_code": conf.trust_remote_code,
    }
    try:
        processor = family.processor_class.from_pretrained(conf.processor_path or source, **hub)
        model = family.model_class.from_pretrained(
            source,
            dtype=resolve_dtype(conf.dtype),
            device_map=conf.device_map,
            attn_implementation=conf.attn_implementation,
            quantization_config=_quantization(conf, family),
            **hub,
        )
    except OSError as err:  # what transformers raises for missing files, unknown repos and offline misses
        raise _not_found(conf, source, str(err).splitlines()[0]) from err
    if conf.image_size is not None and not isinstance(conf, TinyModelConf):  # tiny: a dim, built in
        if not isinstance(processor, Qwen2VLImageOnlyProcessor):
            raise ValueError(
                f"model {conf.name!r}: image_size only applies to the qwen2_vl family; the LLaVA "
                "processor's own size is used"
            )
        processor.fixed_image_size = conf.image_size
    template = get_chat_template(conf.chat_template) if conf.chat_template else processor.chat_template
    if not template:
        raise ValueError(f"model {conf.name!r}: {source} ships no chat template; set model.chat_template")
    processor.chat_template = processor.tokenizer.chat_template = template
    tokens = ensure_special_tokens(model, processor, conf)
    if conf.adapter:
        from mvqa.models.lora import load_adapter

        model = load_adapter(model, conf.adapter, base_check=conf.adapter_base_check)
    model.eval()
    return ModelBundle(
        model=model,
        processor=processor,
        chat_template=template,
        special_tokens=tokens,
        name=conf.name,
        source=source,
        adapter_dirs={"default": str(conf.adapter)} if conf.adapter else {},
    )


def build_empty(cfg) -> Any:
    """The real architecture from `model.architecture` on the meta device: shapes and names, no memory."""
    conf = as_model_conf(cfg)
    if not conf.architecture:
        raise ValueError(f"model {conf.name!r} has no `architecture` to build on the meta device")
    family = family_of(conf)
    config = family.config_class(**OmegaConf.to_container(OmegaConf.create(conf.architecture)))
    with torch.device("meta"):
        return family.model_class(config)
