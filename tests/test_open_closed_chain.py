"""A user's benchmark-style CSV (image, question, free-text answer; images in a folder; only the column
mapping
configured) through every stage: generate.py's stages, train.py dataset=curated, evaluate.py budget=s1."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mvqa.curate.pipeline import run_curation, stage_items
from mvqa.data.records import kind_counts
from mvqa.eval.runner import run_evaluation
from mvqa.train.recipe import run_training

ROWS = [  # (question, answer): half yes/no, half open; yes and no balanced
    ("Is there a lesion in the upper left quadrant?", "yes"),
    ("Is the liver enlarged?", "No"),
    ("Is this a CT scan?", "Yes."),
    ("Is the lung clear?", "no"),
    ("Is there a fracture?", "yes"),
    ("Is the heart enlarged?", "no"),
    ("Which organ is abnormal?", "the liver"),
    ("Where is the lesion?", "upper left"),
    ("What modality is this?", "CT"),
    ("How many lesions are there?", "two"),
    ("Which side is affected?", "left lung"),
    ("What is the abnormality?", "a round mass"),
]
COLUMNS = [
    "dataset=csv",
    "dataset.columns.image=img",
    "dataset.columns.question=q",
    "dataset.columns.answer=a",
]
UNIT_MODELS = [
    "scorer_model.size=unit",
    "scorer_model.path=null",
    "reasoner.size=unit",
    "reasoner.path=null",
    "pipeline.trace.max_new_tokens=8",
    "pipeline.trace.batch_size=6",
    "pipeline.trace.progress=false",
    "scorer.progress=false",
    "scorer.fraction=1.0",
    "sampler.n=4",
    "logger=none",
]


def write_benchmark_csv(folder: Path, traces: bool = False) -> Path:
    """Real PNG and JPEG files in images/, and a CSV naming them; with `traces`, a raw_output column of
    correct Med-R1-style traces (what a finished trace stage leaves)."""
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, (q, a) in enumerate(ROWS):
        name = f"images/scan_{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / name)
        row = {"img": name, "q": q, "a": a}
        if traces:
            row["raw_output"] = f"<think>I look at the scan. It shows {a}.</think><answer>{a}</answer>"
        rows.append(row)
    path = folder / "bench.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_every_generate_stage_runs_on_closed_and_open_items(compose, tmp_path, capsys):
    path = write_benchmark_csv(tmp_path / "data")
    out = tmp_path / "gen"
    common = [*COLUMNS, f"dataset.path={path}", *UNIT_MODELS, f"pipeline.cache_dir={tmp_path}/stages"]
    result = run_curation(compose("generate", [*common, "pipeline.stages=[score,hard,trace]"], out), out)
    printed = capsys.readouterr().out
    assert "12 items" in printed and "mcq 0, closed 6, open 6" in printed  # the reader's line per kind
    funnel = {f["stage"]: f for f in result["funnel"]}
    assert [f["stage"] for f in result["funnel"]] == ["load", "score", "hard", "trace"]
    assert funnel["score"]["n_out"] == funnel["trace"]["n_out"] == 12  # nothing refused for lacking choices
    score_items = [it.to_dict() for it in stage_items(out, "score")]
    assert all(0.0 < it["extra"]["p_correct"] <= 1.0 for it in score_items)
    closed = [it for it in score_items if it["kind"] == "closed"]
    assert len(closed) == 6 and all(len(it["extra"]["choice_logprobs"]) == 2 for it in closed)  # yes vs no
    assert all(len(it["extra"]["choice_logprobs"]) == 1 for it in score_items if it["kind"] == "open")
    traced = [it.to_dict() for it in stage_items(out, "trace")]
    assert {it["kind"] for it in traced} == {"closed", "open"} and all(
        "raw_output" in it["extra"] for it in traced
    )
    # The unit-size random reasoner answers nothing right: the filter then stops the chain, saying why, and
    # the
    # traces stay cached for a rerun with a better reasoner.
    with pytest.raises(
        RuntimeError, match=r"stage 'filter' emptied the set: 12 in, 0 out \(\{'(unparseable|wrong)"
    ):
        run_curation(compose("generate", common, tmp_path / "gen2"), tmp_path / "gen2")
    assert not (tmp_path / "gen2" / "final.csv").exists()


def test_curated_free_text_traces_export_train_and_evaluate(compose, tmp_path, capsys):
    path = write_benchmark_csv(tmp_path / "data", traces=True)
    gen = tmp_path / "gen"
    cfg = compose(
        "generate",
        [
            *COLUMNS,
            f"dataset.path={path}",
            "dataset.extra_columns=[raw_output]",
            "pipeline.stages=[filter,sample,export]",
            "sampler.n=10",
            "logger=none",
            f"pipeline.cache_dir={tmp_path}/stages",
        ],
        gen,
    )
    result = run_curation(cfg, gen)
    assert [f["n_out"] for f in result["funnel"]] == [12, 12, 10, 10]
    final = pd.read_csv(gen / "final.csv", keep_default_na=False)
    assert set(final["answer_type"]) == {"CLOSED", "OPEN"} and (final["Answer_label"] == "").all()
    conversations = json.loads((gen / "llava_conversations.json").read_text())
    assert all(c["conversations"][1]["value"].endswith("</answer>") for c in conversations)
    assert len(list((gen / "images" / "images").iterdir())) == 10

    train_out = tmp_path / "train"
    tcfg = compose(
        "train",
        [
            "dataset=curated",
            f"dataset.path={gen / 'final.csv'}",
            "model=tiny_llava",
            "model.size=unit",
            "data.batch_size=4",
            "data.val_max_new_tokens=8",
            "data.max_length=768",
            "trainer.max_steps=3",
            "trainer.enable_progress_bar=false",
            "logger=csv",
        ],
        train_out,
    )
    metrics = run_training(tcfg, train_out)
    assert (train_out / "adapter" / "adapter_config.json").is_file()
    printed = capsys.readouterr().out
    assert "mcq 0" in printed  # the curated set re-read keeps its kinds
    logged = pd.read_csv(next(train_out.rglob("metrics.csv")))
    assert "val/acc_closed" in logged.columns or "val/acc_open" in logged.columns, list(logged.columns)
    assert metrics["n_train"] + metrics["n_val"] == 10  # exactly the exported traces

    eval_out = tmp_path / "eval"
    ecfg = compose(
        "evaluate",
        [
            *COLUMNS,
            f"dataset.path={path}",
            "model=tiny_llava",
            "model.size=unit",
            f"adapters=[{train_out / 'adapter'}]",
            "budget.max_thinking_tokens=[4,8]",
            "budget.num_waits=[0,1]",
            "eval.n_bootstrap=50",
            "logger=none",
            "trainer.enable_progress_bar=false",
        ],
        eval_out,
    )
    run_evaluation(ecfg, eval_out)
    printed = capsys.readouterr().out
    assert "12 -> 12 items (mcq 0, closed 6, open 6)" in printed
    assert "By question kind" in printed and "open recall" in printed
    m = json.loads((eval_out / "metrics.json").read_text())
    forced = [r for r in m["runs"] if r["budget_id"] != "unforced"]
    assert len(forced) == 2 * 4  # base and base+adapter at 4 budget points
    for r in forced:
        assert set(r["by_kind"]) == {"closed", "open"} and r["by_kind"]["closed"]["n"] == 6
        o = r["by_kind"]["open"]["open"]
        for key in ("exact_match", "recall", "f1"):
            lo, hi = o[f"{key}_ci95"]
            assert lo <= o[key] <= hi
    assert all(set(c["by_kind"]) == {"closed", "open"} for c in m["comparisons"])
    report = (eval_out / "report.md").read_text()
    assert "## By question kind" in report and "### Paired, by question kind" in report
    assert (eval_out / "closed_accuracy_vs_thinking.png").is_file()
    assert (eval_out / "open_recall_vs_thinking.png").is_file()
    preds = [json.loads(line) for line in (eval_out / "predictions.jsonl").open()]
    assert kind_counts_of(preds) == {"closed": 6 * 8, "open": 6 * 8}


def kind_counts_of(preds: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in preds:
        counts[p["kind"]] = counts.get(p["kind"], 0) + 1
    return counts


@pytest.mark.parametrize("bad", ["empty_answer"])
def test_an_empty_assistant_turn_is_refused_at_export(bad):
    from mvqa.curate.export import llava_conversations
    from mvqa.data.records import VQAItem

    item = VQAItem(id="x", image="x.png", question="What is it?", choices=[], answer_label=None, answer="")
    with pytest.raises(ValueError, match="item 'x' \\(open\\) has neither a trace"):
        llava_conversations([item], "{question}")
    assert kind_counts([item]) == {"mcq": 0, "closed": 0, "open": 1}


def test_direct_answers_train_on_open_and_closed_items(compose, tmp_path):
    """train.py trace_format=direct on the user's CSV: the answers' own words are the targets, validation
    grades
    each kind its way, and the adapter is saved."""
    path = write_benchmark_csv(tmp_path / "data")
    out = tmp_path / "train"
    cfg = compose(
        "train",
        [
            *COLUMNS,
            f"dataset.path={path}",
            "trace_format=direct",
            "data.prompt=direct",
            "model=tiny_llava",
            "model.size=unit",
            "data.batch_size=4",
            "data.val_fraction=0.25",
            "data.val_max_new_tokens=8",
            "data.max_length=768",
            "trainer.max_steps=2",
            "trainer.enable_progress_bar=false",
            "logger=csv",
        ],
        out,
    )
    metrics = run_training(cfg, out)
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert metrics["n_train"] + metrics["n_val"] == 12 and metrics["stats"]["format"]["dropped"] == []
    logged = pd.read_csv(next(out.rglob("metrics.csv")))
    per_kind = {c for c in logged.columns if c.startswith("val/acc_")}
    assert "val/acc" in logged.columns and per_kind and per_kind <= {"val/acc_closed", "val/acc_open"}
