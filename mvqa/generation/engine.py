"""Generation engines: batched HF `generate` (any model of the model group) and vLLM (GPU only).

Both take chat-templated prompts (+ PIL images) and return one `Generation` per (request, sample), in request
order. With a `BudgetPoint` in the params, the thinking section is budget-forced (see `budget.py`).
"""

from __future__ import annotations

import copy
import gc
import importlib.util
import itertools
import json
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from mvqa.generation.budget import (
    BudgetForcer,
    BudgetPoint,
    RowTrace,
    forcing_ids,
    multipass_budget_forcing,
    total_new_tokens,
)
from mvqa.models.bundle import ModelBundle
from mvqa.schemas.engine import GenerationDefaults, HFEngineConf, VLLMEngineConf

BUDGET_IMPLS = ("auto", "single_pass", "multi_pass")


@dataclass
class GenerationRequest:
    prompt: str  # already chat-templated
    images: list[Any] = field(default_factory=list)  # PIL images, one per image placeholder in the prompt
    id: str = ""


@dataclass(frozen=True)
class GenerationParams:
    # The defaults are engine/'s (GenerationDefaults), the one home of each.
    max_new_tokens: int = GenerationDefaults.max_new_tokens  # with budget forcing the budget point sets it
    do_sample: bool = GenerationDefaults.do_sample
    temperature: float = GenerationDefaults.temperature
    top_p: float = GenerationDefaults.top_p
    top_k: int = GenerationDefaults.top_k  # 0: off
    num_samples: int = GenerationDefaults.num_samples  # generations per request (sampling only)
    seed: int = 0  # the schema's is ${seed}, the entries' seed, whose default is also 0
    budget: BudgetPoint | None = None
    # auto: the single-pass processor for greedy decoding, s1's multi-pass loop for sampling
    budget_impl: str = GenerationDefaults.budget_impl

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens}, expected >= 1")
        if self.num_samples < 1 or (self.num_samples > 1 and not self.do_sample):
            raise ValueError(f"num_samples={self.num_samples}: expected 1, or more with do_sample=true")
        if self.budget_impl not in BUDGET_IMPLS:
            raise ValueError(f"budget_impl={self.budget_impl!r}, expected one of {BUDGET_IMPLS}")
        if self.budget_impl == "single_pass" and self.do_sample:
            raise ValueError(
                "budget_impl=single_pass is exact for greedy decoding only; with do_sample=true "
                "use budget_impl=auto (the multi-pass loop)"
            )

    @property
    def multipass(self) -> bool:
        return self.budget_impl == "multi_pass" or (self.budget_impl == "auto" and self.do_sample)


@dataclass
class Generation:
    request_index: int
    sample_index: int
    text: str  # the completion; starts with the think opener when budget forcing put it in the prompt
    token_ids: list[int]  # the completion's ids (no pad, no final eos)
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # eos | length
    id: str = ""
    # with budget forcing only
    thinking: str | None = None
    thinking_tokens: int | None = None
    waits_used: int | None = None
    forced_end: bool | None = None


def eos_ids(bundle: ModelBundle) -> list[int]:
    """End-of-sequence ids of the tokenizer and the model's generation config (either may be a list)."""
    ids: set[int] = set()
    config = getattr(bundle.model, "generation_config", None)
    for value in (bundle.tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
        ids.update([value] if isinstance(value, int) else value or [])
    return sorted(ids)


def prompt_text(request: GenerationRequest, params: GenerationParams, bundle: ModelBundle) -> str:
    """The prompt, with the think opener appended when budget forcing asks for it (s1/m1 force it)."""
    opener = bundle.special_tokens.think_start
    if params.budget and params.budget.force_think_start and not request.prompt.rstrip().endswith(opener):
        return request.prompt + opener
    return request.prompt


def _work(requests: Sequence[GenerationRequest], params: GenerationParams) -> list[tuple[int, int]]:
    return [(r, s) for r in range(len(requests)) for s in range(params.num_samples)]


def _plain_row(tokens: list[int], eos: set[int], max_new: int) -> RowTrace:
    """A completion without forcing: cut at the first eos (what follows is padding)."""
    tokens = tokens[:max_new]
    cut = next((j for j, t in enumerate(tokens) if t in eos), None)
    return RowTrace(tokens=tokens if cut is None else tokens[:cut], ended_by_eos=cut is not None)


def _to_generation(
    bundle: ModelBundle,
    params: GenerationParams,
    request: GenerationRequest,
    index: tuple[int, int],
    row: RowTrace,
    prompt_tokens: int,
) -> Generation:
    decode = lambda ids: bundle.tokenizer.decode(ids, skip_special_tokens=False)
    text = decode(row.tokens)
    budget = params.budget
    if budget and budget.force_think_start:
        text = bundle.special_tokens.think_start + text
    return Generation(
        request_index=index[0],
        sample_index=index[1],
        text=text,
        token_ids=row.tokens,
        id=request.id,
        prompt_tokens=prompt_tokens,
        completion_tokens=len(row.tokens),
        finish_reason="eos" if row.ended_by_eos else "length",
        thinking=decode(row.tokens[: row.thinking_tokens]) if budget else None,
        thinking_tokens=row.thinking_tokens if budget else None,
        waits_used=row.waits_used if budget else None,
        forced_end=row.forced_end if budget else None,
    )


class _PassStop(StoppingCriteria):
    """Per-row end of one multi-pass pass: its own token budget, or a stop id."""

    def __init__(self, max_new: list[int], stop_ids: list[int], prompt_len: int):
        self.max_new, self.stop_ids, self.prompt_len = (
            torch.tensor(max_new),
            torch.tensor(stop_ids),
            prompt_len,
        )

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs) -> torch.BoolTensor:
        step = input_ids.shape[1] - self.prompt_len
        return (self.max_new.to(input_ids.device) <= step) | torch.isin(
            input_ids[:, -1], self.stop_ids.to(input_ids.device)
        )


class _BanStops(LogitsProcessor):
    """Bans the stop ids for each row's first min_new[i] tokens (vLLM's `min_tokens`, per row)."""

    def __init__(self, min_new: list[int], stop_ids: list[int], prompt_len: int):
        self.min_new, self.stop_ids, self.prompt_len = (
            torch.tensor(min_new),
            torch.tensor(stop_ids),
            prompt_len,
        )

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = (self.min_new > input_ids.shape[1] - self.prompt_len).nonzero().flatten()
        if len(rows):
            scores[rows.to(scores.device)[:, None], self.stop_ids.to(scores.device)] = -float("inf")
        return scores


class HFEngine:
    """Batched `model.generate` with left padding; greedy by default; pad never generated."""

    def __init__(
        self,
        batch_size: int = HFEngineConf.batch_size,
        progress: bool = HFEngineConf.progress,
        add_special_tokens: bool = HFEngineConf.add_special_tokens,
        **defaults: Any,
    ):
        if batch_size < 1:
            raise ValueError(f"engine.batch_size={batch_size}, expected >= 1")
        self.batch_size, self.progress, self.add_special_tokens = batch_size, progress, add_special_tokens
        self.params = GenerationParams(**defaults)  # used when generate() gets no params

    def generate(
        self,
        bundle: ModelBundle,
        requests: Sequence[GenerationRequest],
        params: GenerationParams | None = None,
    ) -> list[Generation]:
        params = params or self.params
        work = _work(requests, params)
        if params.do_sample:
            torch.manual_seed(params.seed)
        out: list[Generation] = []
        with (
            torch.inference_mode(),
            tqdm(
                total=len(work), unit="item", desc="generate", disable=not self.progress, dynamic_ncols=True
            ) as bar,
        ):
            for start in range(0, len(work), self.batch_size):
                chunk = work[start : start + self.batch_size]
                batch = [requests[r] for r, _ in chunk]
                rows, prompt_tokens = self._generate_batch(bundle, batch, params)
                out += [
                    _to_generation(bundle, params, q, idx, row, n)
                    for q, idx, row, n in zip(batch, chunk, rows, prompt_tokens)
                ]
                bar.update(len(chunk))
        return out

    def encode(
        self, bundle: ModelBundle, prompts: list[str], images: list[list[Any]]
    ) -> dict[str, torch.Tensor]:
        """Left-padded model inputs on the model's device (a processor gets text and images, a plain tokenizer
        text only); floating inputs such as pixel values take the model's dtype."""
        model = bundle.model
        return {
            k: v.to(model.device, dtype=model.dtype if v.is_floating_point() else None)
            for k, v in self._encode(bundle, prompts, images).items()
        }

    def _encode(
        self, bundle: ModelBundle, prompts: list[str], images: list[list[Any]]
    ) -> dict[str, torch.Tensor]:
        tokenizer, processor = bundle.tokenizer, bundle.processor
        flat = [im for ims in images for im in ims]
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        try:
            kwargs = {"padding": True, "return_tensors": "pt", "add_special_tokens": self.add_special_tokens}
            if isinstance(processor, PreTrainedTokenizerBase):
                if flat:
                    raise ValueError(
                        f"{len(flat)} images given but the model {bundle.name or '(unnamed)'} has a "
                        "plain tokenizer, no image processor"
                    )
                return dict(processor(prompts, **kwargs))
            return dict(processor(text=prompts, images=flat or None, **kwargs))
        finally:
            tokenizer.padding_side = side

    def generate_kwargs(self, bundle: ModelBundle, params: GenerationParams) -> dict[str, Any]:
        eos = eos_ids(bundle)
        pad = bundle.tokenizer.pad_token_id
        kwargs: dict[str, Any] = {
            "do_sample": params.do_sample,
            "eos_token_id": eos,
            "pad_token_id": pad if pad is not None else eos[0],
        }
        if pad is not None and pad not in eos:  # a random or lightly trained model may emit pad
            kwargs["suppress_tokens"] = [pad]
        if params.do_sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
        return kwargs

    def _generate_batch(
        self, bundle: ModelBundle, batch: list[GenerationRequest], params: GenerationParams
    ) -> tuple[list[RowTrace], list[int]]:
        inputs = self.encode(
            bundle, [prompt_text(q, params, bundle) for q in batch], [q.images for q in batch]
        )
        kwargs = self.generate_kwargs(bundle, params)
        width = inputs["input_ids"].shape[1]
        prompt_tokens = inputs["attention_mask"].sum(-1).tolist()
        point = params.budget
        if point is None:
            sequences = bundle.model.generate(**inputs, max_new_tokens=params.max_new_tokens, **kwargs)
            eos = set(kwargs["eos_token_id"])
            return [
                _plain_row(s, eos, params.max_new_tokens) for s in sequences[:, width:].tolist()
            ], prompt_tokens
        ids = forcing_ids(bundle.tokenizer, bundle.special_tokens, point, kwargs["eos_token_id"])
        if params.multipass:
            run_pass = self._pass_fn(bundle, inputs, kwargs)
            prompts = [
                row[m.bool()].tolist()
                for row, m in zip(inputs["input_ids"].cpu(), inputs["attention_mask"].cpu())
            ]
            return multipass_budget_forcing(run_pass, prompts, ids, point), prompt_tokens
        forcer = BudgetForcer(len(batch), ids, point)
        bundle.model.generate(
            **inputs,
            max_new_tokens=total_new_tokens(point, ids),
            logits_processor=LogitsProcessorList([forcer]),
            stopping_criteria=StoppingCriteriaList([forcer.stopping]),
            **kwargs,
        )
        return forcer.rows, prompt_tokens

    def _pass_fn(self, bundle: ModelBundle, inputs: dict[str, torch.Tensor], kwargs: dict[str, Any]):
        """One pass of the multi-pass loop: re-prefill every sequence (left-padded) and generate."""
        pad, device = kwargs["pad_token_id"], bundle.model.device
        prompt_mask = inputs["attention_mask"].bool()
        extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        # Per-token inputs (e.g. Qwen2-VL's mm_token_type_ids) cover the prompt: the re-prefilled sequences
        # need them for their completion too (0: text), left-padded like the ids.
        per_token = {
            k: [row[m] for row, m in zip(v, prompt_mask)]
            for k, v in extra.items()
            if v.shape[:2] == prompt_mask.shape
        }

        def run_pass(seqs, max_new, min_new, stop_ids):
            # Image inputs belong to the whole batch, so with images every row runs (idle ones stop at once).
            keep = list(range(len(seqs))) if extra else [i for i, m in enumerate(max_new) if m > 0]
            results: list[tuple[list[int], int | None]] = [([], None)] * len(seqs)
            if not keep or max(max_new) == 0:
                return results
            width = max(len(seqs[i]) for i in keep)
            input_ids = torch.full((len(keep), width), pad, dtype=torch.long)
            mask = torch.zeros((len(keep), width), dtype=torch.long)
            rebuilt = {
                k: torch.zeros((len(keep), width), dtype=extra[k].dtype, device=device) for k in per_token
            }
            for j, i in enumerate(keep):
                start = width - len(seqs[i])
                input_ids[j, start:] = torch.tensor(seqs[i])
                mask[j, start:] = 1
                for k, rows in per_token.items():
                    rebuilt[k][j, start : start + len(rows[i])] = rows[i]
            sub_max, sub_min = [max_new[i] for i in keep], [min_new[i] for i in keep]
            out = bundle.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                **{**extra, **rebuilt},
                max_new_tokens=max(sub_max),
                logits_processor=LogitsProcessorList([_BanStops(sub_min, stop_ids, width)]),
                stopping_criteria=StoppingCriteriaList([_PassStop(sub_max, stop_ids, width)]),
                **kwargs,
            )
            stops = set(stop_ids)
            for j, i in enumerate(keep):
                new = out[j, width : width + max_new[i]].tolist()
                cut = next((k for k, t in enumerate(new) if t in stops), None)
                results[i] = (new, None) if cut is None else (new[:cut], new[cut])
            return results

        return run_pass


# vLLM's choices for max_lora_rank (LoRAConfig); an adapter of a higher rank cannot be served, only merged.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
LORA_MODES = ("auto", "serve", "merge")


def active_adapter_dir(bundle: ModelBundle) -> str | None:
    """The dir of the PEFT adapter the bundle's model generates with now, or None for the bare base (no PEFT
    model, or one inside `disable_adapter()`)."""
    from peft import PeftModel

    model = bundle.model
    if not isinstance(model, PeftModel):
        return None
    status = model.get_model_status()
    if status.enabled is False:
        return None
    active = status.active_adapters
    if status.enabled is not True or active == "irregular" or len(active) != 1:
        raise ValueError(
            f"engine=vllm serves one adapter at a time; {bundle.name!r} has adapters enabled "
            f"{status.enabled!r} with active {active!r}"
        )
    path = bundle.adapter_dirs.get(active[0])
    if not path:
        raise ValueError(
            f"engine=vllm got {bundle.name!r} with the PEFT adapter {active[0]!r} but not the dir it "
            "was loaded from (bundle.adapter_dirs): vLLM loads adapters from disk; save it and load "
            "it through model.adapter or evaluate's adapters=[...]"
        )
    return path


def lora_rank(adapter_dir: str) -> int:
    config = _adapter_config(adapter_dir)
    return max([int(config.get("r", 0)), *map(int, (config.get("rank_pattern") or {}).values())])


def vllm_lora_gaps(adapter_dir: str) -> list[str]:
    """What vLLM's LoRA cannot load from this PEFT adapter (empty: it can serve it as is)."""
    config = _adapter_config(adapter_dir)
    gaps = []
    if config.get("peft_type", "LORA") != "LORA":
        gaps.append(f"peft_type {config.get('peft_type')} (vLLM serves LoRA only)")
    if config.get("modules_to_save"):
        gaps.append(f"modules_to_save {config['modules_to_save']} (vLLM supports modules_to_save None only)")
    if config.get("trainable_token_indices"):
        gaps.append("trainable_token_indices (trained embedding/LM-head rows; recipe.train_*_rows)")
    if config.get("use_dora"):
        gaps.append("use_dora (DoRA)")
    if lora_rank(adapter_dir) > VLLM_LORA_RANKS[-1]:
        gaps.append(f"rank {lora_rank(adapter_dir)} above vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")
    return gaps


def _adapter_config(adapter_dir: str) -> dict[str, Any]:
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no adapter at {adapter_dir}: expected {path}")
    return json.loads(path.read_text())


class VLLMEngine:
    """vLLM generation (GPU only); budget forcing by s1's multi-pass loop with stop ids and `min_tokens`.

    vLLM loads the weights itself from `bundle.source`; the bundle's tokenizer and special tokens are used.
    A bundle generating with a PEFT adapter (model.adapter, or evaluate's adapters with one active) has it
    served by vLLM's LoRA support from the adapter's dir (`lora=serve`), or merged into a copy of the base
    that vLLM loads instead (`lora=merge`); `lora=auto` serves what vLLM's LoRA can load and merges the rest.
    """

    def __init__(
        self,
        tensor_parallel_size: int = VLLMEngineConf.tensor_parallel_size,
        gpu_memory_utilization: float = VLLMEngineConf.gpu_memory_utilization,
        max_model_len: int | None = VLLMEngineConf.max_model_len,
        dtype: str = VLLMEngineConf.dtype,
        progress: bool = VLLMEngineConf.progress,
        lora: str = VLLMEngineConf.lora,
        max_lora_rank: int | None = VLLMEngineConf.max_lora_rank,
        merge_dir: str | None = VLLMEngineConf.merge_dir,
        **defaults: Any,
    ):
        if lora not in LORA_MODES:
            raise ValueError(f"engine.lora={lora!r}, expected one of {LORA_MODES}")
        if max_lora_rank is not None and max_lora_rank not in VLLM_LORA_RANKS:
            raise ValueError(
                f"engine.max_lora_rank={max_lora_rank}, expected null or one of vLLM's {VLLM_LORA_RANKS}"
            )
        missing = []
        if importlib.util.find_spec("vllm") is None:
            missing.append("the vllm package (pip install 'mvqa[vllm]')")
        if not torch.cuda.is_available():
            missing.append("a CUDA GPU (torch.cuda.is_available() is False)")
        elif torch.cuda.device_count() < tensor_parallel_size:
            missing.append(
                f"{tensor_parallel_size} GPUs for tensor_parallel_size (found {torch.cuda.device_count()})"
            )
        if missing:
            raise RuntimeError(f"engine=vllm needs {' and '.join(missing)}; use engine=hf instead")
        self.params = GenerationParams(**defaults)
        self.progress, self.lora, self.max_lora_rank = progress, lora, max_lora_rank
        self.llm_kwargs = {
            "tensor_parallel_size": tensor_parallel_size,
            "dtype": dtype,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_model_len": max_model_len,
        }
        self._llm, self._llm_key = None, None
        self._lora_ids: dict[str, int] = {}  # adapter dir -> LoRARequest's int id (vLLM: unique, from 1)
        self._merged: dict[str, str] = {}  # adapter dir -> its merged copy
        self._serves: dict[str, bool] = {}  # adapter dir -> served by vLLM's LoRA (else merged)
        self._merge_root = merge_dir

    def serves(self, adapter_dir: str) -> bool:
        """Whether this adapter goes through vLLM's LoRA (else it is merged); lora=serve fails on one that
        vLLM's LoRA cannot load, naming what it cannot."""
        if adapter_dir in self._serves:
            return self._serves[adapter_dir]
        gaps = vllm_lora_gaps(adapter_dir)
        if gaps and self.lora == "serve":
            raise ValueError(
                f"engine.lora=serve: vLLM's LoRA cannot load the adapter {adapter_dir}: "
                f"{'; '.join(gaps)}. Use engine.lora=auto or merge (merges it into a copy of the base)"
            )
        serve = self.lora != "merge" and not gaps
        print(
            f"engine=vllm: the adapter {adapter_dir} is "
            + (
                f"served by vLLM's LoRA (rank {lora_rank(adapter_dir)})"
                if serve
                else "merged into a copy of the base: "
                + (
                    "engine.lora=merge"
                    if self.lora == "merge"
                    else f"vLLM's LoRA cannot load its {'; '.join(gaps)}"
                )
            )
        )
        self._serves[adapter_dir] = serve
        return serve

    def _lora_settings(self, bundle: ModelBundle) -> dict[str, Any]:
        """enable_lora and max_lora_rank for every adapter of the bundle that is served, so one vLLM instance
        runs the base and each of them (vLLM's LoRA must be enabled when the instance starts)."""
        served = [d for d in dict.fromkeys(bundle.adapter_dirs.values()) if self.serves(d)]
        if not served:
            return {}
        ranks = {d: lora_rank(d) for d in served}
        rank = self.max_lora_rank or next(r for r in VLLM_LORA_RANKS if r >= max(ranks.values()))
        over = {d: r for d, r in ranks.items() if r > rank}
        if over:
            raise ValueError(
                f"engine.max_lora_rank={rank} is below the rank of the adapter(s) {over}; set it to "
                f"at least {max(over.values())} (one of {VLLM_LORA_RANKS}) or null"
            )
        # One adapter per generate call (the evaluation runs one model at a time): max_loras=1 is enough.
        return {"enable_lora": True, "max_lora_rank": rank, "max_loras": 1}

    def _merged_copy(self, bundle: ModelBundle, adapter_dir: str) -> str:
        """The base with this adapter merged (PEFT's merge_and_unload on a copy of the in-memory model: the
        base as loaded, added tokens included; the copy needs the model's memory again while it merges),
        written once as a Hugging Face checkpoint vLLM loads."""
        if adapter_dir in self._merged:
            return self._merged[adapter_dir]
        from peft import PeftModel

        from mvqa.models.lora import merge_and_export

        name = next(n for n, d in bundle.adapter_dirs.items() if d == adapter_dir)
        if self._merge_root is None:
            self._merge_root = tempfile.mkdtemp(prefix="mvqa-vllm-merged-")
            weakref.finalize(self, shutil.rmtree, self._merge_root, ignore_errors=True)
        out = (
            Path(self._merge_root)
            / f"{len(self._merged)}-{Path(adapter_dir).parent.name}-{Path(adapter_dir).name}"
        )
        model: PeftModel = copy.deepcopy(bundle.model)
        model.set_adapter(name)
        merged = model.merge_and_unload(adapter_names=[name])
        print(
            f"engine=vllm: merged the adapter {adapter_dir} into a copy of "
            f"{bundle.name or bundle.source}: {out}"
        )
        self._merged[adapter_dir] = str(merge_and_export(merged, bundle.processor, out))
        return self._merged[adapter_dir]

    def _load(self, bundle: ModelBundle) -> tuple[Any, Any]:
        """The vLLM instance for what the bundle generates with now, and the LoRARequest to pass (or None)."""
        if not bundle.source:
            raise ValueError(
                f"engine=vllm loads weights from bundle.source, which is empty for {bundle.name!r}"
            )
        adapter = active_adapter_dir(bundle)
        settings = self._lora_settings(bundle)
        served = adapter is not None and self.serves(adapter)
        source = bundle.source if adapter is None or served else self._merged_copy(bundle, adapter)
        key = (source, tuple(sorted(settings.items())) if source == bundle.source else ())
        if self._llm_key != key:
            from vllm import LLM

            if self._llm is not None:  # one instance at a time on the GPU: drop the previous one first
                self._llm = None
                gc.collect()  # a full collection (a second or so in a big process): only when one is dropped
            extra = settings if source == bundle.source else {}
            self._llm = LLM(model=source, seed=self.params.seed, **extra, **self.llm_kwargs)
            self._llm_key = key
        if not served:
            return self._llm, None
        from vllm.lora.request import LoRARequest

        lora_id = self._lora_ids.setdefault(adapter, len(self._lora_ids) + 1)
        # keywords: vLLM releases order these fields differently; the name is unique (vLLM compares names)
        return self._llm, LoRARequest(
            lora_name=str(Path(adapter).resolve()), lora_int_id=lora_id, lora_path=adapter
        )

    def generate(
        self,
        bundle: ModelBundle,
        requests: Sequence[GenerationRequest],
        params: GenerationParams | None = None,
    ) -> list[Generation]:
        from vllm import SamplingParams

        params = params or self.params
        (llm, lora_request), tokenizer = self._load(bundle), bundle.tokenizer
        work = _work(requests, params)
        prompts = [
            tokenizer.encode(prompt_text(requests[r], params, bundle), add_special_tokens=False)
            for r, _ in work
        ]
        media = [{"image": requests[r].images} if requests[r].images else None for r, _ in work]
        eos = eos_ids(bundle)
        calls = itertools.count()  # a fresh sampling seed per pass, reproducible from params.seed

        def sampling(max_tokens: int, min_tokens: int, stop_ids: list[int], row: int) -> Any:
            kw = (
                {
                    "temperature": params.temperature,
                    "top_p": params.top_p,
                    "top_k": params.top_k or -1,
                    "seed": params.seed + 7919 * next(calls) + row,
                }
                if params.do_sample
                else {"temperature": 0.0}
            )
            return SamplingParams(
                max_tokens=max_tokens,
                min_tokens=min_tokens,
                stop_token_ids=stop_ids,
                skip_special_tokens=False,
                **kw,
            )

        def run_pass(seqs, max_new, min_new, stop_ids):
            keep = [i for i, m in enumerate(max_new) if m > 0]
            inputs = [
                dict(prompt_token_ids=seqs[i], **({"multi_modal_data": media[i]} if media[i] else {}))
                for i in keep
            ]
            outs = llm.generate(
                inputs,
                [sampling(max_new[i], min_new[i], stop_ids, i) for i in keep],
                use_tqdm=self.progress,
                lora_request=lora_request,
            )
            results: list[tuple[list[int], int | None]] = [([], None)] * len(seqs)
            for i, o in zip(keep, outs):
                new = list(o.outputs[0].token_ids)
                stopped = o.outputs[0].finish_reason == "stop" and new and new[-1] in stop_ids
                results[i] = (new[:-1], new[-1]) if stopped else (new, None)
            return results

        if params.budget is None:
            passes = run_pass(prompts, [params.max_new_tokens] * len(prompts), [0] * len(prompts), eos)
            rows = [RowTrace(tokens=new, ended_by_eos=stop is not None) for new, stop in passes]
        else:
            ids = forcing_ids(tokenizer, bundle.special_tokens, params.budget, eos)
            rows = multipass_budget_forcing(run_pass, prompts, ids, params.budget)
        return [
            _to_generation(bundle, params, requests[r], (r, s), row, len(p))
            for (r, s), row, p in zip(work, rows, prompts)
        ]
