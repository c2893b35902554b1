"""The LightningModule that fine-tunes any model of the model group (LoRA or full) on formatted traces."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from mvqa.data.collators import model_inputs
from mvqa.data.grading import grade_output
from mvqa.data.records import KINDS
from mvqa.models.lora import optimizer_groups
from mvqa.train.strategies import check_fsdp_dtypes


class VQAFineTuner(pl.LightningModule):
    """Loss on assistant tokens only (the collator masks the rest); validation loss and generated accuracy,
    overall (`val/acc`) and per question kind (`val/acc_mcq`, `val/acc_closed`, `val/acc_open`: closed
    accuracy, open normalised exact match; mvqa.data.grading) for the kinds the validation set has.

    For LoRA runs checkpoints hold only the trainable parameters (the adapter, and the projector when it is
    trained), so resuming loads them over the frozen base that the recipe rebuilt.
    """

    def __init__(self, model, tokenizer, recipe, max_new_tokens: int = 64,
                 gradient_checkpointing: bool = False) -> None:
        super().__init__()
        self.model, self.tokenizer, self.recipe = model, tokenizer, recipe
        self.max_new_tokens = max_new_tokens
        self.adapter_only = recipe.method in ("lora", "qlora")
        # Missing frozen base weights in an adapter-only checkpoint are expected on resume.
        self.strict_loading = not self.adapter_only
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if self.adapter_only:
                # PEFT: checkpointed blocks need grads on their inputs
                self.model.enable_input_require_grads()
        self._reset_val_counts()
        self.validated_at_step: int | None = None  # the global step whose weights val/acc last measured

    def _reset_val_counts(self) -> None:
        # Per kind, in KINDS order: summed across ranks at the epoch's end, so every rank logs the same keys.
        self._val_correct, self._val_total = torch.zeros(len(KINDS)), torch.zeros(len(KINDS))

    def setup(self, stage: str) -> None:
        # Before the strategy wraps the model: FSDP refuses a unit of mixed dtypes, and says so only then.
        check_fsdp_dtypes(self.model, self.trainer.strategy)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None) -> None:
        from torch.distributed.fsdp import FullyShardedDataParallel

        # Lightning refuses norm clipping under FSDP (torch.nn.utils.clip_grad_norm_ would see one shard's
        # grads only): the root FSDP module computes the norm over every rank's shards.
        wrapped = self.trainer.model
        if (isinstance(wrapped, FullyShardedDataParallel) and gradient_clip_val
                and (gradient_clip_algorithm or "norm") == "norm"):
            wrapped.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_fit_start(self) -> None:
        self.model.train()  # from_pretrained returns eval mode

    def forward(self, batch: dict[str, Any]):
        return self.model(**model_inputs(batch))

    def training_step(self, batch, batch_idx):
        loss = self(batch).loss
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["item_ids"]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._reset_val_counts()

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        n = len(batch["item_ids"])
        if dataloader_idx == 0:
            self.log("val/loss", self(batch).loss, prog_bar=True, batch_size=n, add_dataloader_idx=False)
            return
        for text, item in zip(self.generate(batch), batch["items"]):
            k = KINDS.index(item.kind)
            self._val_correct[k] += float(grade_output(item, text).correct)
            self._val_total[k] += 1

    def on_validation_epoch_end(self) -> None:
        correct = self.trainer.strategy.reduce(self._val_correct.to(self.device), reduce_op="sum")
        total = self.trainer.strategy.reduce(self._val_total.to(self.device), reduce_op="sum")
        if total.sum() == 0:
            return
        self.log("val/acc", correct.sum() / total.sum(), prog_bar=True)
        for k, kind in enumerate(KINDS):
            if total[k] > 0:
                self.log(f"val/acc_{kind}", correct[k] / total[k])
        self.validated_at_step = self.global_step

    @torch.no_grad()
    def generate(self, batch: dict[str, Any]) -> list[str]:
        inputs = {k: v for k, v in model_inputs(batch).items() if k != "labels"}
        pad = self.tokenizer.pad_token_id
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                  pad_token_id=pad, suppress_tokens=[pad])
        return self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=False)

    def configure_optimizers(self):
        r = self.recipe
        optimizer = torch.optim.AdamW(optimizer_groups(self.model, r), lr=r.lr, weight_decay=r.weight_decay,
                                      betas=tuple(r.betas))
        total = int(self.trainer.estimated_stepping_batches)
        warmup = math.ceil(r.warmup_ratio * total)
        make = {"cosine": get_cosine_schedule_with_warmup, "linear": get_linear_schedule_with_warmup}
        if r.scheduler not in make:
            raise ValueError(f"recipe.scheduler must be one of {sorted(make)}, got {r.scheduler!r}")
        scheduler = make[r.scheduler](optimizer, num_warmup_steps=warmup, num_training_steps=max(total, 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.adapter_only:
            keep = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
