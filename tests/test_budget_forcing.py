"""s1-style budget forcing on tiny random Llamas that try to close their thinking now and then.

Every scenario runs with `</think>` as one added token and as plain text (three BPE tokens, like Med-R1).
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import itertools
import sys
from types import ModuleType, SimpleNamespace

import pytest
import torch
from helpers import (
    PROMPTS,
    bundle_of,
    closing_llama,
    count_runs,
    engine,
    forced,
    ids_of,
    requests,
    summary,
    tiny_llama,
    tiny_tokenizer,
)

from mvqa.generation import (
    BudgetPoint,
    GenerationParams,
    GenerationRequest,
    VLLMEngine,
    budget_points,
)
from mvqa.generation.budget import forcing_ids
from mvqa.models.bundle import SpecialTokens

END, ANSWER = SpecialTokens().think_end, SpecialTokens().answer_start


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=["single_token_end", "multi_token_end"])
def closer(request):
    tokenizer = tiny_tokenizer(single_token_delimiters=request.param == "single_token_end")
    n = len(tokenizer.encode(END, add_special_tokens=False))
    assert (n == 1) == (request.param == "single_token_end") and n <= 3
    return closing_llama(tokenizer)


def test_budget_points_expand_the_configured_grid(compose):
    points = budget_points(compose("evaluate", ["budget=s1"]).budget)
    assert [(p.max_thinking_tokens, p.num_waits) for p in points] == list(
        itertools.product([128, 256, 512, 1024, 2048, 4096], [0, 1, 2, 4, 6]))
    assert points[7] == BudgetPoint(max_thinking_tokens=256, num_waits=2) and points[7].id == "max256_min0_w2_Wait"
    cfg = compose("evaluate", ["budget=s1", "budget.max_thinking_tokens=[16,32,64]", "budget.num_waits=[0,2]",
                               "budget.wait_string=Hmm", "budget.min_thinking_tokens=8"])
    points = budget_points(cfg.budget)
    assert [p.id for p in points] == ["max16_min8_w0_Hmm", "max16_min8_w2_Hmm", "max32_min8_w0_Hmm",
                                      "max32_min8_w2_Hmm", "max64_min8_w0_Hmm", "max64_min8_w2_Hmm"]
    assert {(p.wait_string, p.min_thinking_tokens) for p in points} == {("Hmm", 8)}
    assert budget_points(compose("evaluate", ["budget=none"]).budget) == [None]
    with pytest.raises(ValueError, match="min_thinking_tokens=32, expected between 0 and max_thinking_tokens=16"):
        budget_points(compose("evaluate", ["budget=s1", "budget.max_thinking_tokens=[16]",
                                           "budget.min_thinking_tokens=32"]).budget)


@pytest.mark.parametrize("point", [BudgetPoint(24), BudgetPoint(24, num_waits=2),
                                   BudgetPoint(24, num_waits=2, min_thinking_tokens=8), BudgetPoint(6, num_waits=1)],
                         ids=lambda p: p.id)
def test_single_pass_equals_multipass_reference_and_one_by_one(closer, point):
    batched = forced(closer, point)
    multipass = forced(closer, point, budget_impl="multi_pass")
    assert summary(batched) == summary(multipass)
    for prompt, g in zip(PROMPTS, batched):
        (alone,) = engine().generate(closer, [GenerationRequest(prompt=prompt)], GenerationParams(budget=point))
        assert summary([alone]) == summary([g])


def test_the_scenarios_exercise_every_rule(closer):
    """Guards the tests above against passing vacuously: the model does end early, get Waits, get forced."""
    gens = forced(closer, BudgetPoint(24, num_waits=2))
    assert any(g.waits_used for g in gens) and any(g.forced_end for g in gens)
    assert any(not g.forced_end for g in gens)  # a natural end after its Waits
    assert any(g.thinking_tokens < 8 for g in forced(closer, BudgetPoint(24)))


def test_cap_forces_end_then_answer_opener_and_final_answer_string(closer):
    point = BudgetPoint(24, num_waits=2, final_answer_string="Final Answer:", max_answer_tokens=16)
    gens = forced(closer, point)
    end, opener = ids_of(closer, END), ids_of(closer, ANSWER) + ids_of(closer, "Final Answer:")
    assert any(g.forced_end for g in gens) and any(not g.forced_end for g in gens)
    for g in gens:
        t = g.thinking_tokens
        assert t <= 24 and g.token_ids[t:t + len(end)] == end and g.thinking == closer.tokenizer.decode(g.token_ids[:t])
        assert g.text.startswith(f"<think>{g.thinking}{END}")
        assert g.completion_tokens <= 24 + len(end) + 16
        if g.forced_end:
            assert g.token_ids[t + len(end):t + len(end) + len(opener)] == opener
            assert f"{END}{ANSWER}Final Answer:" in g.text
        else:
            assert "Final Answer:" not in g.text  # appended only when the end was forced


def test_min_thinking_tokens_are_respected(closer):
    assert any(g.thinking_tokens < 8 for g in forced(closer, BudgetPoint(24)))
    gens = forced(closer, BudgetPoint(24, min_thinking_tokens=8))
    assert all(8 <= g.thinking_tokens <= 24 for g in gens) and not any(g.waits_used for g in gens)


@pytest.mark.parametrize("wait_string", ["Wait", "Hmm"])
def test_waits_are_inserted_and_counted(closer, wait_string):
    wait = ids_of(closer, wait_string)
    assert all(count_runs(g.token_ids, wait) == 0 for g in forced(closer, BudgetPoint(24)))  # never by itself
    gens = forced(closer, BudgetPoint(24, num_waits=2, wait_string=wait_string))
    assert sum(g.waits_used for g in gens) >= 3
    for g in gens:
        assert 0 <= g.waits_used <= 2 and count_runs(g.token_ids[:g.thinking_tokens], wait) == g.waits_used
        assert g.thinking.count(wait_string) == g.waits_used
        if not g.forced_end:  # the model's own end went through only once its Waits were spent
            assert g.waits_used == 2


def test_a_model_that_never_closes_its_thinking_still_answers_and_counts_as_forced():
    tokenizer = tiny_tokenizer()
    end, eos = tokenizer.convert_tokens_to_ids(END), tokenizer.eos_token_id
    bundle = bundle_of(tiny_llama(tokenizer, bias={end: -100.0, eos: -100.0}), tokenizer)
    gens = forced(bundle, BudgetPoint(16, num_waits=2, final_answer_string="Final Answer:", max_answer_tokens=16))
    for g in gens:
        assert (g.thinking_tokens, g.waits_used, g.forced_end, g.finish_reason) == (16, 0, True, "length")
        assert g.text.startswith(f"<think>{g.thinking}{END}{ANSWER}Final Answer:")
        assert g.completion_tokens == 16 + 1 + 16


def test_a_model_that_stops_inside_its_thinking_gets_waits_then_a_forced_end():
    tokenizer = tiny_tokenizer()
    bundle = bundle_of(tiny_llama(tokenizer, bias={tokenizer.eos_token_id: 50.0}), tokenizer)
    wait = ids_of(bundle, "Wait")
    for point, waits in [(BudgetPoint(16), 0), (BudgetPoint(16, num_waits=2), 2)]:
        for g in forced(bundle, point):
            assert (g.thinking_tokens, g.waits_used, g.forced_end, g.finish_reason) == (len(wait) * waits, waits,
                                                                                         True, "eos")
            assert g.text == f"<think>{'Wait' * waits}{END}{ANSWER}"


def test_sampling_uses_the_multipass_loop_and_keeps_the_rules(closer):
    point = BudgetPoint(24, num_waits=2, min_thinking_tokens=4)
    params = GenerationParams(budget=point, do_sample=True, temperature=1.5, num_samples=2, seed=3)
    assert params.multipass
    gens = engine().generate(closer, requests(), params)
    assert len(gens) == 12 and gens == engine().generate(closer, requests(), params)  # seeded
    end = ids_of(closer, END)
    for g in gens:
        t = g.thinking_tokens
        assert 4 <= t <= 24 and g.waits_used <= 2 and g.token_ids[t:t + len(end)] == end
    assert len({tuple(g.token_ids) for g in gens}) > 6  # samples differ


def test_existing_think_opener_is_not_doubled(closer):
    point = BudgetPoint(8)
    plain = forced(closer, point)
    with_opener = engine().generate(closer, [GenerationRequest(prompt=p + "<think>") for p in PROMPTS],
                                    GenerationParams(budget=point))
    assert summary(with_opener) == summary(plain)


def test_bad_budgets_are_refused_with_the_key_named():
    with pytest.raises(ValueError, match="max_thinking_tokens=0"):
        BudgetPoint(0)
    with pytest.raises(ValueError, match="wait_string"):
        BudgetPoint(16, wait_string="")
    tokenizer = tiny_tokenizer()
    with pytest.raises(ValueError, match="max_answer_tokens=3 leaves no room"):
        forcing_ids(tokenizer, SpecialTokens(), BudgetPoint(16, final_answer_string="Final Answer:",
                                                            max_answer_tokens=3), [tokenizer.eos_token_id])
    with pytest.raises(ValueError, match="think_end"):
        forcing_ids(tokenizer, dataclasses.replace(SpecialTokens(), think_end=""), BudgetPoint(16), [2])


class ReplayLLM:
    """Stands in for `vllm.LLM` with vLLM's documented request semantics, decoding greedily with the same tiny
    Llama the HF engine uses: `max_tokens` caps the request, `stop_token_ids` (and the model's eos) end it
    with the stop token kept in `token_ids` and finish_reason "stop", and they are banned for the first
    `min_tokens` tokens."""

    model: torch.nn.Module
    eos: int
    calls: list[int]

    def __init__(self, model: str, seed: int = 0, **kwargs):
        self.kwargs = kwargs

    def generate(self, inputs, sampling_params, use_tqdm=False):
        type(self).calls.append(len(inputs))
        outs = []
        for request, sp in zip(inputs, sampling_params):
            assert sp.temperature == 0.0 and "multi_modal_data" not in request
            seq, stops, new, reason = list(request["prompt_token_ids"]), {*sp.stop_token_ids, self.eos}, [], "length"
            with torch.inference_mode():
                while len(new) < sp.max_tokens:
                    logits = self.model(torch.tensor([seq])).logits[0, -1]
                    if len(new) < sp.min_tokens:
                        logits[sorted(stops)] = -float("inf")
                    token = int(logits.argmax())
                    seq.append(token)
                    new.append(token)
                    if token in stops:
                        reason = "stop"
                        break
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=new, finish_reason=reason)]))
        return outs


@pytest.fixture
def vllm_replay(monkeypatch, closer):
    """A `vllm` module whose LLM replays the closer model, on a machine that claims one GPU."""
    fake = ModuleType("vllm")
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    fake.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    fake.LLM = type("LLM", (ReplayLLM,), {"model": closer.model, "eos": closer.tokenizer.eos_token_id, "calls": []})
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    return fake


@pytest.mark.parametrize("point", [BudgetPoint(24), BudgetPoint(24, num_waits=2),
                                   BudgetPoint(24, num_waits=2, min_thinking_tokens=8), BudgetPoint(6, num_waits=1),
                                   BudgetPoint(24, num_waits=2, final_answer_string="Final Answer:")],
                         ids=lambda p: f"{p.id}_{p.final_answer_string or 'plain'}")
def test_vllm_engine_forces_budgets_exactly_as_the_hf_engine(closer, vllm_replay, point):
    """The engines share the rules but not the mechanics (a logits processor in one generate call vs s1's
    multi-pass loop over vLLM requests): on the same greedy model both give the same tokens and counts."""
    vllm_engine = VLLMEngine(progress=False)
    recorded = dataclasses.replace(closer, source="replayed-closer")
    via_vllm = vllm_engine.generate(recorded, requests(), GenerationParams(budget=point))
    assert summary(via_vllm) == summary(forced(closer, point))
    assert [(g.text, g.thinking) for g in via_vllm] == [(g.text, g.thinking) for g in forced(closer, point)]
    calls = vllm_replay.LLM.calls  # requests per pass: s1's loop re-submits only the rows still thinking
    assert calls[0] == len(PROMPTS) and len(calls) >= 2 and all(n <= len(PROMPTS) for n in calls)
    plain = vllm_engine.generate(recorded, requests(), GenerationParams(max_new_tokens=12))
    assert summary(plain) == summary(engine().generate(closer, requests(), GenerationParams(max_new_tokens=12)))
