"""Tiny random-init VLMs built offline on first use, so every stage runs without a download.

A build trains a BPE tokenizer with `tokenizers`, saves model, processor and chat template with
`save_pretrained` into `<cache_dir>/<name>-<hash of the build config>`, and the loader then reads that dir
through the same `from_pretrained` path as a real checkpoint. Builds go to a temporary dir renamed into place,
so concurrent builders never leave a half-written cache entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)

from mvqa.data.storage import atomic_dir
from mvqa.models.bundle import SpecialTokens
from mvqa.models.chat_templates import get_chat_template
from mvqa.models.families import FAMILIES, family_named
from mvqa.models.processors import Qwen2VLImageOnlyProcessor, llava_image_processor, qwen2_vl_image_processor

# Bump when the build code changes what a given config produces, so stale cache entries are not reused.
BUILD_VERSION = 4  # 4: synthetic world v5 (the textbook's words in the tokenizer corpus); 3: world v3

DIMS = (
    "hidden",
    "layers",
    "heads",
    "kv_heads",
    "intermediate",
    "vision_hidden",
    "vision_layers",
    "vision_heads",
    "image_size",
    "patch",
    "vocab_size",
)
PRESETS: dict[str, dict[str, dict[str, int]]] = {
    "llava": {
        "unit": dict(zip(DIMS, (64, 2, 4, 2, 128, 32, 2, 2, 32, 8, 320))),  # ~0.15M parameters
        "demo": dict(zip(DIMS, (128, 4, 4, 2, 384, 64, 2, 4, 64, 8, 2048))),  # ~1M
    },
    "qwen2_vl": {
        "unit": dict(zip(DIMS, (64, 2, 4, 2, 128, 32, 2, 2, 32, 4, 320))),
        "demo": dict(zip(DIMS, (128, 4, 4, 2, 384, 64, 2, 4, 64, 8, 2048))),
    },
}
QWEN_MERGE = 2  # Qwen2-VL merges 2x2 patches into one token
BASE_TOKENS = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}


def resolve_dims(conf) -> dict[str, int]:
    """The preset for `conf.size`, with every dim the config sets explicitly taking precedence."""
    presets = PRESETS.get(conf.family)
    if presets is None:
        raise ValueError(
            f"model {conf.name!r}: no tiny builder for family {conf.family!r}; expected {sorted(PRESETS)}"
        )
    if conf.size not in presets:
        raise ValueError(
            f"model {conf.name!r}: unknown size {conf.size!r}; expected one of {sorted(presets)}"
        )
    dims = {
        k: (getattr(conf, k) if getattr(conf, k) is not None else v) for k, v in presets[conf.size].items()
    }
    checks = {
        "hidden % heads": dims["hidden"] % dims["heads"] == 0,
        "heads % kv_heads": dims["heads"] % dims["kv_heads"] == 0,
        "vision_hidden % vision_heads": dims["vision_hidden"] % dims["vision_heads"] == 0,
        "image_size % patch": dims["image_size"] % dims["patch"] == 0,
    }
    if conf.family == "qwen2_vl":
        checks["(hidden / heads) % 4 (mrope sections)"] = (dims["hidden"] // dims["heads"]) % 4 == 0
        checks["image_size % (patch * 2) (patch merge)"] = (
            dims["image_size"] % (dims["patch"] * QWEN_MERGE) == 0
        )
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise ValueError(f"model {conf.name!r}: tiny dims {dims} break {bad} (each must be 0 / true)")
    return dims


def corpus_texts(corpus: Any) -> list[str]:
    """The tokenizer's training text: a list of strings, or a `_target_` node that returns one."""
    if isinstance(corpus, (DictConfig, dict)) and "_target_" in corpus:
        from hydra.utils import instantiate

        corpus = instantiate(corpus)
    if isinstance(corpus, ListConfig):
        corpus = OmegaConf.to_container(corpus)
    texts = list(corpus) if isinstance(corpus, (list, tuple)) else None
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(
            f"tokenizer_corpus must give a non-empty list of strings, got {type(corpus).__name__}"
        )
    return texts


def _corpus_spec(corpus: Any) -> Any:
    """What identifies the corpus in the cache key: the target node itself, or the hash of a literal list."""
    if isinstance(corpus, (DictConfig, ListConfig)):
        corpus = OmegaConf.to_container(corpus, resolve=True)
    if isinstance(corpus, dict):
        return corpus
    return hashlib.sha256("\x00".join(corpus).encode()).hexdigest()


def build_spec(conf) -> dict[str, Any]:
    return {
        "version": BUILD_VERSION,
        "family": conf.family,
        "dims": resolve_dims(conf),
        "seed": conf.seed,
        "chat_template": conf.chat_template,
        "corpus": _corpus_spec(conf.tokenizer_corpus),
    }


def cache_path(conf) -> Path:
    spec = json.dumps(build_spec(conf), sort_keys=True)
    return Path(conf.cache_dir) / f"{conf.name}-{hashlib.sha256(spec.encode()).hexdigest()[:16]}"


def train_tokenizer(texts: list[str], vocab_size: int, special: list[str], text_tokens: list[str] = ()):
    """Byte-level BPE trained on `texts`; `special` are special tokens, `text_tokens` plain added tokens
    (kept by `decode(skip_special_tokens=True)`, as the think/answer tags must be)."""
    tok = Tokenizer(models.BPE(unk_token=BASE_TOKENS["unk"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in text_tokens])
    return tok


def _tokenizer(conf, dims) -> PreTrainedTokenizerFast:
    st = SpecialTokens()
    family = family_named(conf.family, f"model {conf.name!r}")
    special = [*BASE_TOKENS.values(), *family.tokens]
    think = [st.think_start, st.think_end, st.answer_start, st.answer_end]
    texts = corpus_texts(conf.tokenizer_corpus)
    # The template's words mixed in as often as there are texts: BPE learns them as whole tokens instead of
    # spending ~25 single characters per sequence.
    tok = train_tokenizer(texts + [family.template_words] * len(texts), dims["vocab_size"], special, think)
    eos = family.end_of_turn or BASE_TOKENS["eos"]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, **{**{f"{k}_token": v for k, v in BASE_TOKENS.items()}, "eos_token": eos}
    )


def _llava(conf, dims, tok):
    n_patches = (dims["image_size"] // dims["patch"]) ** 2
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=dims["vision_hidden"],
            intermediate_size=4 * dims["vision_hidden"],
            num_hidden_layers=dims["vision_layers"],
            num_attention_heads=dims["vision_heads"],
            image_size=dims["image_size"],
            patch_size=dims["patch"],
            projection_dim=dims["vision_hidden"],
        ),
        text_config=MistralConfig(
            vocab_size=len(tok),
            hidden_size=dims["hidden"],
            intermediate_size=dims["intermediate"],
            num_hidden_layers=dims["layers"],
            num_attention_heads=dims["heads"],
            num_key_value_heads=dims["kv_heads"],
            max_position_embeddings=2048,
            sliding_window=None,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        ),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=n_patches,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    # CLIP adds a CLS token that the "default" strategy drops again: (size/patch)^2 + 1 - 1 image tokens.
    processor = LlavaProcessor(
        image_processor=llava_image_processor(dims["image_size"]),
        tokenizer=tok,
        patch_size=dims["patch"],
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=get_chat_template(conf.chat_template),
    )
    return LlavaForConditionalGeneration(config), processor


def _mrope_section(head_dim: int) -> list[int]:
    """Qwen2-VL's split of the rotary half-dim over (time, height, width): [16, 24, 24] for head_dim 128."""
    half = head_dim // 2
    hw = 3 * half // 8
    return [half - 2 * hw, hw, hw]


def _qwen2_vl(conf, dims, tok):
    ids = {t: tok.convert_tokens_to_ids(t) for t in FAMILIES["qwen2_vl"].tokens}
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tok),
            "hidden_size": dims["hidden"],
            "intermediate_size": dims["intermediate"],
            "num_hidden_layers": dims["layers"],
            "num_attention_heads": dims["heads"],
            "num_key_value_heads": dims["kv_heads"],
            "max_position_embeddings": 2048,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": _mrope_section(dims["hidden"] // dims["heads"]),
            },
            "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
        },
        # The merger projects vision features straight into the text stream: its output is the text width.
        vision_config={
            "depth": dims["vision_layers"],
            "embed_dim": dims["vision_hidden"],
            "hidden_size": dims["hidden"],
            "num_heads": dims["vision_heads"],
            "patch_size": dims["patch"],
            "spatial_merge_size": QWEN_MERGE,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    processor = Qwen2VLImageOnlyProcessor(
        image_processor=qwen2_vl_image_processor(dims["patch"], QWEN_MERGE, dims["image_size"]),
        tokenizer=tok,
        chat_template=get_chat_template(conf.chat_template),
        fixed_image_size=dims["image_size"],
    )
    return Qwen2VLForConditionalGeneration(config), processor


BUILDERS = {"llava": _llava, "qwen2_vl": _qwen2_vl}


def _write(conf, dims, out: Path) -> None:
    tok = _tokenizer(conf, dims)
    with torch.random.fork_rng():  # a fixed init per config, without touching the caller's RNG
        torch.manual_seed(conf.seed)
        model, processor = BUILDERS[conf.family](conf, dims, tok)
    # A random model puts real mass on pad; it is never a valid output.
    gen = model.generation_config
    gen.pad_token_id, gen.eos_token_id, gen.bos_token_id = (
        tok.pad_token_id,
        tok.eos_token_id,
        tok.bos_token_id,
    )
    gen.suppress_tokens = [tok.pad_token_id]
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "mvqa_build.json").write_text(json.dumps(build_spec(conf), indent=2, sort_keys=True))


def build_tiny(conf) -> Path:
    """Build (or reuse) the tiny model for `conf` (a TinyModelConf) and return its checkpoint dir."""
    if "${" in conf.cache_dir:
        raise ValueError(
            f"model {conf.name!r}: cache_dir {conf.cache_dir!r} is unresolved; compose the config or set it"
        )
    final = cache_path(conf)
    if final.is_dir():
        return final
    with atomic_dir(final, replace=False) as tmp:  # a concurrent builder's identical copy may win
        _write(conf, resolve_dims(conf), tmp)
    return final


def tiny_conf(family: str, **fields):
    """A TinyModelConf for code and tests that do not compose Hydra configs."""
    from mvqa.schemas.model import TinyModelConf

    name = fields.pop("name", f"tiny_{family}")
    template = fields.pop("chat_template", family_named(family).chat_template)
    return dataclasses.replace(TinyModelConf(name=name, family=family, chat_template=template), **fields)
