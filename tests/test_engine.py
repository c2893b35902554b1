"""HF engine on a tiny random Llama (BPE tokenizer trained here) and a tiny LLaVA (processor with images).

The builders live in tests/helpers.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers import PROMPTS, bundle_of, requests, tiny_llama, tiny_llava, tiny_tokenizer
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from PIL import Image

from mvqa.generation import GenerationParams, GenerationRequest, HFEngine, VLLMEngine
from mvqa.generation.budget import BudgetPoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def llama(tokenizer):
    return bundle_of(tiny_llama(tokenizer), tokenizer)


def test_batched_greedy_equals_one_by_one_and_direct_generate(llama, tokenizer):
    # 6 requests: a full and a partial batch
    engine = HFEngine(batch_size=4, progress=False, max_new_tokens=12)
    batched = engine.generate(llama, requests())
    assert [(g.request_index, g.sample_index, g.id) for g in batched] == [(i, 0, f"q{i}") for i in range(6)]
    for i, (g, prompt) in enumerate(zip(batched, PROMPTS)):
        (alone,) = engine.generate(llama, [GenerationRequest(prompt=prompt)])
        assert g.token_ids == alone.token_ids, f"request {i} differs batched vs alone"
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
        direct = llama.model.generate(ids, max_new_tokens=12, do_sample=False,
                                      pad_token_id=tokenizer.pad_token_id,
                                      suppress_tokens=[tokenizer.pad_token_id])[0, ids.shape[1]:].tolist()
        assert g.token_ids == direct
        assert g.prompt_tokens == ids.shape[1] and g.completion_tokens == 12 == len(g.token_ids)
        assert g.finish_reason == "length" and g.text == tokenizer.decode(direct)
        assert g.thinking_tokens is None and g.waits_used is None  # no budget forcing asked


def test_encode_pads_left_and_restores_the_tokenizer(llama, tokenizer):
    tokenizer.padding_side = "right"
    inputs = HFEngine(progress=False).encode(llama, ["Hmm", "The image shows a chest"], [[], []])
    assert tokenizer.padding_side == "right"
    mask = inputs["attention_mask"]
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and mask[1].all()
    assert inputs["input_ids"][0, 0] == tokenizer.pad_token_id


def test_pad_is_never_generated_even_when_the_model_prefers_it(tokenizer):
    pad = tokenizer.pad_token_id
    bundle = bundle_of(tiny_llama(tokenizer, bias={pad: 50.0}), tokenizer)
    ids = tokenizer("CT scan", add_special_tokens=False, return_tensors="pt").input_ids
    unsuppressed = bundle.model.generate(ids, max_new_tokens=8, do_sample=False,
                                         pad_token_id=pad)[0, ids.shape[1]:]
    assert (unsuppressed == pad).any()  # the model does want pad
    out = HFEngine(batch_size=3, progress=False, max_new_tokens=8).generate(bundle, requests())
    assert all(pad not in g.token_ids and len(g.token_ids) == 8 for g in out)


def test_eos_ends_a_generation(tokenizer):
    bundle = bundle_of(tiny_llama(tokenizer, bias={tokenizer.eos_token_id: 50.0}), tokenizer)
    out = HFEngine(batch_size=4, progress=False, max_new_tokens=8).generate(bundle, requests())
    assert [g.finish_reason for g in out] == ["eos"] * 6
    assert all(tokenizer.eos_token_id not in g.token_ids and g.completion_tokens < 8 for g in out)


def test_sampling_gives_n_seeded_samples_per_request(llama):
    engine = HFEngine(batch_size=4, progress=False, max_new_tokens=10, do_sample=True, num_samples=3, seed=1,
                      temperature=1.5)
    out = engine.generate(llama, requests())
    assert [(g.request_index, g.sample_index) for g in out] == [(r, s) for r in range(6) for s in range(3)]
    assert [g.token_ids for g in engine.generate(llama, requests())] == [g.token_ids for g in out]
    other = engine.generate(llama, requests(), dataclasses.replace(engine.params, seed=2))
    assert [g.token_ids for g in other] != [g.token_ids for g in out]
    assert any(len({tuple(g.token_ids) for g in out[3 * r:3 * r + 3]}) > 1 for r in range(6))


@pytest.mark.parametrize("kwargs, message", [
    ({"num_samples": 2}, "do_sample=true"),
    ({"do_sample": True, "budget_impl": "single_pass"}, "greedy decoding only"),
    ({"budget_impl": "one_pass"}, "expected one of"),
    ({"max_new_tokens": 0}, "max_new_tokens=0"),
])
def test_bad_params_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GenerationParams(**kwargs)


def test_images_for_a_text_only_model_are_refused(llama):
    image = Image.new("RGB", (8, 8))
    with pytest.raises(ValueError, match="1 images given but the model tiny has a plain tokenizer"):
        HFEngine(progress=False).generate(llama, [GenerationRequest(prompt="CT scan", images=[image])])


def test_progress_bar_reports_items(llama, capfd):
    HFEngine(batch_size=3, progress=True, max_new_tokens=2).generate(llama, requests())
    err = capfd.readouterr().err
    assert "generate" in err and "6/6" in err and "item/s" in err


def test_processor_with_images_batched_equals_one_by_one_plain_and_forced(tokenizer):
    bundle = tiny_llava(tokenizer)
    rng = np.random.default_rng(0)
    reqs = [GenerationRequest(prompt=f"<image>\nQuestion {i}: which organ?",
                              images=[
                                  Image.fromarray(rng.integers(0, 255, (40 + 4 * i, 48, 3), dtype=np.uint8))])
            for i in range(4)]
    engine = HFEngine(batch_size=3, progress=False, max_new_tokens=8)
    plain = engine.generate(bundle, reqs)
    assert plain[0].prompt_tokens == len(tokenizer(reqs[0].prompt).input_ids) + 15  # <image> became 16 tokens
    forced = GenerationParams(budget=BudgetPoint(max_thinking_tokens=12, num_waits=2, max_answer_tokens=4))
    batched = engine.generate(bundle, reqs, forced)
    multipass = engine.generate(bundle, reqs, dataclasses.replace(forced, budget_impl="multi_pass"))
    assert sum(g.waits_used for g in batched) > 0
    for i, r in enumerate(reqs):
        assert engine.generate(bundle, [r])[0].token_ids == plain[i].token_ids
        assert engine.generate(bundle, [r],
                               forced)[0].token_ids == batched[i].token_ids == multipass[i].token_ids


def test_vllm_without_vllm_or_gpu_is_a_clear_error():
    import importlib.util

    if importlib.util.find_spec("vllm") and torch.cuda.is_available():
        pytest.skip("vllm and a GPU are both present here")
    with pytest.raises(RuntimeError,
                       match=r"engine=vllm needs .*(vllm package|CUDA GPU).*; use engine=hf instead"):
        VLLMEngine()


def test_engine_configs_compose_and_instantiate(compose):
    cfg = compose("evaluate", ["engine=hf", "engine.batch_size=3", "engine.max_new_tokens=64"])
    engine = instantiate(cfg.engine)
    assert isinstance(engine, HFEngine) and engine.batch_size == 3
    assert engine.params == GenerationParams(max_new_tokens=64)
    with pytest.raises(Exception, match="batchsize"):
        compose("evaluate", ["engine=hf", "engine.batchsize=3"])
    vllm_cfg = compose("evaluate", ["engine=vllm", "engine.tensor_parallel_size=2"])
    assert vllm_cfg.engine.tensor_parallel_size == 2
    if not torch.cuda.is_available():
        with pytest.raises(InstantiationException, match="use engine=hf"):
            instantiate(vllm_cfg.engine)
