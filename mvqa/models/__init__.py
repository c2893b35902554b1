"""Model layer: one loader for real and tiny offline VLMs, LLaVA-Med conversion, LoRA adapters."""

from mvqa.models.bundle import ModelBundle, SpecialTokens

__all__ = ["ModelBundle", "SpecialTokens"]
