"""s1-style budget forcing on tiny random Llamas that try to close their thinking now and then.

Every scenario runs with `</think>` as one added token and as plain text (three BPE tokens, like Med-R1). The
shared rules (tests/budget_rules.py) run for the HF engine and for vLLM (a replaying fake,
tests/fake_vllm.py), each on the bare model and with a LoRA adapter that vLLM serves from its dir; vLLM's
outputs equal HF's. For the suite's time budget a greedy run is made once per closer, engine and point and
shared (Forcing.forced), and the rules' points answer in 4 tokens: every check still runs on every engine.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from budget_rules import RULES, Forcing, rule_id, thinking_budget
from fake_vllm import install
from helpers import (
    PROMPTS,
    bundle_of,
    closing_llama,
    engine,
    forced,
    ids_of,
    requests,
    summary,
    tiny_llama,
    tiny_tokenizer,
)
from peft import LoraConfig, get_peft_model

from mvqa.generation import (
    BudgetPoint,
    GenerationParams,
    GenerationRequest,
    VLLMEngine,
    budget_points,
)
from mvqa.generation.budget import forcing_ids
from mvqa.models.bundle import SpecialTokens
from mvqa.models.lora import load_adapter

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
        itertools.product([128, 256, 512, 1024, 2048, 4096], [0, 1, 2, 4, 6])
    )
    assert (
        points[7] == BudgetPoint(max_thinking_tokens=256, num_waits=2)
        and points[7].id == "max256_min0_w2_Wait"
    )
    cfg = compose(
        "evaluate",
        [
            "budget=s1",
            "budget.max_thinking_tokens=[16,32,64]",
            "budget.num_waits=[0,2]",
            "budget.wait_string=Hmm",
            "budget.min_thinking_tokens=8",
        ],
    )
    points = budget_points(cfg.budget)
    assert [p.id for p in points] == [
        "max16_min8_w0_Hmm",
        "max16_min8_w2_Hmm",
        "max32_min8_w0_Hmm",
        "max32_min8_w2_Hmm",
        "max64_min8_w0_Hmm",
        "max64_min8_w2_Hmm",
    ]
    assert {(p.wait_string, p.min_thinking_tokens) for p in points} == {("Hmm", 8)}
    assert budget_points(compose("evaluate", ["budget=none"]).budget) == [None]
    with pytest.raises(
        ValueError, match="min_thinking_tokens=32, expected between 0 and max_thinking_tokens=16"
    ):
        budget_points(
            compose(
                "evaluate", ["budget=s1", "budget.max_thinking_tokens=[16]", "budget.min_thinking_tokens=32"]
            ).budget
        )


@pytest.mark.parametrize(
    "point",
    [
        thinking_budget(24),
        thinking_budget(24, num_waits=2),
        thinking_budget(24, num_waits=2, min_thinking_tokens=8),
        thinking_budget(6, num_waits=1),
    ],
    ids=lambda p: p.id,
)
def test_single_pass_equals_multipass_reference_and_one_by_one(closer, forcings, point):
    batched = forcings["hf"].forced(point)  # the closer's greedy run, shared with the rules and vLLM's checks
    multipass = forced(closer, point, budget_impl="multi_pass")
    assert summary(batched) == summary(multipass)
    for prompt, g in zip(PROMPTS, batched):
        (alone,) = engine().generate(
            closer, [GenerationRequest(prompt=prompt)], GenerationParams(budget=point)
        )
        assert summary([alone]) == summary([g])


def test_a_model_that_never_closes_its_thinking_still_answers_and_counts_as_forced():
    tokenizer = tiny_tokenizer()
    end, eos = tokenizer.convert_tokens_to_ids(END), tokenizer.eos_token_id
    bundle = bundle_of(tiny_llama(tokenizer, bias={end: -100.0, eos: -100.0}), tokenizer)
    gens = forced(
        bundle, BudgetPoint(16, num_waits=2, final_answer_string="Final Answer:", max_answer_tokens=16)
    )
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
            assert (g.thinking_tokens, g.waits_used, g.forced_end, g.finish_reason) == (
                len(wait) * waits,
                waits,
                True,
                "eos",
            )
            assert g.text == f"<think>{'Wait' * waits}{END}{ANSWER}"


def test_bad_budgets_are_refused_with_the_key_named():
    with pytest.raises(ValueError, match="max_thinking_tokens=0"):
        BudgetPoint(0)
    with pytest.raises(ValueError, match="wait_string"):
        BudgetPoint(16, wait_string="")
    tokenizer = tiny_tokenizer()
    with pytest.raises(ValueError, match="max_answer_tokens=3 leaves no room"):
        forcing_ids(
            tokenizer,
            SpecialTokens(),
            BudgetPoint(16, final_answer_string="Final Answer:", max_answer_tokens=3),
            [tokenizer.eos_token_id],
        )
    with pytest.raises(ValueError, match="think_end"):
        forcing_ids(tokenizer, dataclasses.replace(SpecialTokens(), think_end=""), BudgetPoint(16), [2])


# ------------------------------------------------------------------------------------------------------------
# The shared rules on every engine, bare and with a LoRA adapter

REPLAYED = "replayed-closer"  # bundle.source: the name the fake vLLM gets (not a dir: it replays the closer)


def save_lora(closer, out: Path, seed: int = 1, **config) -> str:
    """A random LoRA on the closer's q/v projections (B random too, so it changes what is generated),
    saved."""
    torch.manual_seed(seed)
    config = {
        "r": 4,
        "lora_alpha": 4,
        "target_modules": ["q_proj", "v_proj"],
        "init_lora_weights": False,
        **config,
    }
    get_peft_model(copy.deepcopy(closer.model), LoraConfig(**config)).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def adapter_dir(closer, tmp_path_factory) -> str:
    return save_lora(closer, tmp_path_factory.mktemp("run") / "adapter")


def adapted(closer, adapter_dir: str):
    """The closer with the saved adapter loaded and active, as evaluate loads one (its dir recorded)."""
    return dataclasses.replace(
        closer,
        model=load_adapter(copy.deepcopy(closer.model), adapter_dir),
        adapter_dirs={"default": adapter_dir},
        source=REPLAYED,
    )


def vllm(**kw):
    return lambda: VLLMEngine(progress=False, **kw)


ENGINES = ["hf", "hf+adapter", "vllm", "vllm+adapter"]


@pytest.fixture(scope="module")
def forcings(closer, adapter_dir) -> dict[str, Forcing]:
    """The closer, bare and with the saved adapter, behind each engine: one Forcing per engine for the module,
    so its greedy runs (Forcing.forced) are shared by the rules and the comparisons that ask for the same
    point ("hf" and "hf+adapter" are the references vLLM must equal). Tests only read these bundles."""
    base, with_adapter = dataclasses.replace(closer, source=REPLAYED), adapted(closer, adapter_dir)
    return {
        "hf": Forcing(base),
        "hf+adapter": Forcing(with_adapter),
        "vllm": Forcing(base, vllm(lora="serve")),
        "vllm+adapter": Forcing(with_adapter, vllm(lora="serve")),
    }


def adapter_state(bundle) -> tuple | None:
    if not hasattr(bundle.model, "get_model_status"):
        return None
    status = bundle.model.get_model_status()
    return status.enabled, status.active_adapters


@pytest.fixture(params=ENGINES)
def target(request, closer, forcings, monkeypatch) -> Iterator[Forcing]:
    if request.param.startswith("vllm"):
        install(monkeypatch, closer)
    forcing = forcings[request.param]
    before = adapter_state(forcing.bundle)
    yield forcing
    # the module's rules share it: a rule that switched the adapter off would change the next rule's model
    assert adapter_state(forcing.bundle) == before, f"a rule left the {request.param} model changed"


@pytest.mark.parametrize("rule", RULES, ids=rule_id)
def test_budget_forcing_rules_hold_on_every_engine(target, rule):
    rule(target)


# short answers (the rules' points, so their runs are shared), and one with the default 32-token answer
POINTS = [
    thinking_budget(24),
    thinking_budget(24, num_waits=2),
    thinking_budget(24, num_waits=2, min_thinking_tokens=8),
    thinking_budget(6, num_waits=1),
    BudgetPoint(24, num_waits=2, final_answer_string="Final Answer:"),
]


def point_id(p: BudgetPoint) -> str:
    return f"{p.id}_{p.final_answer_string or 'plain'}_a{p.max_answer_tokens}"


@pytest.mark.parametrize("point", POINTS, ids=point_id)
def test_vllm_engine_forces_budgets_exactly_as_the_hf_engine(closer, forcings, monkeypatch, point):
    """The engines share the rules but not the mechanics (a logits processor in one generate call vs s1's
    multi-pass loop over vLLM requests): on the same greedy model both give the same tokens and counts."""
    fake = install(monkeypatch, closer)
    vllm_engine = VLLMEngine(progress=False)
    recorded = dataclasses.replace(closer, source=REPLAYED)
    via_vllm = vllm_engine.generate(recorded, requests(), GenerationParams(budget=point))
    reference = forcings["hf"].forced(point)
    assert summary(via_vllm) == summary(reference)
    assert [(g.text, g.thinking) for g in via_vllm] == [(g.text, g.thinking) for g in reference]
    calls = [
        n for n, _ in fake.LLM.calls
    ]  # requests per pass: s1's loop re-submits only the rows still thinking
    assert calls[0] == len(PROMPTS) and len(calls) >= 2 and all(n <= len(PROMPTS) for n in calls)
    plain = vllm_engine.generate(recorded, requests(), GenerationParams(max_new_tokens=12))
    assert summary(plain) == summary(forcings["hf"].forced(None, max_new_tokens=12))
    assert [i.kwargs.get("enable_lora") for i in fake.LLM.instances] == [None]  # no adapter: no LoRA


@pytest.mark.parametrize("point", POINTS, ids=point_id)
def test_vllm_serves_the_adapter_from_its_dir_as_hf_base_plus_adapter(
    closer, adapter_dir, forcings, monkeypatch, point
):
    """lora=auto (the default) on a plain LoRA: vLLM's LoRA gets the adapter's dir in a LoRARequest on every
    pass; the outputs equal HF base+adapter's, and the same instance then runs the bare base as HF does."""
    bundle = adapted(closer, adapter_dir)
    reference, base_reference = forcings["hf+adapter"].forced(point), forcings["hf"].forced(point)
    assert summary(reference) != summary(base_reference)  # the adapter changes what is generated
    fake = install(monkeypatch, closer)
    vllm_engine = VLLMEngine(progress=False)
    via_vllm = vllm_engine.generate(bundle, requests(), GenerationParams(budget=point))
    assert summary(via_vllm) == summary(reference)
    assert [(g.text, g.thinking) for g in via_vllm] == [(g.text, g.thinking) for g in reference]
    (llm,) = fake.LLM.instances
    assert (llm.path, llm.enable_lora, llm.max_lora_rank, llm.max_loras) == (
        REPLAYED,
        True,
        8,
        1,
    )  # rank 4 -> 8
    assert len(fake.LLM.calls) >= 2 and {lora for _, lora in fake.LLM.calls} == {1}
    assert llm.adapters[1][0] == adapter_dir
    with bundle.model.disable_adapter():  # evaluate's base run on the same engine
        bare = vllm_engine.generate(bundle, requests(), GenerationParams(budget=point))
    assert summary(bare) == summary(base_reference)
    assert len(fake.LLM.instances) == 1 and fake.LLM.calls[-1][1] is None


def test_vllm_merge_fallback_loads_a_merged_copy_and_matches_hf(closer, adapter_dir, forcings, monkeypatch):
    """lora=merge: PEFT's merge_and_unload on a copy, written as a checkpoint that vLLM loads (the fake reads
    its safetensors strictly); the bundle's own model keeps its adapter; the copy goes with the engine."""
    bundle, point = adapted(closer, adapter_dir), thinking_budget(24, num_waits=2)
    fake = install(monkeypatch, closer)
    vllm_engine = VLLMEngine(progress=False, lora="merge")
    via_vllm = vllm_engine.generate(bundle, requests(), GenerationParams(budget=point))
    assert summary(via_vllm) == summary(forcings["hf+adapter"].forced(point))
    (llm,) = fake.LLM.instances
    merged = Path(llm.path)
    assert merged.is_dir() and (merged / "config.json").is_file() and "enable_lora" not in llm.kwargs
    assert not llm.enable_lora and {lora for _, lora in fake.LLM.calls} == {None}
    assert bundle.model.get_model_status().active_adapters == ["default"]  # merged on a copy only
    del vllm_engine, llm
    fake.LLM.instances.clear()
    gc.collect()
    assert not merged.exists()


def test_auto_merges_what_vllms_lora_cannot_load_and_serve_refuses_it(closer, tmp_path, monkeypatch):
    """An adapter with trained token rows (recipe.train_*_rows) or modules_to_save: vLLM's LoRA refuses it,
    so lora=auto merges it (same outputs as HF), and lora=serve fails naming the adapter and what it holds."""
    end = ids_of(closer, END)
    cases = {
        "trainable_token_indices": save_lora(
            closer, tmp_path / "rows" / "adapter", trainable_token_indices={"embed_tokens": end}
        ),
        "modules_to_save": save_lora(closer, tmp_path / "head" / "adapter", modules_to_save=["lm_head"]),
    }
    bundles = {held: adapted(closer, path) for held, path in cases.items()}  # loaded before the fake "GPU"
    fake = install(monkeypatch, closer)
    point = thinking_budget(24, num_waits=2)
    for held, path in cases.items():
        assert held in json.loads((Path(path) / "adapter_config.json").read_text())
        bundle = bundles[held]
        vllm_engine = VLLMEngine(progress=False)
        via_vllm = vllm_engine.generate(bundle, requests(), GenerationParams(budget=point))
        assert summary(via_vllm) == summary(forced(bundle, point))
        assert Path(fake.LLM.instances[-1].path).is_dir() and fake.LLM.calls[-1][1] is None
        with pytest.raises(
            ValueError,
            match=rf"engine.lora=serve: vLLM's LoRA cannot load the adapter {path}: "
            rf".*{held}.*Use engine.lora=auto or merge",
        ):
            VLLMEngine(progress=False, lora="serve").generate(
                bundle, requests(), GenerationParams(budget=point)
            )


def test_vllm_adapter_settings_are_checked_with_the_key_named(closer, adapter_dir, monkeypatch):
    wide = save_lora(closer, Path(adapter_dir).parent.parent / "wide" / "adapter", r=16, lora_alpha=16)
    bundles = [adapted(closer, wide), dataclasses.replace(adapted(closer, adapter_dir), adapter_dirs={})]
    install(monkeypatch, closer)
    with pytest.raises(
        ValueError, match=r"engine.lora='served', expected one of \('auto', 'serve', 'merge'\)"
    ):
        VLLMEngine(lora="served")
    with pytest.raises(ValueError, match=r"engine.max_lora_rank=12, expected null or one of vLLM's"):
        VLLMEngine(max_lora_rank=12)
    with pytest.raises(
        ValueError, match=r"engine.max_lora_rank=8 is below the rank of the adapter\(s\) .*wide"
    ):
        VLLMEngine(max_lora_rank=8, progress=False).generate(bundles[0], requests(), GenerationParams())
    with pytest.raises(ValueError, match=r"PEFT adapter 'default' but not the dir it was loaded from"):
        VLLMEngine(progress=False).generate(bundles[1], requests(), GenerationParams())
