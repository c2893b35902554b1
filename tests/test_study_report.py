"""The study report's per-question-type figures on hand-made predictions, against hand-computed means."""

from __future__ import annotations

import pytest

from mvqa.eval.study_report import (
    BASE,
    BASE_AS_USED,
    format_study,
    study_metrics,
    type_comparison_rows,
    type_rows,
    verdict_lines,
)

BUDGET = {"max_thinking_tokens": 64, "num_waits": 0}
# Six items: four of type "stage", two of type "size".
TYPES = {"i0": "stage", "i1": "stage", "i2": "stage", "i3": "stage", "i4": "size", "i5": "size"}


def preds(model: str, correct: dict[str, int], budget_id: str = "t64_w0", budget: dict | None = None) -> list:
    return [{"model": model, "budget_id": budget_id, "budget": budget or BUDGET, "item_id": i, "kind": "mcq",
             "content_type": TYPES[i], "correct": c, "thinking_tokens": 10} for i, c in correct.items()]


@pytest.fixture()
def metrics() -> dict:
    rows = [
        # curated, two seeds: stage items right 4/4 then 2/4, size 0/2 both times
        *preds("base+curated-seed0/adapter", {"i0": 1, "i1": 1, "i2": 1, "i3": 1, "i4": 0, "i5": 0}),
        *preds("base+curated-seed1/adapter", {"i0": 1, "i1": 1, "i2": 0, "i3": 0, "i4": 0, "i5": 0}),
        # random: stage 1/4, size 2/2
        *preds("base+random-seed0/adapter", {"i0": 1, "i1": 0, "i2": 0, "i3": 0, "i4": 1, "i5": 1}),
        *preds("base", {i: 0 for i in TYPES}),
        *preds("base", {"i0": 1, "i1": 0, "i2": 0, "i3": 0, "i4": 1, "i5": 0}, "unforced", {}),
    ]
    return study_metrics(rows, ["curated", "random"])


def test_accuracy_per_question_type_is_the_mean_over_seeds_and_items(metrics):
    by_arm = {r["arm"]: r["by_content_type"] for r in metrics["rows"]}
    assert by_arm["curated"]["stage"]["mean"] == pytest.approx(0.75)  # (4 + 2) / 8
    assert by_arm["curated"]["size"]["mean"] == 0.0
    assert by_arm["random"]["stage"]["mean"] == 0.25 and by_arm["random"]["size"]["mean"] == 1.0
    assert by_arm[BASE]["stage"]["n"] == 4 and by_arm[BASE]["size"]["mean"] == 0.0
    used = metrics["base_as_used"]["by_content_type"]
    assert used["stage"]["mean"] == 0.25 and used["size"]["mean"] == 0.5
    lo, hi = by_arm["curated"]["stage"]["ci95"]
    assert 0.5 <= lo <= 0.75 <= hi <= 1.0  # per-item means 1, 1, .5, .5: the interval stays between them


def test_paired_differences_per_type_against_random_and_the_base_as_used(metrics):
    comps = {(c["arm"], c["against"]): c["by_content_type"] for c in metrics["comparisons"]}
    assert comps["curated", "random"]["stage"]["diff"] == pytest.approx(0.5)  # per item 0, 1, .5, .5
    assert comps["curated", "random"]["size"]["diff"] == -1.0
    assert comps["curated", BASE_AS_USED]["size"]["diff"] == -0.5
    header, rows = type_comparison_rows(metrics)
    assert header == ["arm", "against", "budget", "Δ size", "Δ stage"]
    assert {(r[0], r[1]) for r in rows} == {("curated", "random"), ("curated", BASE_AS_USED),
                                            ("random", BASE_AS_USED)}  # the forced base is in the kind table
    curated_vs_random = next(r for r in rows if r[:2] == ["curated", "random"])
    assert curated_vs_random[3].startswith("-1.000") and curated_vs_random[4].startswith("+0.500")


def test_type_table_has_every_arm_and_the_base_as_used(metrics):
    header, rows = type_rows(metrics)
    assert header == ["arm", "budget", "size", "stage"]
    assert [r[:2] for r in rows] == [[BASE, "t64_w0"], ["curated", "t64_w0"], ["random", "t64_w0"],
                                     [BASE_AS_USED, "unforced"]]
    assert rows[-1][2].startswith("0.500") and rows[1][3].startswith("0.750")
    study = {"pool_funnel": [], "funnels": {}, "metrics": metrics}
    text = format_study(study)
    assert "Accuracy per question type" in text and "Paired per question type" in text


def test_verdict_says_wins_losses_and_noise_plainly():
    # Twenty items, one seed each: curated right on all, random on half, the base as used on none.
    ids = {f"i{k}": "stage" for k in range(20)}
    TYPES.update(ids)
    rows = [*preds("base+curated-seed0/adapter", dict.fromkeys(ids, 1)),
            *preds("base+random-seed0/adapter", {i: k % 2 for k, i in enumerate(ids)}),
            *preds("base", {i: k % 2 for k, i in enumerate(ids)}),
            *preds("base", dict.fromkeys(ids, 0), "unforced", {})]
    lines = verdict_lines(study_metrics(rows, ["curated", "random"]))
    assert "curated (at its best point, t64_w0: 1.000) beats random: +0.500 [" in lines[0]
    assert any(line.startswith("random (at its best point, t64_w0: 0.500) is within noise of base (forced): "
                               "+0.000") for line in lines)
    assert any(line.startswith("random") and "beats base (as used): +0.500" in line for line in lines)
    swapped = [{**p, "model": "base+curated-seed0/adapter"} for p in rows[20:40]] + \
        [{**p, "model": "base+random-seed0/adapter"} for p in rows[:20]] + rows[40:]
    losing = verdict_lines(study_metrics(swapped, ["curated", "random"]))
    assert "curated (at its best point, t64_w0: 0.500) loses to random: -0.500 [" in losing[0]
