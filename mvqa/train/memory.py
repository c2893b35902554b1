"""Per-GPU training memory of a composed `train` config under each multi-GPU trainer: computed, not guessed.

    python -m mvqa.train.memory model=llava_med recipe=lora_r8 data.max_length=1024
    gradient_checkpointing=true

Parameters are counted on the real architecture (`model.architecture`) built on the meta device and prepared
by `prepare_trainable`, as training prepares it. Bytes per parameter follow the dtypes training gives them:
`model.dtype` (auto = bf16 on a GPU), NF4 for `model.quantize=4bit`, fp32 for PEFT's adapters
(`autocast_adapter_dtype`) unless `recipe.adapter_dtype=base` (the base's dtype; a 4-bit base keeps them
fp32). What one of N GPUs holds, per strategy of `conf/trainer/`:

  ddp               a full replica; grads twice (param.grad and DDP's bucket copy: gradient_as_bucket_view
                    off); AdamW's two states in each trainable's own dtype (torch.optim.AdamW) fsdp FULL_SHARD
                    params, grads and AdamW states sharded by N. Gathered in 16-bit: the root unit (all that
                    is not a decoder layer: vision tower, embeddings, LM head), which FSDP keeps whole from
                    forward to backward, and two decoder layers (the current one and the prefetched one).
                    use_orig_params gives a unit with any trainable parameter a gradient for all of it. A unit
                    must hold one dtype: LoRA on a 16-bit base needs recipe.adapter_dtype=base (or
                    model.dtype=float32) deepspeed ZeRO-2  16-bit params replicated (DeepSpeed casts the
                    module); 16-bit grads, fp32 master copy and AdamW states sharded by N: 2Ψ + (2 + 12)T/N
                    (Rajbhandari et al. 2020), plus its reduce buckets (Lightning's defaults)

Not counted: the CUDA context, kernel workspaces (cuBLAS's: 0.07 GiB on an H200), allocator fragmentation, a
validation batch: leave headroom.
"""

from __future__ import annotations

import argparse
import copy
import inspect
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mvqa.config import CONFIG_DIR, setup
from mvqa.models.load import as_model_conf, build_empty, family_of, resolve_dtype
from mvqa.models.lora import count_parameters, is_projector, is_vision, prepare_trainable
from mvqa.train.strategies import decoder_layer_classes

GIB = 2**30
GPU_SIZES_GIB = (24, 40, 80)
# QLoRA's NF4 with double quantization: 4-bit codes, an 8-bit absmax per 64 weights and an fp32 constant per
# 256 absmaxes (Dettmers et al. 2023, 4.127 bits per parameter).
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
DTYPE_NAMES = {4: "fp32", 2: "16-bit", NF4_BYTES: "nf4"}


@dataclass(frozen=True)
class Param:
    name: str
    numel: int
    trainable: bool
    kind: str  # adapter (a PEFT tuner's own tensor) | nf4 (a 4-bit linear weight) | base


@dataclass
class Footprint:
    """The prepared model on the meta device, its parameters and the sizes the activations depend on."""

    model: nn.Module
    params: list[Param]
    total: int
    trainable: int
    vision: int
    projector: int
    image_tokens: int | None


@dataclass(frozen=True)
class Breakdown:
    """Bytes on one GPU."""

    weights: float
    grads: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations


class MixedDtypeUnit(ValueError):
    """FSDP flattens each unit into one tensor and refuses parameters of different dtypes in it."""


def count_params(cfg: DictConfig) -> Footprint:
    """Build `cfg.model` on the meta device and apply `cfg.recipe` as training does; classify each
    parameter."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    conf, recipe = as_model_conf(cfg.model), cfg.recipe
    if recipe.method == "qlora":
        if conf.quantize != "4bit":
            raise ValueError("recipe qlora needs a 4-bit base: load it with model.quantize=4bit")
        # attach_lora's prepare_model_for_kbit_training needs bitsandbytes on CUDA. It adds no parameter (it
        # upcasts the unquantized ones to fp32, see stored_bytes), so the same adapters come from method lora.
        recipe = OmegaConf.merge(recipe, {"method": "lora"})
    # Training passes the ids of the think/answer tags that are single tokens: at most these four.
    token_ids = list(range(4)) if recipe.train_delimiter_rows else None
    with torch.device("meta"):  # the adapters too: PEFT would otherwise initialise them on the CPU first
        model = prepare_trainable(build_empty(conf), recipe, token_ids)
    family = family_of(conf)
    model_type = model.config.model_type
    adapter_ids = {
        id(p)
        for m in model.modules()
        if isinstance(m, BaseTunerLayer)
        for n, p in m.named_parameters()
        if not n.startswith("base_layer.")
    }
    # What bitsandbytes quantizes: every nn.Linear weight but those load._quantization skips.
    skip = (family.vision_module, family.projector_module, "lm_head")
    nf4_ids = {
        id(m.weight)
        for name, m in model.named_modules()
        if type(m) is nn.Linear and id(m.weight) not in adapter_ids and not any(s in name for s in skip)
    }
    params, vision, projector = [], 0, 0
    for name, p in model.named_parameters():
        kind = "adapter" if id(p) in adapter_ids else "nf4" if conf.quantize and id(p) in nf4_ids else "base"
        params.append(Param(name, p.numel(), p.requires_grad, kind))
        vision += p.numel() if is_vision(name, model_type) else 0
        projector += p.numel() if is_projector(name, model_type) else 0
    trainable, total = count_parameters(model)
    return Footprint(model, params, total, trainable, vision, projector, image_tokens(model))


def image_tokens(model) -> int | None:
    """Tokens one image expands to in a LLaVA prompt: one per patch (plus CLS when the strategy keeps it)."""
    if model.config.model_type != "llava":
        return None
    vision = model.config.vision_config
    cls = model.config.vision_feature_select_strategy == "full"
    return (vision.image_size // vision.patch_size) ** 2 + cls


def stored_bytes(param: Param, cfg: DictConfig) -> float:
    """Bytes per element of `param` as training loads it onto one GPU."""
    base = 2 if cfg.model.dtype == "auto" else resolve_dtype(cfg.model.dtype).itemsize  # auto: bf16 on a GPU
    if param.kind == "nf4":
        return NF4_BYTES
    # PEFT upcasts 16-bit adapters to fp32 unless told not to; 4-bit bases: always
    if param.kind == "adapter":
        upcast = OmegaConf.select(cfg, "recipe.adapter_dtype", default="float32") != "base"
        return max(base, 4) if upcast or cfg.recipe.method == "qlora" else base
    return 4 if cfg.recipe.method == "qlora" else base  # prepare_model_for_kbit_training upcasts the rest


def gpu_trainers() -> list[str]:
    """The `trainer/` options that train on GPUs with a distributed strategy."""
    names = []
    for path in sorted((CONFIG_DIR / "trainer").glob("*.yaml")):
        trainer = OmegaConf.load(path)
        if trainer.get("accelerator") == "gpu" and trainer.get("strategy") not in (None, "auto"):
            names.append(path.stem)
    return names


def trainer_conf(name: str) -> DictConfig:
    if name not in gpu_trainers():
        raise ValueError(
            f"unknown multi-GPU strategy {name!r}: expected one of {gpu_trainers()} (conf/trainer/)")
    return OmegaConf.load(CONFIG_DIR / "trainer" / f"{name}.yaml")


def strategy_kind(strategy) -> tuple[str, dict]:
    """ddp | fsdp | zero2, and the strategy's settings (a registered Lightning name's own, or the node's)."""
    from pytorch_lightning.strategies import StrategyRegistry

    if isinstance(strategy, str):
        registered = StrategyRegistry[strategy]
        target, settings = registered["strategy"].__name__, dict(registered["init_params"])
    else:
        settings = OmegaConf.to_container(strategy)
        target = settings.pop("_target_").rsplit(".", 1)[-1]
    if target == "DeepSpeedStrategy":
        from pytorch_lightning.strategies import DeepSpeedStrategy

        defaults = {k: p.default for k, p in inspect.signature(DeepSpeedStrategy.__init__).parameters.items()}
        settings = {**defaults, **settings}
        if settings["stage"] == 2:
            return "zero2", settings
    if target == "FSDPStrategy" and settings.get("sharding_strategy") == "FULL_SHARD":
        return "fsdp", settings
    if target == "DDPStrategy":
        return "ddp", settings
    raise ValueError(f"no memory model for strategy {target} with {settings}")


def activation_bytes(cfg: DictConfig, fp: Footprint, compute_bytes: int) -> float:
    """Saved activations of one micro-batch (data.batch_size sequences of data.max_length tokens).

    Per decoder layer, Korthikanti et al. 2022: s*b*h*(34 + 5*a*s/h) bytes in 16-bit, for a GPT layer keeping
    what full training keeps: an upper bound for LoRA (frozen linears save no input) and for sdpa/flash
    attention (no a*s^2 scores kept). Checkpointed, each layer keeps its 16-bit input and one layer is
    recomputed at a time. Plus the loss's logits: three fp32 copies of b*s*vocab at the start of backward
    (`logits_bytes`), alive with every saved activation but never with a recomputed layer. The frozen vision
    tower runs without autograd. """
    text = fp.model.config.get_text_config()
    b, s, h, a = cfg.data.batch_size, cfg.data.max_length, text.hidden_size, text.num_attention_heads
    if fp.image_tokens and s <= fp.image_tokens:
        raise ValueError(
            f"data.max_length={s} leaves no room for text after the {fp.image_tokens} image tokens of "
            f"{cfg.model.name}: the collator counts them in max_length and would drop every example; "
            f"set data.max_length={-(-(fp.image_tokens + 384) // 256) * 256} (room for 384 text tokens)"
        )
    layer = s * b * h * (34 + 5 * a * s / h) * compute_bytes / 2
    logits = logits_bytes(b * s, text.vocab_size)
    checkpointed = cfg.gradient_checkpointing or cfg.recipe.method == "qlora"  # kbit preparation turns it on
    if checkpointed:
        # The logits' tensors are gone (LM head's backward) before backward reaches the last decoder layer and
        # recomputes it: the peak is the larger of the two, over the layers' checkpointed inputs.
        return text.num_hidden_layers * s * b * h * compute_bytes + max(layer, logits)
    # every layer's saved activations are alive at backward start
    return text.num_hidden_layers * layer + logits


def logits_bytes(tokens: int, vocab_size: int) -> int:
    """Peak bytes of the loss's logits-sized tensors: 12 per logit (b*s*vocab of them), in either precision.

    Training takes `model(**batch).loss`: the LM head computes logits at every position (`logits_to_keep=0`;
    the masked labels do not shorten them) and transformers' ForCausalLMLoss (loss_type ForCausalLM, and
    ForConditionalGeneration for LLaVA and Qwen2-VL) calls cross_entropy on `logits.float()`: log_softmax,
    then nll_loss. Autograd saves only log_softmax's fp32 output (NllLossBackward and LogSoftmaxBackward share
    it); the 16-bit logits and their fp32 upcast are saved by nothing and die with the forward (the model's
    output is dropped once `.loss` is read). So: forward, at log_softmax: 16-bit logits + fp32 upcast + fp32
    log-softmax = 2 + 4 + 4 bytes (fp32 compute: `.float()` is the logits themselves, 4 + 4) backward, at
    LogSoftmaxBackward: its saved fp32 output + nll_loss's fp32 gradient (zeros_like, scattered) + the fp32
    logits' gradient it returns = 4 + 4 + 4 bytes, the peak after which ToCopyBackward's 16-bit gradient and
    the LM head's backward free them all. Measured on an H200 (bench/gpu_memory.py, bf16-mixed): backward
    peaks 8 bytes a logit above what the forward leaves it, the forward about 10 above the rest, in
    Qwen2-VL-2B (152k vocabulary: most of its activations) and LLaVA-Med 7B alike. """
    return 3 * 4 * tokens * vocab_size


def fsdp_units(fp: Footprint, wrap_class_names: list[str]) -> dict[str, list[Param]]:
    """Parameters per FSDP unit: one per decoder layer (the auto-wrap classes), the root ("") for the rest."""


    classes = tuple(decoder_layer_classes(wrap_class_names))
    prefixes = [f"{n}." for n, m in fp.model.named_modules() if isinstance(m, classes)]
    units = defaultdict(list)
    for p in fp.params:
        units[next((u for u in prefixes if p.name.startswith(u)), "")].append(p)
    return units


def per_gpu(cfg: DictConfig, trainer: str, n_gpus: int, fp: Footprint | None = None) -> Breakdown:
    """What one of `n_gpus` GPUs holds when `cfg` trains under `trainer=<trainer>` (see the module's doc)."""
    fp = fp or count_params(cfg)
    conf = trainer_conf(trainer)
    kind, settings = strategy_kind(conf.strategy)
    compute_bytes = 2 if "16" in str(conf.precision) else 4
    acts = activation_bytes(cfg, fp, compute_bytes)
    held = {p.name: stored_bytes(p, cfg) for p in fp.params}
    trainable = [p for p in fp.params if p.trainable]
    trainable_bytes = sum(p.numel * held[p.name] for p in trainable)
    if kind == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        default = inspect.signature(DistributedDataParallel.__init__).parameters[
            "gradient_as_bucket_view"].default
        bucket_copy = not settings.get("gradient_as_bucket_view", default)
        weights = sum(p.numel * held[p.name] for p in fp.params)
        return Breakdown(weights, trainable_bytes * (1 + bucket_copy), 2 * trainable_bytes, acts)
    if kind == "zero2":
        weights = sum(p.numel * (NF4_BYTES if p.kind == "nf4" else compute_bytes) for p in fp.params)
        t = sum(p.numel for p in trainable)
        buckets = settings["contiguous_gradients"] * (1 + settings["overlap_comm"]) * settings[
            "reduce_bucket_size"]
        return Breakdown(weights, compute_bytes * (t / n_gpus + buckets), 12 * t / n_gpus, acts)
    units = fsdp_units(fp, list(conf.strategy.auto_wrap_policy.names))
    for name, unit in units.items():
        dtypes = {DTYPE_NAMES[held[p.name]] for p in unit}
        if len(dtypes) > 1:
            fix = ("bitsandbytes' 4-bit storage would need the dtype of the rest" if "nf4" in dtypes else
                   "recipe.adapter_dtype=base makes them one (16-bit adapters), or model.dtype=float32 "
                   "(fp32 weights and adapters; FSDP still computes in 16-bit)")
            raise MixedDtypeUnit(
                f"FSDP unit {name.rstrip('.') or 'root'!r} holds {' and '.join(sorted(dtypes))} "
                f"parameters but FSDP flattens a unit into one dtype: {fix}")
    size = {name: sum(p.numel for p in unit) for name, unit in units.items()}
    layer = max(n for name, n in size.items() if name)
    with_grads = [name for name, unit in units.items() if any(p.trainable for p in unit)]
    weights = sum(p.numel * held[p.name] for p in fp.params) / n_gpus
    gathered = (size[""] + 2 * layer) * compute_bytes
    grads = sum(size[u] * held[units[u][0].name] for u in with_grads) / n_gpus
    # before its reduce-scatter
    unsharded_grad = max((size[u] for u in with_grads), default=0) * compute_bytes
    return Breakdown(weights + gathered, grads + unsharded_grad, 2 * trainable_bytes / n_gpus, acts)


def fits(total: float) -> str:
    return ", ".join(str(g) for g in GPU_SIZES_GIB if total <= g * GIB) or "none"


def markdown_table(cfg: DictConfig, trainers: Sequence[str], gpus: Sequence[int]) -> str:
    fp = count_params(cfg)
    lines = [
        f"{cfg.model.name} + {cfg.recipe.name}: {fp.total:,} parameters ({fp.vision:,} vision tower, "
        f"{fp.projector:,} projector), {fp.trainable:,} trainable ({100 * fp.trainable / fp.total:.3f}%); "
        f"batch {cfg.data.batch_size} x {cfg.data.max_length} tokens per GPU"
        + (f" ({fp.image_tokens} of them image)" if fp.image_tokens else "")
        + f", gradient checkpointing {'on' if cfg.gradient_checkpointing else 'off'}",
        "",
        "| strategy | GPUs | weights | grads | optimizer | activations | total GiB per GPU | fits (GiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes = {}
    for trainer in trainers:
        for n in gpus:
            try:
                b, label = per_gpu(cfg, trainer, n, fp), trainer
            except MixedDtypeUnit as err:  # FSDP: try again with adapters in the base's dtype
                as_base = copy.deepcopy(cfg)
                as_base.recipe.adapter_dtype = "base"
                notes[trainer] = f"¹ {trainer}: {err}"
                try:
                    b, label = per_gpu(as_base, trainer, n, fp), f"{trainer} ¹ (recipe.adapter_dtype=base)"
                except MixedDtypeUnit:
                    lines.append(f"| {trainer} ¹ | {n} | — | — | — | — | — | none |")
                    continue
            cells = [f"{x / GIB:.2f}" for x in (b.weights, b.grads, b.optimizer, b.activations, b.total)]
            lines.append(f"| {label} | {n} | " + " | ".join(cells) + f" | {fits(b.total)} |")
    return "\n".join(lines + [""] + list(notes.values())).rstrip() + "\n"


def compose_train(overrides: Sequence[str]) -> DictConfig:
    """The `train` primary config with command-line overrides, composed as train.py composes it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    setup()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="memory"):
        return compose(config_name="train", overrides=list(overrides))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mvqa.train.memory", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides of the train config, e.g. model=llava_med")
    parser.add_argument("--gpus", default="1,2,4,8", help="GPU counts, comma-separated")
    parser.add_argument("--strategies", default=",".join(gpu_trainers()),
                        help="trainer options, comma-separated")
    args = parser.parse_args(argv)
    cfg = compose_train(args.overrides)
    try:
        print(markdown_table(cfg, args.strategies.split(","), [int(n) for n in args.gpus.split(",")]), end="")
    except ValueError as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
