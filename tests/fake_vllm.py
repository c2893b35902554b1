"""A stand-in for the `vllm` package where it cannot run (no GPU): its `LLM` replays a Hugging Face model.

It keeps vLLM's documented semantics for what the engine uses: `max_tokens` caps a request, `stop_token_ids`
(and the model's eos) end it with the stop token kept in `token_ids` and finish_reason "stop", and they are
banned for the first `min_tokens` tokens; greedy at temperature 0, else seeded sampling per request. The
weights come from the path given to `LLM(model=...)` when it is a checkpoint dir (a merged copy), else the
replayed model as it is. With `enable_lora`, a `LoRARequest` applies the PEFT adapter saved at its
`lora_path` (PEFT itself, onto the weights), refusing what vLLM's LoRA refuses.
"""

from __future__ import annotations

import copy
import importlib.machinery
import json
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import DynamicCache


@dataclass(frozen=True, kw_only=True)
class LoRARequest:
    """vllm.lora.request.LoRARequest's fields (the engine passes them by keyword)."""

    lora_name: str
    lora_int_id: int
    lora_path: str

    def __post_init__(self):
        if self.lora_int_id < 1:
            raise ValueError(f"lora_int_id must be > 0, got {self.lora_int_id}")


# The PEFT model per replayed weights and adapter (dir, its files' mtimes): a test module builds many LLMs
# over one replayed model, each loading the same adapter; generation leaves the model as it is: one load.
_ADAPTED: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, torch.nn.Module]]
_ADAPTED = weakref.WeakKeyDictionary()


def _adapter_key(path: str) -> tuple:
    return (str(Path(path).resolve()), *sorted((f.name, f.stat().st_mtime_ns) for f in Path(path).iterdir()))


class ReplayLLM:
    model: torch.nn.Module  # the replayed architecture and, for a name that is not a dir, its weights
    eos: int
    calls: list[tuple[int, int | None]]  # per generate call: requests, LoRA int id (None: the base)
    instances: list[ReplayLLM]

    def __init__(self, model: str, seed: int = 0, enable_lora: bool = False, max_lora_rank: int = 16,
                 max_loras: int = 1, **kwargs):
        self.path, self.kwargs = model, kwargs
        self.enable_lora, self.max_lora_rank, self.max_loras = enable_lora, max_lora_rank, max_loras
        self.weights = self._read(model)
        self.adapters: dict[int, tuple[str, torch.nn.Module]] = {}
        type(self).instances.append(self)

    def _read(self, path: str) -> torch.nn.Module:
        """A checkpoint dir's safetensors into the replayed architecture (strict: all tensors, none extra)."""
        files = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
        if not files:
            return type(self).model
        state = {k: v for f in files for k, v in load_file(f).items()}
        model = copy.deepcopy(type(self).model)
        model.load_state_dict(state, strict=True)
        return model.eval()

    def _with_adapter(self, request: LoRARequest) -> torch.nn.Module:
        if not self.enable_lora:
            raise ValueError(f"LoRA request {request.lora_name!r} to an LLM built without enable_lora=True")
        if request.lora_int_id in self.adapters:
            path, model = self.adapters[request.lora_int_id]
            assert path == request.lora_path, f"lora_int_id {request.lora_int_id} reused: {request.lora_path}"
            return model
        config = json.loads((Path(request.lora_path) / "adapter_config.json").read_text())
        if config.get("modules_to_save"):
            raise ValueError("vLLM only supports modules_to_save being None.")
        if config.get("trainable_token_indices"):
            raise ValueError("token_adapter.trainable_tokens_delta is unsupported LoRA weight")
        if config["r"] > self.max_lora_rank:
            raise ValueError(f"LoRA rank {config['r']} is greater than max_lora_rank {self.max_lora_rank}")
        loaded, key = _ADAPTED.setdefault(self.weights, {}), _adapter_key(request.lora_path)
        if key not in loaded:
            # torch_device: the fake claims a GPU (torch.cuda.is_available), PEFT would load onto it
            loaded[key] = PeftModel.from_pretrained(copy.deepcopy(self.weights), request.lora_path,
                                                    torch_device="cpu").eval()
        self.adapters[request.lora_int_id] = (request.lora_path, loaded[key])
        return loaded[key]

    def generate(self, inputs, sampling_params, use_tqdm=False, lora_request=None):
        assert len(inputs) == len(sampling_params)
        type(self).calls.append((len(inputs), lora_request.lora_int_id if lora_request else None))
        model = self._with_adapter(lora_request) if lora_request else self.weights
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=new, finish_reason=reason)])
                for new, reason in self._batch(model, inputs, sampling_params)]

    def _batch(self, model, inputs, sampling_params) -> list[tuple[list[int], str]]:
        """All requests decoded together, as vLLM batches them: left-padded, positions counted per request
        (so a request's tokens do not depend on its neighbours), one KV cache; a request that has ended sits
        out the remaining steps (its rows are computed, never read)."""
        assert all("multi_modal_data" not in r for r in inputs), "the replayed models are text-only"
        prompts = [list(r["prompt_token_ids"]) for r in inputs]
        width = max(map(len, prompts))
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        step = torch.tensor([[self.eos] * (width - len(p)) + p for p in prompts])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        stops = [sorted({*sp.stop_token_ids, self.eos}) for sp in sampling_params]
        generators = [torch.Generator().manual_seed(sp.seed) if sp.temperature > 0 else None
                      for sp in sampling_params]
        results: list[tuple[list[int], str]] = [([], "length") for _ in inputs]
        running = [sp.max_tokens > 0 for sp in sampling_params]
        cache = DynamicCache(config=model.config)
        with torch.inference_mode():
            while any(running):
                logits = model(input_ids=step, attention_mask=mask, position_ids=positions, cache=cache,
                               use_cache=True, logits_to_keep=1).logits[:, -1].float()
                tokens = [self.eos] * len(inputs)  # a filler for the rows that have ended
                for i, sp in enumerate(sampling_params):
                    if not running[i]:
                        continue
                    new, row = results[i][0], logits[i]
                    if len(new) < sp.min_tokens:
                        row[stops[i]] = -float("inf")
                    token = int(row.argmax()) if generators[i] is None else _sample(row, sp, generators[i])
                    new.append(token)
                    tokens[i] = token
                    if token in stops[i]:
                        results[i], running[i] = (new, "stop"), False
                    elif len(new) >= sp.max_tokens:
                        running[i] = False
                step, positions = torch.tensor(tokens)[:, None], positions[:, -1:] + 1
                mask = torch.cat([mask, torch.ones(len(inputs), 1, dtype=mask.dtype)], dim=1)
        return results


def _sample(logits: torch.Tensor, sp, generator: torch.Generator) -> int:
    logits = logits / sp.temperature
    if sp.top_k > 0:
        logits[logits < logits.topk(sp.top_k).values[-1]] = -float("inf")
    probs = logits.softmax(-1)
    if sp.top_p < 1.0:
        ordered, order = probs.sort(descending=True)
        drop = ordered.cumsum(-1) - ordered >= sp.top_p  # keep the smallest head reaching top_p
        probs[order[drop]] = 0.0
    return int(torch.multinomial(probs, 1, generator=generator))


def install(monkeypatch, bundle) -> ModuleType:
    """`vllm` and `vllm.lora.request` as modules whose LLM replays `bundle.model`, on a machine that claims
    one GPU; the returned module's LLM.calls and LLM.instances record what the engine asked for."""

    def module(name: str) -> ModuleType:
        fake = ModuleType(name)
        fake.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, fake)
        return fake

    vllm = module("vllm")
    vllm.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    vllm.LLM = type("LLM", (ReplayLLM,), {"model": bundle.model, "eos": bundle.tokenizer.eos_token_id,
                                          "calls": [], "instances": []})
    module("vllm.lora")
    module("vllm.lora.request").LoRARequest = LoRARequest
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    return vllm
