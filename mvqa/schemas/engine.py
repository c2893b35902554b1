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


SCHEMAS = {"schema_hf": HFEngineConf, "schema_vllm": VLLMEngineConf}
