"""GPU memory of a LoRA training step on the real architectures: measured, against `mvqa.train.memory`'s
prediction.

On a CUDA device, for Med-R1's Qwen2-VL-2B (`model=qwen2_vl_2b`) and LLaVA-Med 7B (`model=llava_med`): the
real architecture is built from the config's `model.architecture` (what the estimator builds on the meta
device) with RANDOM weights, directly on the GPU in bf16 (`model.dtype=auto` there; nothing is downloaded),
given the recipe's LoRA adapters by `prepare_trainable` as training gives them, and trained through the
project's `VQAFineTuner` in the Trainer that `trainer=gpu` composes (bf16-mixed) with gradient checkpointing:
batch 1, one image, a sequence of exactly `data.max_length` tokens (the image's tokens included), loss on its
last 40%. `torch.cuda.max_memory_allocated` over the build and the steps is compared with `per_gpu(cfg, "ddp",
1)` (the README table's 1-GPU row) as measured / predicted; `single_gpu` figures leave out the DDP bucket copy
of the gradients that `trainer=gpu` has not. Each step's peak is split at `on_before_backward`: the forward's
peak, what it leaves for backward, and the peak of backward + optimizer; and what the last step starts with
beyond the weights, gradients and AdamW states (cuBLAS's workspaces) is recorded, what the estimator leaves
out.

    python bench/gpu_memory.py [--models qwen2_vl_2b,llava_med] [--recipe lora_r8] [--max-length 1024]
    [--steps 2] python bench/gpu_memory.py --dry-run   # any machine: scaled-down architectures through the
    same code, no result

Without CUDA (and without --dry-run) it measures nothing, says so and leaves bench/results/gpu_memory.json
alone (exit status 0, so `make bench` still runs on CPU machines). """

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from budget import record

from mvqa.data.collators import IGNORE_INDEX
from mvqa.models.load import as_model_conf, family_of
from mvqa.models.lora import count_parameters, prepare_trainable
from mvqa.train.memory import GIB, compose_train, count_params, per_gpu
from mvqa.train.module import VQAFineTuner

# Shrunk dims for --dry-run: same families, image sizes, vocabularies and code paths, a few M parameters a
# layer.
DRY = {
    "llava_med": {"text_config": {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 512,
                                  "num_attention_heads": 4, "num_key_value_heads": 2},
                  "vision_config": {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
                                    "num_attention_heads": 2, "projection_dim": 64}},
    "qwen2_vl_2b": {"text_config": {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 512,
                                    "num_attention_heads": 2, "num_key_value_heads": 1},
                    "vision_config": {"depth": 2, "embed_dim": 64, "num_heads": 2, "hidden_size": 256}},
}


def overrides(name: str, args, dry: bool, out: str) -> list[str]:
    arch = [f"model.architecture.{sub}.{k}={v}" for sub, dims in DRY[name].items() for k, v in dims.items()]
    return [f"model={name}", f"recipe={args.recipe}", f"data.max_length={args.max_length}",
            "data.batch_size=1",
            "gradient_checkpointing=true", "trainer=gpu", "logger=none", f"paths.output_dir={out}",
            *(arch + ["trainer.accelerator=cpu"] if dry else [])]


def build(cfg, device: str):
    """The real architecture of `cfg.model` with random weights on `device` in bf16, as `from_pretrained`
    would load it there (`model.dtype=auto` on a GPU), then the recipe's trainable parameters."""
    conf = as_model_conf(cfg.model)
    family = family_of(conf)
    config = family.config_class(**OmegaConf.to_container(OmegaConf.create(conf.architecture)))
    torch.manual_seed(0)
    with torch.device(device):
        model = family.model_class._from_config(config, dtype=torch.bfloat16)
        return prepare_trainable(model, cfg.recipe)  # adapters on the device of the layers they adapt


def llava_batch(model, length: int) -> dict:
    """<bos>, a few prompt tokens, the image's tokens, text up to `length`; pixel values as the processor
    gives."""
    config = model.config
    vision = config.vision_config
    n_image = (vision.image_size // vision.patch_size) ** 2 + (config.vision_feature_select_strategy
                                                               == "full")
    rng = np.random.default_rng(0)
    text = rng.integers(3, config.image_token_id, length - n_image - 1).tolist()
    ids = [1, *text[:8], *[config.image_token_id] * n_image, *text[8:]]
    pixels = torch.from_numpy(
        rng.standard_normal((1, 3, vision.image_size, vision.image_size), dtype=np.float32))
    return {"input_ids": torch.tensor([ids]), "pixel_values": pixels}, n_image


def qwen2_vl_batch(model, length: int) -> dict:
    """Med-R1's input: a 384 px image through Qwen2-VL's own image processor (392 px: 28x28 patches, 196
    tokens after the 2x2 merge), framed by the vision start/end tokens, mm_token_type_ids marking the image
    tokens."""
    from transformers import Qwen2VLImageProcessorPil

    config = model.config
    vision = config.vision_config
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (384, 384, 3), dtype=np.uint8))
    processor = Qwen2VLImageProcessorPil(patch_size=vision.patch_size, merge_size=vision.spatial_merge_size,
                                         temporal_patch_size=vision.temporal_patch_size)
    enc = processor(images=[image], return_tensors="pt")
    n_image = int(enc["image_grid_thw"].prod()) // vision.spatial_merge_size**2
    text = rng.integers(0, config.vision_start_token_id, length - n_image - 2).tolist()
    ids = [*text[:8], config.vision_start_token_id, *[config.image_token_id] * n_image,
           config.vision_end_token_id,
           *text[8:]]
    types = [0] * 9 + [1] * n_image + [0] * (length - 9 - n_image)
    return {"input_ids": torch.tensor([ids]), "mm_token_type_ids": torch.tensor([types]),
            "pixel_values": enc["pixel_values"], "image_grid_thw": enc["image_grid_thw"]}, n_image


def train_batch(model, length: int) -> tuple[dict, int]:
    make = {"llava": llava_batch, "qwen2_vl": qwen2_vl_batch}[model.config.model_type]
    batch, n_image = make(model, length)
    ids = batch["input_ids"]
    assert ids.shape == (1, length), ids.shape
    labels = ids.clone()
    labels[:, : length - int(0.4 * length)] = IGNORE_INDEX  # prompt and image unsupervised, like the collator
    return {**batch, "attention_mask": torch.ones_like(ids), "labels": labels, "item_ids": ["bench"]}, n_image


class StepMemory(pl.Callback):
    """Allocated bytes and seconds of each training step: at its start, the forward's peak, at the start of
    backward (what the forward left for it), the peak of backward + clipping + optimizer, and the step's
    peak."""

    def __init__(self, track: bool):
        self.track = track
        self.peaks, self.seconds, self.starts = [], [], []
        self.forward_peaks, self.backward_starts, self.backward_peaks = [], [], []
        self.reserved = 0
        self.grads_and_states = None  # bytes of .grad and AdamW states at the last step's start

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.track:
            torch.cuda.synchronize()
            self.starts.append(torch.cuda.memory_allocated())
            tensors = [p.grad for p in module.parameters() if p.grad is not None]
            tensors += [t for opt in trainer.optimizers for s in opt.state.values() for t in s.values()
                        if torch.is_tensor(t) and t.is_cuda]
            self.grads_and_states = sum(t.numel() * t.element_size() for t in tensors)
            torch.cuda.reset_peak_memory_stats()
        self._start = time.perf_counter()

    def on_before_backward(self, trainer, module, loss):
        if self.track:
            torch.cuda.synchronize()
            self.forward_peaks.append(torch.cuda.max_memory_allocated())
            self.backward_starts.append(torch.cuda.memory_allocated())
            self.reserved = max(self.reserved, torch.cuda.max_memory_reserved())
            torch.cuda.reset_peak_memory_stats()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.track:
            torch.cuda.synchronize()
            self.backward_peaks.append(torch.cuda.max_memory_allocated())
            self.peaks.append(max(self.forward_peaks[-1], self.backward_peaks[-1]))
            self.reserved = max(self.reserved, torch.cuda.max_memory_reserved())
        self.seconds.append(time.perf_counter() - self._start)


def measure(name: str, args, dry: bool) -> dict:
    device = "cpu" if dry else "cuda"
    out = tempfile.mkdtemp(prefix="mvqa-gpu-memory-")
    cfg = compose_train(overrides(name, args, dry, out))
    fp = count_params(cfg)
    predicted = per_gpu(cfg, "ddp", 1, fp)
    if torch.cuda.is_available() and not dry:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model = build(cfg, device)
    build_s = time.perf_counter() - start
    trainable, total = count_parameters(model)
    assert (trainable, total) == (fp.trainable, fp.total), ((trainable, total), (fp.trainable, fp.total))
    batch, n_image = train_batch(model.get_base_model(), cfg.data.max_length)
    weights = torch.cuda.memory_allocated() if not dry else None
    build_peak = torch.cuda.max_memory_allocated() if not dry else None

    module = VQAFineTuner(model, None, cfg.recipe, gradient_checkpointing=cfg.gradient_checkpointing)
    steps = StepMemory(track=not dry)
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=False, callbacks=[steps], max_steps=args.steps,
                                      enable_checkpointing=False, limit_val_batches=0,
                                      enable_progress_bar=False)
    trainer.fit(module, DataLoader([batch] * args.steps, batch_size=None))
    assert trainer.global_step == args.steps and len(steps.seconds) == args.steps
    loss = float(trainer.callback_metrics["train/loss"])
    attn = model.get_base_model().config._attn_implementation

    r = {"params": total, "trainable": trainable, "image_tokens": n_image, "attn": attn, "build_s": build_s,
         "step_s": steps.seconds[-1], "loss": loss,
         "predicted_weights_gib": predicted.weights / GIB, "predicted_grads_gib": predicted.grads / GIB,
         "predicted_optimizer_gib": predicted.optimizer / GIB,
         "predicted_activations_gib": predicted.activations / GIB,
         "predicted_gib": predicted.total / GIB,
         # trainer=gpu has no DDP: the gradients once, without the bucket copy the ddp row counts
         "predicted_single_gpu_gib": (predicted.total - predicted.grads / 2) / GIB}
    if not dry:
        peak = max(build_peak, *steps.peaks)
        gib = lambda xs: [round(x / GIB, 3) for x in xs]
        r.update({"measured_weights_gib": weights / GIB, "measured_step_peaks_gib": gib(steps.peaks),
                  "measured_forward_peaks_gib": gib(steps.forward_peaks),
                  "measured_backward_starts_gib": gib(steps.backward_starts),
                  "measured_backward_peaks_gib": gib(steps.backward_peaks),
                  # allocated at the last step's start that is neither weights nor .grad nor AdamW states:
                  # cuBLAS workspaces (allocated by the first matmuls) and the batch
                  "measured_other_at_step_start_gib": (steps.starts[-1] - weights
                                                       - steps.grads_and_states) / GIB,
                  "measured_peak_gib": peak / GIB, "measured_peak_reserved_gib": steps.reserved / GIB,
                  "measured_above_weights_gib": (peak - weights) / GIB,
                  "predicted_above_weights_gib": (predicted.total - predicted.weights) / GIB,
                  "ratio_measured_vs_predicted": peak / predicted.total,
                  "ratio_measured_vs_single_gpu": peak / (predicted.total - predicted.grads / 2)})
    del trainer, module, model, batch
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return r


def main() -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="qwen2_vl_2b,llava_med", help="model/ options, comma-separated")
    parser.add_argument("--recipe", default="lora_r8")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=2, help="training steps (the 2nd holds AdamW's states)")
    parser.add_argument("--dry-run", action="store_true",
                        help="scaled-down models on the CPU; nothing recorded")
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print("bench/gpu_memory.py needs a CUDA GPU (torch.cuda.is_available() is False): nothing measured, "
              "bench/results/gpu_memory.json left as it is. `--dry-run` runs the code on scaled-down models.",
              file=sys.stderr)
        return None
    models = args.models.split(",")
    result = {"device": torch.cuda.get_device_name() if not args.dry_run else "cpu (dry run)",
              "torch": torch.__version__, "transformers": __import__("transformers").__version__,
              "peft": __import__("peft").__version__, "recipe": args.recipe, "max_length": args.max_length,
              "batch": 1, "gradient_checkpointing": True, "precision": "bf16-mixed", "steps": args.steps}
    for name in models:
        r = measure(name, args, args.dry_run)
        result.update({f"{name}_{k}": v for k, v in r.items()})
        line = (
            f"{name}: {r['params'] / 1e9:.2f}B parameters ({r['trainable']:,} trainable), {args.max_length} "
            "tokens "
            f"({r['image_tokens']} image), attention {r['attn']}, built in {r['build_s']:.1f} s, step "
            f"{r['step_s']:.2f} s, loss {r['loss']:.3f}\n  predicted (ddp, 1 GPU): weights "
            f"{r['predicted_weights_gib']:.2f} + grads {r['predicted_grads_gib']:.2f} + optimizer "
            f"{r['predicted_optimizer_gib']:.2f} + activations {r['predicted_activations_gib']:.2f} = "
            f"{r['predicted_gib']:.2f} GiB")
        if not args.dry_run:
            line += (
                f"\n  measured: weights {r['measured_weights_gib']:.2f} GiB, peak "
                f"{r['measured_peak_gib']:.2f} GiB "
                f"(steps {', '.join(f'{p:.2f}' for p in r['measured_step_peaks_gib'])}; reserved "
                f"{r['measured_peak_reserved_gib']:.2f}); per step: forward peak "
                f"{r['measured_forward_peaks_gib']}, at backward start {r['measured_backward_starts_gib']}, "
                f"backward peak {r['measured_backward_peaks_gib']}; neither weights, grads nor AdamW states "
                "at "
                f"the last step's start {r['measured_other_at_step_start_gib']:.3f}\n"
                f"  above the weights {r['measured_above_weights_gib']:.2f} "
                f"vs {r['predicted_above_weights_gib']:.2f} predicted\n  measured / predicted: "
                f"{r['ratio_measured_vs_predicted']:.3f}")
        print(line, flush=True)
    if args.dry_run:
        print("dry run: scaled-down models on the CPU, nothing measured or recorded")
        return result
    return record(result, "gpu_memory", digits=3)


if __name__ == "__main__":
    main()
