"""Schema of the `recipe/` group: what is trained (LoRA, full, QLoRA) and the optimiser settings."""

from __future__ import annotations

from dataclasses import dataclass, field

GROUP = "recipe"


@dataclass
class RecipeConf:
    name: str = "lora_r8"
    method: str = "lora"  # lora | full | qlora
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target: str = "attn"  # attn | attn_mlp, always the language model's projections (never the vision tower)
    train_projector: bool = False  # train the multimodal projector in full (PEFT modules_to_save)
    # LoRA: also train the embedding and output rows of the think/answer delimiter tokens. A base that never
    # wrote </think> (a direct-answer model) cannot learn to close its thinking through attention adapters
    # alone.
    train_delimiter_rows: bool = False
    # LoRA: also train the embedding and LM-head rows of every token the training targets use. For a base
    # whose language was never trained on such text (the demo's from-scratch tiny base never wrote a reasoning
    # word): its rows for those words are random, and adapters on the projections cannot move them.
    train_target_rows: bool = False
    # Full fine-tunes keep the vision tower frozen unless this is set (training a random-init tower from
    # scratch).
    train_vision: bool = False
    # LoRA: the dtype of the adapter weights. float32: PEFT's default, 16-bit bases get fp32 adapters (and
    # fp32 AdamW states). base: the dtype of the weights they adapt (bf16 on a GPU), which FSDP needs: it
    # flattens each decoder layer into one tensor of one dtype (trainer=fsdp; or keep fp32 adapters with
    # model.dtype=float32).
    adapter_dtype: str = "float32"  # float32 | base
    lr: float = 1e-4
    projector_lr: float | None = None  # null: same as lr
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_ratio: float = 0.03
    epochs: int = 1
    scheduler: str = "cosine"
    grad_clip: float | None = 1.0
    accumulate_grad_batches: int = 1


SCHEMAS = {"schema_recipe": RecipeConf}
