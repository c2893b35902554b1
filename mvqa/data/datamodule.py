"""A LightningDataModule over item lists: training batches, validation loss batches, generation batches."""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader, DistributedSampler

from mvqa.data.records import VQAItem


class VQADataModule(pl.LightningDataModule):
    """Validation yields two loaders: teacher-forced loss (index 0) and greedy-generation accuracy (index 1)."""

    def __init__(self, train_items: list[VQAItem], val_items: list[VQAItem], train_collator, generate_collator,
                 batch_size: int = 8, eval_batch_size: int | None = None, num_workers: int = 0,
                 seed: int = 0, predict_items: list[VQAItem] | None = None) -> None:
        super().__init__()
        self.train_items, self.val_items, self.predict_items = train_items, val_items, predict_items or val_items
        self.train_collator, self.generate_collator = train_collator, generate_collator
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed = num_workers, seed

    def _loader(self, items, collator, batch_size, sampler=None, shuffle=False) -> DataLoader:
        return DataLoader(items, batch_size=batch_size, sampler=sampler, shuffle=shuffle, collate_fn=collator,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        if self.trainer is not None and self.trainer.world_size > 1:
            # Lightning puts in its DistributedSampler, shuffled by (seed, epoch) the same way.
            return self._loader(self.train_items, self.train_collator, self.batch_size, shuffle=True)
        # A one-replica DistributedSampler: the order depends on (seed, epoch) only, and Lightning sets the
        # epoch, so a run resumed from a checkpoint sees exactly the batches an uninterrupted run would.
        sampler = DistributedSampler(self.train_items, num_replicas=1, rank=0, shuffle=True, seed=self.seed)
        return self._loader(self.train_items, self.train_collator, self.batch_size, sampler=sampler)

    def val_dataloader(self) -> list[DataLoader]:
        if not self.val_items:
            return []
        return [self._loader(self.val_items, self.train_collator, self.eval_batch_size),
                self._loader(self.val_items, self.generate_collator, self.eval_batch_size)]

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_items, self.generate_collator, self.eval_batch_size)
