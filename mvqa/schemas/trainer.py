"""Schema of the `trainer/` group: a `pytorch_lightning.Trainer`, shared by training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GROUP = "trainer"


@dataclass
class TrainerConf:
    _target_: str = "pytorch_lightning.Trainer"
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    # A string ("ddp", "ddp_spawn", "deepspeed_stage_2") or a strategy node with its own _target_.
    strategy: Any = "auto"
    # bf16-mixed on GPU; fp32 on CPU (bf16 matmuls are slow on CPU and change the numbers the tests pin).
    precision: Any = "32-true"
    max_epochs: int = "${oc.select:recipe.epochs,1}"  # type: ignore[assignment]
    max_steps: int = -1
    gradient_clip_val: float | None = "${oc.select:recipe.grad_clip,null}"  # type: ignore[assignment]
    accumulate_grad_batches: int = "${oc.select:recipe.accumulate_grad_batches,1}"  # type: ignore[assignment]
    val_check_interval: Any = None
    check_val_every_n_epoch: int | None = 1
    limit_val_batches: Any = None
    log_every_n_steps: int = 10
    num_sanity_val_steps: int = 0
    enable_checkpointing: bool = True
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    deterministic: bool = False
    default_root_dir: str = "${paths.output_dir}"


SCHEMAS = {"schema_trainer": TrainerConf}
