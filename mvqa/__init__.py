"""MVQA: curate hard, diverse medical VQA reasoning sets, LoRA fine-tune a VLM on them, evaluate with budget
forcing."""

__version__ = "0.1.0"
