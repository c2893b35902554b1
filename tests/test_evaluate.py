"""Evaluation: budget-forced predictions for base and adapters, metrics/report/plots, bad adapters."""

from __future__ import annotations

import json

import pytest
from helpers import markdown_table

from mvqa.eval.runner import run_evaluation
from mvqa.train.recipe import run_training

WORLD = ["dataset=synthetic", "dataset.n_train=16", "dataset.n_val=4", "dataset.n_test=8",
         "dataset.image_size=32"]
UNIT = ["model=tiny_llava", "model.size=unit"]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A LoRA adapter trained for a few steps on the unit model (the same cached base the evaluation
    loads)."""
    from hydra import compose, initialize_config_dir

    from mvqa.config import CONFIG_DIR, setup

    setup()
    out = tmp_path_factory.mktemp("train")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", [*UNIT, *WORLD, "logger=none", "trainer.max_steps=2", "data.batch_size=4",
                                "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
                                f"paths.output_dir={out}"])
    run_training(cfg, out)
    return out / "adapter"


@pytest.mark.slow
def test_base_and_adapter_over_a_budget_grid(compose, tmp_path, adapter):
    cfg = compose("evaluate", [*UNIT, *WORLD, f"adapters=[{adapter}]", "budget.max_thinking_tokens=[6,12]",
                               "budget.num_waits=[0,1]", "eval.n_bootstrap=100", "logger=none",
                               "trainer.enable_progress_bar=false"], tmp_path / "run")
    result = run_evaluation(cfg, tmp_path / "run")
    preds = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 8 * 4 * 2
    models = {p["model"] for p in preds}
    assert len(models) == 2 and "base" in models and any(m.endswith("/adapter") for m in models)
    for p in preds:
        assert p["thinking_tokens"] <= p["budget"]["max_thinking_tokens"]
        assert p["waits_used"] <= p["budget"]["num_waits"]
        assert p["correct"] == (p["parsed_answer"] == p["answer_label"])
        assert p["raw_output"].startswith("<think>")
    # A random tiny model never closes its thinking: every answer is forced, and still produced.
    assert all(p["forced_end"] for p in preds)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for cell in metrics["runs"]:
        rows = [p for p in preds if p["model"] == cell["model"] and p["budget_id"] == cell["budget_id"]]
        assert cell["accuracy"] == pytest.approx(sum(p["correct"] for p in rows) / len(rows))
    assert len(metrics["comparisons"]) == 4  # the adapter vs the base at each budget point
    assert result["best_accuracy"] == max(r["accuracy"] for r in metrics["runs"] if r["model"] != "base")
    table = markdown_table((tmp_path / "run" / "report.md").read_text(),
                           "Accuracy by model and thinking budget")
    assert len(table) == len(metrics["runs"]) == 2 * 4  # a row per model and budget point
    for row, cell in zip(table, metrics["runs"], strict=True):
        assert (row["model"], row["budget"], row["n"]) == (cell["model"], cell["budget_id"], "8")
        assert row["accuracy [95% CI]"].startswith(f"{cell['accuracy']:.3f}") and row["forced"] == "100.0%"
    assert (tmp_path / "run" / "acc_vs_thinking.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_base_as_it_is_used_is_the_reference_for_every_budget_point(compose, tmp_path, adapter):
    """eval.base_budget=unforced with eval.base_prompt: the base answers once with its own prompt."""
    cfg = compose("evaluate", [*UNIT, *WORLD, f"adapters=[{adapter}]", "budget.max_thinking_tokens=[6,12]",
                               "budget.num_waits=[0]", "eval.n_bootstrap=50", "logger=none",
                               "eval.base_budget=unforced", "eval.base_prompt=direct_text", "eval.limit=4",
                               "trainer.enable_progress_bar=false"], tmp_path / "run")
    run_evaluation(cfg, tmp_path / "run")
    preds = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    base = [p for p in preds if p["model"] == "base"]
    assert {p["budget_id"] for p in base} == {"unforced"} and len(base) == 4
    assert not any(p["raw_output"].startswith("<think>") for p in base)  # nothing forced on the base
    tuned = [p for p in preds if p["model"] != "base"]
    assert {p["budget_id"] for p in tuned} == {"max6_min0_w0_Wait", "max12_min0_w0_Wait"}
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [(c["budget_id"], c["base_budget_id"], c["n_paired"]) for c in metrics["comparisons"]] == [
        ("max6_min0_w0_Wait", "unforced", 4), ("max12_min0_w0_Wait", "unforced", 4)]
    bad = compose("evaluate", [*UNIT, *WORLD, "eval.base_budget=never", "logger=none"], tmp_path / "bad")
    with pytest.raises(ValueError, match="eval.base_budget must be same, unforced or both, got .never."):
        run_evaluation(bad, tmp_path / "bad")

@pytest.mark.slow
def test_engine_vllm_gets_each_adapter_by_its_dir_in_its_evaluation_run(compose, adapter):
    """What engine=vllm is handed per evaluation run (evaluate.py engine=vllm adapters=[...]): the bare base,
    then the adapter as the dir given in adapters=[...], which vLLM's LoRA loads (or lora=merge merges)."""
    from mvqa.eval.runner import _active, evaluation_runs, load_models
    from mvqa.generation.engine import active_adapter_dir

    cfg = compose("evaluate", [*UNIT, *WORLD, f"adapters=[{adapter}]", "engine=vllm", "logger=none"])
    assert (cfg.engine.lora, cfg.engine.max_lora_rank, cfg.engine.merge_dir) == ("auto", None, None)
    bundle, models = load_models(cfg)
    served = []
    for label, name, _, _ in evaluation_runs(cfg, models, [None]):
        with _active(bundle.model, name):
            served.append((label, active_adapter_dir(bundle)))
    assert served == [("base", None), (f"base+{adapter.parent.name}/adapter", str(adapter))]


@pytest.mark.slow
def test_adapter_for_another_base_fails_before_generation(compose, tmp_path, adapter):
    cfg = compose("evaluate", ["model=tiny_qwen2_vl", "model.size=unit", *WORLD, f"adapters=[{adapter}]",
                               "budget=none", "logger=none"], tmp_path / "run")
    with pytest.raises(ValueError, match=r"trained on .*llava.* but the base is .*qwen2_vl"):
        run_evaluation(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "predictions.jsonl").exists()


def test_curated_items_are_excluded_from_evaluation(compose, tmp_path, shared_data):
    from mvqa.eval.runner import evaluation_items

    release = shared_data / "mvqa1k" / "sampled_final.csv"
    cfg = compose("evaluate", ["dataset=mvqa1k_release", "dataset.limit=50", f"eval.exclude={release}"])
    with pytest.raises(ValueError, match=r"no items to evaluate in dataset .mvqa1k.* 50 excluded as in "
                                         r".*sampled_final.csv"):
        evaluation_items(cfg)
    cfg = compose("evaluate", ["dataset=mvqa1k_release", "eval.limit=7"])
    assert len(evaluation_items(cfg)) == 7


@pytest.mark.parametrize("mode, expected", [
    ("same", [("base", None, "grid", "direct_text")]),
    ("unforced", [("base", None, "unforced", "direct_text")]),
    ("both", [("base", None, "unforced", "direct_text"), ("base", None, "grid", "med_r1_seed")])])
def test_base_budget_modes_decide_the_base_runs(compose, mode, expected):
    from mvqa.eval.runner import evaluation_runs
    from mvqa.generation.budget import budget_points

    cfg = compose("evaluate", [f"eval.base_budget={mode}", "eval.base_prompt=direct_text", "budget=s1",
                               "budget.max_thinking_tokens=[8]", "budget.num_waits=[0,1]"])
    grid = budget_points(cfg.budget)
    runs = evaluation_runs(cfg, [("base", None), ("tuned", "adapter0")], grid)
    named = [(label, adapter, "unforced" if pts == [None] else "grid" if pts == grid else pts, prompt)
             for label, adapter, pts, prompt in runs]
    assert named == [*expected, ("tuned", "adapter0", "grid", "med_r1_seed")]
