"""Evaluation metrics, report and plots on hand-made prediction records (exact numbers worked out by hand)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy.stats import bootstrap

from mvqa.eval import compute_metrics, format_table, write_report
from mvqa.eval.metrics import bootstrap_accuracy_ci, mcnemar_exact_p, paired_bootstrap_diff_ci, s1_scaling
from mvqa.eval.plots import accuracy_figure, plot_accuracy_vs_thinking


def budget(cap, waits=0, minimum=0, wait="Wait"):
    return {"max_thinking_tokens": cap, "min_thinking_tokens": minimum, "num_waits": waits,
            "wait_string": wait}


def pred(model, item, correct, cap=16, tokens=8, waits_used=0, status="ok", modality="CT", label="A",
         forced=False, content="closed", num_waits=2, minimum=0):
    bud = budget(cap, num_waits, minimum)
    bid = f"max{cap}_min{bud['min_thinking_tokens']}_w{bud['num_waits']}_{bud['wait_string']}"
    return {"model": model, "budget_id": bid, "budget": bud, "item_id": item, "modality": modality,
            "content_type": content, "answer_label": label, "raw_output": "", "thinking": "",
            "parsed_answer": None if status == "unparseable" else label, "parse_status": status,
            "correct": correct, "thinking_tokens": tokens, "waits_used": waits_used, "forced_end": forced}


@pytest.fixture
def small():
    """4 items; base and tuned at caps 16 and 32. Worked out by hand below."""
    return [
        # base @16: 2/4 right, q3 unparseable, tokens 8,16,16,12 (mean 13), q2 forced
        pred("base", "q1", True, 16, 8, modality="CT", label="A"),
        pred("base", "q2", True, 16, 16, modality="MRI", label="B", forced=True),
        pred("base", "q3", False, 16, 16, status="unparseable", modality="CT", label="C"),
        pred("base", "q4", False, 16, 12, modality="MRI", label="A"),
        # base @32: 3/4, tokens 20,30,40(over the cap),10 (mean 25)
        pred("base", "q1", True, 32, 20), pred("base", "q2", True, 32, 30), pred("base", "q3", True, 32, 40),
        pred("base", "q4", False, 32, 10),
        # tuned @16: 3/4 (q1 right->wrong, q3 and q4 wrong->right), 1 Wait each, tokens all 10
        pred("tuned", "q1", False, 16, 10, waits_used=1), pred("tuned", "q2", True, 16, 10, waits_used=1),
        pred("tuned", "q3", True, 16, 10, waits_used=1), pred("tuned", "q4", True, 16, 10, waits_used=1),
        # tuned @32: 4/4, tokens all 30
        *(pred("tuned", q, True, 32, 30, waits_used=2) for q in ("q1", "q2", "q3", "q4")),
    ]


def test_hand_computed_cell_metrics(small):
    m = compute_metrics(small, n_bootstrap=200)
    assert m["base_model"] == "base" and m["models"] == ["base", "tuned"]
    assert m["budget_ids"] == ["max16_min0_w2_Wait", "max32_min0_w2_Wait"]
    b16 = m["runs"][0]
    assert (b16["model"], b16["budget_id"], b16["n"], b16["n_correct"]) == ("base", "max16_min0_w2_Wait", 4,
                                                                            2)
    assert b16["accuracy"] == 0.5
    def n_acc(split):
        return {k: {"n": v["n"], "accuracy": v["accuracy"]} for k, v in split.items()}

    assert n_acc(b16["by_modality"]) == {"CT": {"n": 2, "accuracy": 0.5}, "MRI": {"n": 2, "accuracy": 0.5}}
    assert n_acc(b16["by_answer_label"]) == {"A": {"n": 2, "accuracy": 0.5}, "B": {"n": 1, "accuracy": 1.0},
                                             "C": {"n": 1, "accuracy": 0.0}}
    assert n_acc(b16["by_content_type"]) == {"closed": {"n": 4, "accuracy": 0.5}}
    assert n_acc(b16["by_kind"]) == {"mcq": {"n": 4, "accuracy": 0.5}}
    # Two items, one right: every resample has 0, 1 or 2 right, so the interval spans those means.
    assert set(b16["by_modality"]["CT"]["ci95"]) <= {0.0, 0.5, 1.0} and "open" not in b16["by_kind"]["mcq"]
    assert (b16["n_unparseable"], b16["parse_failure_rate"]) == (1, 0.25)
    assert (b16["mean_thinking_tokens"], b16["mean_waits_used"], b16["forced_share"]) == (13.0, 0.0, 0.25)
    b32 = m["runs"][1]
    assert (b32["accuracy"], b32["mean_thinking_tokens"], b32["within_budget_share"]) == (0.75, 25.0, 0.75)
    t16 = m["runs"][2]
    assert (t16["model"], t16["accuracy"], t16["mean_waits_used"]) == ("tuned", 0.75, 1.0)


def test_hand_computed_s1_scaling_metrics(small):
    s = compute_metrics(small, n_bootstrap=200)["scaling"]
    # base: 7 of 8 runs within their cap (40 > 32); one slope (0.75 - 0.5) / (25 - 13)
    assert s["base"]["control"] == 7 / 8
    assert s["base"]["scaling"] == pytest.approx(0.25 / 12)
    assert (s["base"]["performance"], s["base"]["best_budget_id"]) == (0.75, "max32_min0_w2_Wait")
    # tuned: (1.0 - 0.75) / (30 - 10)
    assert s["tuned"]["control"] == 1.0
    assert s["tuned"]["scaling"] == pytest.approx(0.25 / 20)
    assert s["tuned"]["scaling_by_series"] == {"min0_w2_Wait": pytest.approx(0.25 / 20)}
    assert (s["tuned"]["performance"], s["tuned"]["n_budget_points"]) == (1.0, 2)


def test_hand_computed_paired_comparison(small):
    c16, c32 = compute_metrics(small, n_bootstrap=500)["comparisons"]
    assert (c16["model"], c16["base"], c16["budget_id"], c16["n_paired"]) == ("tuned", "base",
                                                                              "max16_min0_w2_Wait", 4)
    assert (c16["right_to_wrong"], c16["wrong_to_right"], c16["both_right"], c16["both_wrong"]) == (1, 2, 1,
                                                                                                    0)
    assert c16["accuracy_diff"] == pytest.approx(0.25)
    # 1 vs 2 discordant: P = 2 * P(X <= 1 | n=3) = 2 * 4/8, capped at 1
    assert c16["mcnemar_p"] == pytest.approx(1.0)
    assert c16["ci95"][0] <= 0.25 <= c16["ci95"][1]
    assert (c32["right_to_wrong"], c32["wrong_to_right"], c32["accuracy_diff"]) == (0, 1, pytest.approx(0.25))


def test_mcnemar_exact_p_on_known_tables():
    assert mcnemar_exact_p(1, 9) == pytest.approx(2 * 11 / 1024)  # 2 * P(X <= 1), X ~ Bin(10, 1/2)
    assert mcnemar_exact_p(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact_p(5, 5) == pytest.approx(1.0)
    assert mcnemar_exact_p(0, 0) == 1.0


def test_ci_contains_estimate_and_narrows_with_n():
    widths = []
    for n in (20, 200, 2000):
        preds = [pred("base", f"q{i}", i % 5 < 3) for i in range(n)]  # accuracy exactly 0.6
        run = compute_metrics(preds, n_bootstrap=1000)["runs"][0]
        lo, hi = run["ci95"]
        assert run["accuracy"] == 0.6 and lo < 0.6 < hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert widths[1] == pytest.approx(2 * 1.96 * np.sqrt(0.6 * 0.4 / 200), rel=0.15)  # normal approximation


def test_binomial_bootstrap_matches_index_resampling():
    """The shortcut (draw the success count) gives the interval of ordinary resampling."""
    x = np.array([True] * 70 + [False] * 130)
    lo, hi = bootstrap_accuracy_ci(x, 4000, np.random.default_rng(1))
    ref = bootstrap((x.astype(float),), np.mean, n_resamples=4000, method="percentile",
                    random_state=np.random.default_rng(2)).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.015) and hi == pytest.approx(ref.high, abs=0.015)
    a = np.array([True, False] * 100)
    b = np.array([True, True, False, True] * 50)
    dlo, dhi = paired_bootstrap_diff_ci(a, b, 4000, np.random.default_rng(3))
    diffs = b.astype(float) - a.astype(float)
    ref = bootstrap((diffs,), np.mean, n_resamples=4000, method="percentile",
                    random_state=np.random.default_rng(4)).confidence_interval
    assert dlo == pytest.approx(ref.low, abs=0.015) and dhi == pytest.approx(ref.high, abs=0.015)


def test_scaling_sign_on_monotone_data():
    assert s1_scaling([(10, 0.2), (20, 0.4), (40, 0.5)]) == pytest.approx((0.02 + 0.01 + 0.005) / 3)
    assert s1_scaling([(10, 0.6), (20, 0.5), (40, 0.1)]) < 0
    assert s1_scaling([(10, 0.6)]) is None and s1_scaling([(10, 0.6), (10, 0.7)]) is None
    preds = [pred("base", f"q{i}", i < k, cap, cap // 2) for cap, k in ((16, 3), (32, 5), (64, 8))
             for i in range(10)]
    assert compute_metrics(preds, n_bootstrap=100)["scaling"]["base"]["scaling"] > 0


def test_unparseable_counted_wrong_and_reported():
    preds = [pred("base", "q1", True), pred("base", "q2", False, status="unparseable"),
             pred("base", "q3", False, status="unparseable"), pred("base", "q4", False)]
    m = compute_metrics(preds, n_bootstrap=100)
    run = m["runs"][0]
    assert (run["accuracy"], run["n_unparseable"], run["parse_failure_rate"]) == (0.25, 2, 0.5)
    assert "50.0% (2)" in format_table(m)
    with pytest.raises(ValueError, match=r"item_id='q9'.*unparseable"):
        compute_metrics([pred("base", "q9", True, status="unparseable")])


def test_bad_records_fail_with_names():
    bad = pred("base", "q1", True)
    del bad["thinking_tokens"]
    with pytest.raises(ValueError, match=r"prediction #0 \(item_id='q1'.*missing keys \['thinking_tokens'\]"):
        compute_metrics([bad])
    with pytest.raises(ValueError, match="'q1' appears twice for model 'base'"):
        compute_metrics([pred("base", "q1", True), pred("base", "q1", False)])
    clash = pred("base", "q2", True, num_waits=3)
    clash["budget_id"] = "max16_min0_w2_Wait"
    with pytest.raises(ValueError, match="budget_id 'max16_min0_w2_Wait' names two budgets"):
        compute_metrics([pred("base", "q1", True), clash])
    with pytest.raises(ValueError, match="base_model='missing'"):
        compute_metrics([pred("base", "q1", True)], base_model="missing")


def test_deterministic_for_a_seed_and_base_defaults(small):
    assert compute_metrics(small, seed=3) == compute_metrics(list(small), seed=3)
    many = [pred("base", f"q{i}", i % 3 == 0) for i in range(60)]
    assert compute_metrics(many, seed=3)["runs"][0]["ci95"] != compute_metrics(many,
                                                                               seed=4)["runs"][0]["ci95"]
    # without a model called "base" the first one seen is the base; adding a model leaves the others'
    # CIs alone
    renamed = [{**p, "model": "m0" if p["model"] == "base" else p["model"]} for p in small]
    m = compute_metrics(renamed, seed=3)
    assert m["base_model"] == "m0" and m["comparisons"][0]["model"] == "tuned"
    only_base = compute_metrics([p for p in renamed if p["model"] == "m0"], seed=3)
    assert only_base["runs"] == m["runs"][:2]


def test_min_budget_counts_in_control():
    preds = [pred("base", "q1", True, 32, 4, minimum=8), pred("base", "q2", True, 32, 12, minimum=8)]
    assert compute_metrics(preds, n_bootstrap=50)["scaling"]["base"]["control"] == 0.5


def test_an_unforced_base_is_the_reference_for_every_budget_point(small, tmp_path):
    """eval.base_budget=unforced: the base answers once, as it is used; each tuned budget point pairs with
    it."""
    base = [dict(p, budget_id="unforced", budget={"max_thinking_tokens": None, "min_thinking_tokens": 0,
                                                   "num_waits": 0, "wait_string": None})
            for p in small if p["model"] == "base" and p["budget"]["max_thinking_tokens"] == 16]
    m = compute_metrics(base + [p for p in small if p["model"] == "tuned"], n_bootstrap=200)
    assert [(c["budget_id"], c["base_budget_id"]) for c in m["comparisons"]] == [
        ("max16_min0_w2_Wait", "unforced"), ("max32_min0_w2_Wait", "unforced")]
    # base unforced: q1, q2 right. tuned @16: q2, q3, q4 right (1 right->wrong, 2 wrong->right); @32:
    # all right.
    assert [(c["accuracy_diff"], c["right_to_wrong"], c["wrong_to_right"]) for c in m["comparisons"]] == [
        (0.25, 1, 2), (0.5, 0, 2)]
    assert not m["warnings"]
    assert "| tuned | max32_min0_w2_Wait | unforced | +0.500 [" in write_report(m, tmp_path,
                                                                                plots=False).read_text()
    # eval.base_budget=both: the base also ran the grid, so each point pairs with the same point and
    # with unforced.
    both = compute_metrics(small + base, n_bootstrap=200)
    m_grid_only = compute_metrics(small, n_bootstrap=200)
    assert [(c["budget_id"], c["base_budget_id"], c["accuracy_diff"]) for c in both["comparisons"]] == [
        ("max16_min0_w2_Wait", "max16_min0_w2_Wait", 0.25),
        ("max32_min0_w2_Wait", "max32_min0_w2_Wait", 0.25),
        ("max16_min0_w2_Wait", "unforced", 0.25), ("max32_min0_w2_Wait", "unforced", 0.5)]
    assert both["scaling"]["base"] == m_grid_only["scaling"]["base"]  # the unforced run is no budget point
    assert m["scaling"]["base"]["best_budget_id"] == "unforced" and m["scaling"]["base"][
        "n_budget_points"] == 1


def test_write_report_outputs(small, tmp_path):
    m = compute_metrics(small, n_bootstrap=200)
    report = write_report(m, tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(m))
    text = report.read_text()
    assert "| base | max16_min0_w2_Wait | 0.500 [" in text
    # flips row
    assert "| tuned | max16_min0_w2_Wait | max16_min0_w2_Wait | +0.250 [" in text and "| 1 | 2 | 4 |" in text
    for name in ("acc_vs_thinking.png", "acc_vs_thinking_base.png", "acc_vs_thinking_tuned.png"):
        assert f"![{name}]({name})" in text
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.size[0] > 400
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes left nothing behind
    table = format_table(m)
    assert "tuned" in table and "0.750 [" in table and "Control" in table


def test_plot_one_line_per_wait_setting(tmp_path):
    preds = [pred(model, f"q{i}", i % 3 == 0, cap, cap // 2, waits_used=w, num_waits=w)
             for model in ("base", "tuned")
             for cap in (16, 32) for w in (0, 2) for i in range(6)]
    m = compute_metrics(preds, n_bootstrap=50)
    ax = accuracy_figure(m, models=["tuned"]).axes[0]
    lines = {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar: (data line, caps, bars)
    assert sorted(lines) == ["tuned, waits=0", "tuned, waits=2"], sorted(lines)
    for w in (0, 2):
        runs = sorted((r for r in m["runs"] if r["model"] == "tuned" and r["budget"]["num_waits"] == w),
                      key=lambda r: r["mean_thinking_tokens"])
        x, y = lines[f"tuned, waits={w}"].get_data()
        assert list(x) == [r["mean_thinking_tokens"] for r in runs] == [8, 16]  # cap // 2 thinking tokens
        assert list(y) == [r["accuracy"] for r in runs] == [2 / 6, 2 / 6]  # i % 3 == 0: q0 and q3 right
    path = plot_accuracy_vs_thinking(m, tmp_path / "p.png", models=["tuned"])
    with Image.open(path) as img:
        assert img.format == "PNG"
    with pytest.raises(ValueError, match="no budget points for models"):
        plot_accuracy_vs_thinking(m, tmp_path / "q.png", models=["nope"])


def test_wilcoxon_p_is_scipys_on_each_of_its_paths(monkeypatch):
    """The vectorised exact sign-flip test (13 pairs or fewer with ties or zeros) gives scipy's p exactly;
    larger or tie-free samples go to scipy itself."""
    from scipy.stats import wilcoxon

    from mvqa.eval.metrics import wilcoxon_p

    correctness = np.array([1, 0, -1, 1, 1, 0, 1, 1, -1, 1], dtype=float)  # paired 0/1: ties and zeros
    recall = np.array([0.5, -0.25, 0.5, 0.0, 0.75, 0.5, -0.5, 0.25])
    exact = {"correctness": correctness, "recall": recall}  # <= 13 pairs with ties or zeros: numpy's path
    to_scipy = {"30 pairs": np.tile(correctness, 3), "no ties": np.array([0.3, -1.2, 2.5, 0.7, 1.1, -0.2])}
    expected = {name: float(wilcoxon(diff).pvalue) for name, diff in {**exact, **to_scipy}.items()}
    for name, diff in to_scipy.items():
        assert wilcoxon_p(diff) == pytest.approx(expected[name], abs=1e-12), name
    with monkeypatch.context() as patch:  # the exact path never calls scipy's (slow) wilcoxon
        patch.setattr("scipy.stats.wilcoxon", lambda *a, **k: pytest.fail("scipy's wilcoxon was called"))
        for name, diff in exact.items():
            assert wilcoxon_p(diff) == pytest.approx(expected[name], abs=1e-12), name
        assert wilcoxon_p(np.zeros(5)) == 1.0
        assert wilcoxon_p(np.ones(6)) == pytest.approx(0.03125)  # all 6 positive: 2 of 64 patterns as extreme
