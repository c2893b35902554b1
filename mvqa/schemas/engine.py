"""Schemas of the `engine/` group: who runs `generate` (HF in-process, or vLLM on a GPU)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import II

GROUP = "engine"


@dataclass
class GenerationDefaults:
    """Decoding used when a caller passes no `GenerationParams` (budget points are set per call)."""

    max_new_tokens: int = 256  # the seed's cap for traces
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    num_samples: int = 1  # generations per request (with do_sample)
    seed: int = II("seed")  # the top-level seed unless overridden
    # auto: single-pass budget forcing for greedy, s1's multi-pass loop for sampling; single_pass | multi_pass
    budget_impl: str = "auto"


@dataclass
class HFEngineConf(GenerationDefaults):
    _target_: str = "mvqa.generation.engine.HFEngine"
    batch_size: int = 8
    progress: bool = True
    # Chat-templated prompts carry their own BOS; set true for a template that leaves it to the tokenizer.
    add_special_tokens: bool = False


@dataclass
class VLLMEngineConf(GenerationDefaults):
    _target_: str = "mvqa.generation.engine.VLLMEngine"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    dtype: str = "auto"
    progress: bool = True
    # A PEFT adapter (evaluate's adapters=[...], model.adapter): serve = vLLM's LoRA loads it from its dir;
    # merge = merged into a copy of the base (in merge_dir) that vLLM loads; auto = serve, or merge an adapter
    # vLLM's LoRA cannot load (modules_to_save, trained token rows: recipe.train_projector / train_*_rows).
    lora: str = "auto"
    max_lora_rank: int | None = None  # null: the smallest of vLLM's ranks (8, 16, 32...) fitting the adapters
    merge_dir: str | None = None  # null: a temp dir, removed when the run ends


SCHEMAS = {"schema_hf": HFEngineConf, "schema_vllm": VLLMEngineConf}
