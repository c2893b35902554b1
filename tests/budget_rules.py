"""The budget-forcing rules every engine must keep, as checks on a `Forcing` (a model behind an engine).

tests/test_budget_forcing.py runs them on the CPU for the HF engine and for vLLM (tests/fake_vllm.py), each
bare and with a LoRA adapter; tests/test_cuda.py reruns them on the GPU in bf16.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from helpers import PROMPTS, count_runs, engine, ids_of, requests, summary

from mvqa.generation import BudgetPoint, GenerationParams, GenerationRequest
from mvqa.models.bundle import ModelBundle, SpecialTokens

END, ANSWER = SpecialTokens().think_end, SpecialTokens().answer_start
# The rules are about the thinking: a 4-token answer still takes s1's answer pass (and the cap), at a fraction
# of the default 32's cost (the tiny models rarely stop, so every row would run the whole answer budget).
SHORT_ANSWER = 4


def thinking_budget(max_thinking_tokens: int, **point) -> BudgetPoint:
    """A budget point with a short answer unless `max_answer_tokens` is given."""
    return BudgetPoint(max_thinking_tokens, **{"max_answer_tokens": SHORT_ANSWER, **point})


@dataclass
class Forcing:
    """A model (`bundle`, possibly a PEFT model with its adapter active) behind a fresh engine per call.

    `forced` (greedy, the shared prompts) runs once per point and params and hands out copies after: greedy
    runs of the same requests are deterministic, so the rules (and comparisons) asking for one point share a
    run. `generate` always runs (the sampling rule checks that a seeded rerun repeats itself).
    """

    bundle: ModelBundle
    make_engine: Callable[[], Any] = field(default=engine)
    runs: dict[tuple, list] = field(default_factory=dict, repr=False, compare=False)

    def generate(self, reqs: list[GenerationRequest], params: GenerationParams):
        return self.make_engine().generate(self.bundle, reqs, params)

    def forced(self, point: BudgetPoint | None, **params):
        """The shared prompts under `point` (None: no budget, plain generation up to max_new_tokens)."""
        assert not params.get("do_sample"), "forced() shares greedy runs; sampling goes through generate()"
        key = (point, tuple(sorted(params.items())))
        if key not in self.runs:
            self.runs[key] = self.generate(requests(), GenerationParams(budget=point, **params))
        return copy.deepcopy(self.runs[key])


def the_scenarios_exercise_every_rule(t: Forcing):
    """Guards the rules below against passing vacuously: the model does end early, get Waits, get forced."""
    gens = t.forced(thinking_budget(24, num_waits=2))
    assert any(g.waits_used for g in gens) and any(g.forced_end for g in gens)
    assert any(not g.forced_end for g in gens)  # a natural end after its Waits
    assert any(g.thinking_tokens < 8 for g in t.forced(thinking_budget(24)))


def cap_forces_end_then_answer_opener_and_final_answer_string(t: Forcing):
    point = BudgetPoint(24, num_waits=2, final_answer_string="Final Answer:", max_answer_tokens=16)
    gens = t.forced(point)
    end, opener = ids_of(t.bundle, END), ids_of(t.bundle, ANSWER) + ids_of(t.bundle, "Final Answer:")
    assert any(g.forced_end for g in gens) and any(not g.forced_end for g in gens)
    for g in gens:
        n = g.thinking_tokens
        assert n <= 24 and g.token_ids[n:n + len(end)] == end
        assert g.thinking == t.bundle.tokenizer.decode(g.token_ids[:n])
        assert g.text.startswith(f"<think>{g.thinking}{END}")
        assert g.completion_tokens <= 24 + len(end) + 16
        if g.forced_end:
            assert g.token_ids[n + len(end):n + len(end) + len(opener)] == opener
            assert f"{END}{ANSWER}Final Answer:" in g.text
        else:
            assert "Final Answer:" not in g.text  # appended only when the end was forced


def min_thinking_tokens_are_respected(t: Forcing):
    assert any(g.thinking_tokens < 8 for g in t.forced(thinking_budget(24)))
    gens = t.forced(thinking_budget(24, min_thinking_tokens=8))
    assert all(8 <= g.thinking_tokens <= 24 for g in gens) and not any(g.waits_used for g in gens)


def waits_are_inserted_and_counted(t: Forcing, wait_string: str):
    wait = ids_of(t.bundle, wait_string)
    assert all(count_runs(g.token_ids, wait) == 0 for g in t.forced(thinking_budget(24)))  # never by itself
    gens = t.forced(thinking_budget(24, num_waits=2, wait_string=wait_string))
    assert sum(g.waits_used for g in gens) >= 3
    for g in gens:
        assert 0 <= g.waits_used <= 2 and count_runs(g.token_ids[:g.thinking_tokens], wait) == g.waits_used
        assert g.thinking.count(wait_string) == g.waits_used
        if not g.forced_end:  # the model's own end went through only once its Waits were spent
            assert g.waits_used == 2


def sampling_uses_the_multipass_loop_and_keeps_the_rules(t: Forcing):
    point = thinking_budget(24, num_waits=2, min_thinking_tokens=4)
    params = GenerationParams(budget=point, do_sample=True, temperature=1.5, num_samples=2, seed=3)
    assert params.multipass
    gens = t.generate(requests(), params)
    assert len(gens) == 12 and gens == t.generate(requests(), params)  # seeded
    end = ids_of(t.bundle, END)
    for g in gens:
        n = g.thinking_tokens
        assert 4 <= n <= 24 and g.waits_used <= 2 and g.token_ids[n:n + len(end)] == end
    assert len({tuple(g.token_ids) for g in gens}) > 6  # samples differ


def existing_think_opener_is_not_doubled(t: Forcing):
    point = thinking_budget(8)
    plain = t.forced(point)
    with_opener = t.generate([GenerationRequest(prompt=p + "<think>") for p in PROMPTS],
                             GenerationParams(budget=point))
    assert summary(with_opener) == summary(plain)


RULES = [
    the_scenarios_exercise_every_rule,
    cap_forces_end_then_answer_opener_and_final_answer_string,
    min_thinking_tokens_are_respected,
    functools.partial(waits_are_inserted_and_counted, wait_string="Wait"),
    functools.partial(waits_are_inserted_and_counted, wait_string="Hmm"),
    sampling_uses_the_multipass_loop_and_keeps_the_rules,
    existing_think_opener_is_not_doubled,
]


def rule_id(rule) -> str:
    if isinstance(rule, functools.partial):
        return f"{rule.func.__name__}[{rule.keywords['wait_string']}]"
    return rule.__name__
