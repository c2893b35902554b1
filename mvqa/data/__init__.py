"""Data layer: the canonical item record, readers, the synthetic world, images, datamodule and collators.

This package never imports curate, train, eval, generation or models: they build on it.
"""

from mvqa.data.records import LETTERS, VQAItem, items_from_frame, items_to_frame, letter_index

__all__ = ["LETTERS", "VQAItem", "items_from_frame", "items_to_frame", "letter_index"]
