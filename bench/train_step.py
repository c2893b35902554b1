"""Training step speed: the LightningModule (VQAFineTuner in a Trainer) against a bare PyTorch + PEFT loop.

Same tiny LLaVA (the demo preset), same LoRA recipe, same pre-collated synthetic batches, same AdamW + cosine
schedule; goal: Lightning's step time <= 1.15x the bare loop's. Also reports the process's peak RSS and the
adapter's size against a full checkpoint.

    python bench/train_step.py [--steps 60] [--batch 8]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from transformers import get_cosine_schedule_with_warmup

sys.path.insert(0, str(Path(__file__).parent))
from budget import record

from mvqa.data.collators import VQACollator, model_inputs
from mvqa.data.synthetic import read_synthetic
from mvqa.models.load import load_model
from mvqa.models.lora import optimizer_groups, prepare_trainable, save_adapter
from mvqa.models.tiny import tiny_conf
from mvqa.schemas.recipe import RecipeConf
from mvqa.train.module import VQAFineTuner
from mvqa.train.trace_format import TraceFormatter


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mvqa-bench-"))
    recipe = OmegaConf.structured(RecipeConf(lr=1e-3, warmup_ratio=0.05))
    items = read_synthetic(str(work / "world"), n_train=args.batch * 8, n_val=4, n_test=4)[0]

    def fresh():
        torch.manual_seed(0)
        bundle = load_model(tiny_conf("llava", cache_dir=str(work / "models")))
        return bundle, prepare_trainable(bundle.model, recipe)

    bundle, _ = fresh()
    items, _ = TraceFormatter(num_waits=1)(items, bundle.special_tokens)
    collate = VQACollator(bundle.processor, "med_r1_seed", max_length=512)
    batches = [collate(items[i:i + args.batch]) for i in range(0, len(items), args.batch)]
    batches = (batches * (args.steps // len(batches) + 1))[: args.steps]

    # Bare loop: forward, backward, clip, AdamW, scheduler.
    _, model = fresh()
    model.train()
    optimizer = torch.optim.AdamW(optimizer_groups(model, recipe), lr=recipe.lr, betas=tuple(recipe.betas))
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(0.05 * args.steps), args.steps)
    start = time.perf_counter()
    for batch in batches:
        model(**model_inputs(batch)).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    bare = (time.perf_counter() - start) / args.steps

    # The same through Lightning.
    bundle, model = fresh()
    module = VQAFineTuner(model, bundle.tokenizer, recipe)
    trainer = pl.Trainer(accelerator="cpu", max_steps=args.steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         gradient_clip_val=recipe.grad_clip,
                         num_sanity_val_steps=0)
    loader = DataLoader(batches, batch_size=None, shuffle=False)
    start = time.perf_counter()
    trainer.fit(module, loader)
    lightning = (time.perf_counter() - start) / args.steps

    adapter = save_adapter(model, work / "adapter")
    # fresh base: the full checkpoint a full fine-tune would write
    bundle.model.save_pretrained(work / "full")
    result = {"steps": args.steps, "batch": args.batch, "seq_len": int(batches[0]["input_ids"].shape[1]),
              "bare_step_s": bare, "lightning_step_s": lightning, "ratio_lightning_vs_bare": lightning / bare,
              "goal_ratio_le_1_15": lightning / bare <= 1.15,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "adapter_mb": dir_mb(adapter), "full_checkpoint_mb": dir_mb(work / "full")}
    result["adapter_vs_full"] = result["adapter_mb"] / result["full_checkpoint_mb"]
    print(f"bare PyTorch+PEFT step {bare * 1000:.1f} ms; Lightning step {lightning * 1000:.1f} ms; "
          f"ratio {lightning / bare:.3f}x (goal <= 1.15)")
    print(
        f"peak RSS {result['peak_rss_mb']:.0f} MB; adapter {result['adapter_mb']:.2f} MB vs full checkpoint "
        f"{result['full_checkpoint_mb']:.2f} MB ({result['adapter_vs_full']:.3f}x)")
    return record(result, "train_step", digits=4)


if __name__ == "__main__":
    main()
