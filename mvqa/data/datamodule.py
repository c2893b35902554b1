"""A LightningDataModule over item lists: training batches, validation loss batches, generation batches.

The one-process training loader is resumable mid-epoch: its order depends on (seed, epoch) only, and its
state (epoch, batches the loop has consumed) goes into every checkpoint, so a run resumed from a checkpoint
taken after batch k skips exactly those k batches and sees what an uninterrupted run would, in the same order.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

from mvqa.data.records import VQAItem


class EpochShuffle(Sampler[int]):
    """DistributedSampler's one-replica order (randperm seeded with seed + epoch), able to start mid-epoch."""

    def __init__(self, n: int, batch_size: int, seed: int = 0) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches to skip) from a checkpoint

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before each epoch
        self.epoch = epoch

    def resume_at(self, epoch: int, batches_done: int) -> None:
        self._resume = (epoch, batches_done)

    def skipped_batches(self) -> int:
        return self._resume[1] if self._resume and self._resume[0] == self.epoch else 0

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        skip = self.skipped_batches()
        self._resume = None  # the next epoch starts at its beginning
        return iter(order[skip * self.batch_size:])

    def __len__(self) -> int:
        return self.n  # the epoch's length: Lightning counts the skipped batches as already done


class ResumableLoader(DataLoader):
    """A DataLoader Lightning checkpoints (it has state_dict/load_state_dict): the epoch and how many of its
    batches the training loop consumed. Counted by VQADataModule.on_before_batch_transfer, which Lightning
    calls for the batch it is about to train on, not for the one it prefetched."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batches_done = 0

    def __iter__(self):
        self.batches_done = self.sampler.skipped_batches()
        return super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.sampler.epoch, "batches_done": self.batches_done, "seed": self.sampler.seed,
                "n": self.sampler.n, "batch_size": self.sampler.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = {"seed": self.sampler.seed, "n": self.sampler.n, "batch_size": self.sampler.batch_size}
        theirs = {k: state.get(k) for k in mine}
        if theirs != mine:
            raise ValueError(f"the checkpoint's training data position was taken with {theirs}, this run has "
                             f"{mine}: resuming would not continue the same epoch (same seed, data and batch "
                             "size are needed)")
        self.sampler.resume_at(state["epoch"], state["batches_done"])


class VQADataModule(pl.LightningDataModule):
    """Validation yields two loaders: teacher-forced loss (index 0) and greedy-generation accuracy (index
    1)."""

    def __init__(self, train_items: list[VQAItem], val_items: list[VQAItem], train_collator,
                 generate_collator,
                 batch_size: int = 8, eval_batch_size: int | None = None, num_workers: int = 0,
                 seed: int = 0, predict_items: list[VQAItem] | None = None,
                 val_generate_limit: int | None = None) -> None:
        super().__init__()
        self.train_items, self.val_items = train_items, val_items
        self.predict_items = predict_items or val_items
        self.train_collator, self.generate_collator = train_collator, generate_collator
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed = num_workers, seed
        # Generating is the slow part of validation: accuracy is measured on the first N val items (a fixed
        # slice, the same every epoch); the loss on all of them.
        self.val_generate_items = val_items[:val_generate_limit] if val_generate_limit else val_items
        self._resume_state: dict[str, Any] | None = None  # the training position of a checkpoint resumed from

    def _loader(self, items, collator, batch_size, sampler=None, shuffle=False, cls=DataLoader) -> DataLoader:
        return cls(items, batch_size=batch_size, sampler=sampler, shuffle=shuffle, collate_fn=collator,
                   num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        if self.trainer is not None and self.trainer.world_size > 1:
            # Lightning puts in its DistributedSampler, shuffled by (seed, epoch) the same way;
            # resuming such a
            # run mid-epoch restarts the epoch (Lightning warns), at an epoch boundary it is exact.
            return self._loader(self.train_items, self.train_collator, self.batch_size, shuffle=True)
        sampler = EpochShuffle(len(self.train_items), self.batch_size, seed=self.seed)
        loader = self._loader(self.train_items, self.train_collator, self.batch_size, sampler=sampler,
                              cls=ResumableLoader)
        if self._resume_state is not None:
            loader.load_state_dict(self._resume_state)
        return loader

    def _resumable_loader(self) -> ResumableLoader | None:
        loader = self.trainer.train_dataloader if self.trainer is not None else None
        return loader if isinstance(loader, ResumableLoader) else None

    # The position also travels as the datamodule's state: Lightning restores that before anything builds the
    # loader, while it skips the loader's own state when the loader was built early
    # (configure_optimizers reads
    # trainer.estimated_stepping_batches, which sets up the training data before the loops are restored).
    def state_dict(self) -> dict[str, Any]:
        loader = self._resumable_loader()
        return {"train_position": loader.state_dict()} if loader is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume_state = state.get("train_position")
        if self._resume_state is not None and self._resumable_loader() is not None:
            self._resumable_loader().load_state_dict(self._resume_state)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        loader = self._resumable_loader()  # the loader Lightning iterates (it may have rebuilt ours)
        if loader is not None and self.trainer.training:
            loader.batches_done += 1
        return batch

    def val_dataloader(self) -> list[DataLoader]:
        if not self.val_items:
            return []
        return [self._loader(self.val_items, self.train_collator, self.eval_batch_size),
                self._loader(self.val_generate_items, self.generate_collator, self.eval_batch_size)]

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_items, self.generate_collator, self.eval_batch_size)
