"""Question kinds through the record, the normaliser, parsing, grading and the per-kind metrics."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mvqa.data.answers import (
    closed_correct,
    exact_match,
    is_yes_no,
    normalise_answer,
    score_free_text,
    token_f1,
    token_recall,
)
from mvqa.data.grading import grade_output
from mvqa.data.prompts import NO_ANSWER, OK, parse_answer
from mvqa.data.records import VQAItem, kind_counts
from mvqa.eval.metrics import compute_metrics


def free(answer: str, kind: str = "", question: str = "What is shown?") -> VQAItem:
    return VQAItem(
        id=f"i-{answer}",
        image="x.png",
        question=question,
        choices=[],
        answer_label=None,
        answer=answer,
        kind=kind,
    )


# ------------------------------------------------------------------------------------------------ record
def test_kind_is_inferred_or_taken_from_the_source():
    assert (
        VQAItem(id="m", image="x", question="q", choices=["a", "b"], answer_label="A", answer="a").kind
        == "mcq"
    )
    assert free("Yes").kind == "closed" and free("no.").kind == "closed"
    assert free("left lung").kind == "open"
    assert free("Left", kind="closed").kind == "closed"  # SLAKE's CLOSED answers are not all yes/no
    assert kind_counts([free("yes"), free("liver"), free("no")]) == {"mcq": 0, "closed": 2, "open": 1}


def test_kind_contradictions_are_refused():
    with pytest.raises(ValueError, match="a closed item has no choices"):
        VQAItem(
            id="c", image="x", question="q", choices=["a", "b"], answer_label="A", answer="a", kind="closed"
        )
    with pytest.raises(ValueError, match="kind 'free'"):
        free("x", kind="free")
    with pytest.raises(ValueError, match="answer_label 'A' given but there are no choices"):
        VQAItem(id="o", image="x", question="q", choices=[], answer_label="A", answer="a")


def test_replacing_choices_or_answer_reinfers_the_kind():
    item = VQAItem(id="m", image="x", question="q", choices=["yes", "no"], answer_label="A", answer="yes")
    assert item.replace(choices=[], answer_label=None).kind == "closed"
    assert item.replace(choices=[], answer_label=None, answer="the liver").kind == "open"
    assert item.replace(choices=[], answer_label=None, answer="Left", kind="closed").kind == "closed"


# ------------------------------------------------------------------------------------------------ normaliser
@pytest.mark.parametrize(
    "raw, normal",
    [
        ("The Liver.", "liver"),
        ("  an  MRI scan ", "mri scan"),
        ("Two", "2"),
        ("three lesions", "3 lesions"),
        ("Yes.", "yes"),
        ("Yeah", "yes"),
        ("TRUE", "yes"),
        ("No!", "no"),
        ("nope", "no"),
        ("not present", "no"),
        ("left-lung", "left lung"),
        ("", ""),
    ],
)
def test_normalise_answer_examples(raw, normal):
    assert normalise_answer(raw) == normal


words = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=8)
answers = st.lists(words, min_size=1, max_size=5).map(" ".join)


@given(answers)
def test_normalise_is_idempotent(text):
    assert normalise_answer(normalise_answer(text)) == normalise_answer(text)


@given(
    answers, st.sampled_from(["", "The ", "the ", "A ", "an "]), st.sampled_from(["", ".", "!", " ?", "  "])
)
def test_case_punctuation_articles_and_spacing_never_change_the_answer(text, article, tail):
    variant = article + text.upper().replace(" ", "  ") + tail
    assert normalise_answer(variant) == normalise_answer(text)
    assert exact_match(variant, text) == (normalise_answer(text) != "")


@given(answers, answers)
def test_recall_and_f1_are_bounded_and_exact_matches_score_one(pred, gold):
    r, f = token_recall(pred, gold), token_f1(pred, gold)
    assert 0.0 <= r <= 1.0 and 0.0 <= f <= 1.0
    if exact_match(pred, gold):
        assert r == 1.0 and f == 1.0
    assert token_recall(gold + " " + pred, gold) == (1.0 if normalise_answer(gold) else 0.0)


def test_recall_and_f1_hand_computed():
    # gold tokens {left, lung}; prediction tokens {lung, mass}: recall 1/2; F1: p=1/2, r=1/2 -> 1/2.
    assert token_recall("a lung mass", "the left lung") == 0.5
    assert token_f1("a lung mass", "the left lung") == 0.5
    # prediction "left lower lung lobe" (4 tokens), gold "left lung": recall 1, precision 2/4 -> F1 2/3.
    assert token_recall("left lower lung lobe", "left lung") == 1.0
    assert token_f1("left lower lung lobe", "left lung") == pytest.approx(2 / 3)
    assert token_recall("two nodules", "2") == 1.0  # number words


def test_closed_answers_match_by_their_leading_yes_no():
    assert closed_correct("Yes, the liver is enlarged.", "yes")
    assert closed_correct("No", "No.") and closed_correct("false", "no")
    assert not closed_correct("Maybe", "yes") and not closed_correct("no, yes", "yes")
    assert closed_correct("left", "Left") and not closed_correct("right", "left")  # non-yes/no closed: EM
    assert is_yes_no("Yep") and not is_yes_no("yes it is")


def test_a_missing_answer_scores_zero():
    assert score_free_text(None, "liver", "open") == score_free_text("  ", "liver", "open")
    assert not score_free_text(None, "liver", "open").correct


# ------------------------------------------------------------------------------------------------ parsing
def test_free_text_answers_parse_from_tags_and_s1_layout():
    tags = parse_answer("<think>It looks big.</think><answer>The liver</answer>", n_choices=0)
    assert (tags.status, tags.answer_text, tags.letter, tags.answer) == (OK, "The liver", None, "The liver")
    s1 = parse_answer("<|im_start|>think\nsome thought<|im_start|>answer\nAnswer: yes", n_choices=0)
    assert (s1.status, s1.answer_text) == (OK, "yes")
    assert parse_answer("<think>cut by the budget", n_choices=0).status == NO_ANSWER
    with pytest.raises(ValueError, match="0 \\(free text\\) or 1-5"):
        parse_answer("x", n_choices=6)


def test_grading_each_kind():
    mcq = VQAItem(id="m", image="x", question="q", choices=["CT", "MRI"], answer_label="B", answer="MRI")
    assert grade_output(mcq, "<answer>B) MRI</answer>").correct
    assert not grade_output(mcq, "<answer>A</answer>").correct
    closed = free("no", question="Is there a mass?")
    g = grade_output(closed, "<think>none seen</think><answer>No, there is none.</answer>")
    assert (g.kind, g.correct, g.status) == ("closed", True, OK)
    opened = free("left lung")
    g = grade_output(opened, "<answer>the lung on the left</answer>")
    assert (g.correct, g.exact_match, g.recall) == (False, False, 1.0)
    assert grade_output(opened, "<answer>Left lung.</answer>").correct


# ------------------------------------------------------------------------------------------------ metrics
def record(item_id, kind, correct, recall=None, model="base", modality="CT"):
    recall = float(correct) if recall is None else recall
    return {
        "model": model,
        "budget_id": "unforced",
        "item_id": item_id,
        "kind": kind,
        "modality": modality,
        "content_type": "t",
        "answer_label": None,
        "parse_status": "ok",
        "correct": correct,
        "exact_match": correct,
        "recall": recall,
        "f1": recall,
        "thinking_tokens": 0,
        "waits_used": 0,
        "forced_end": False,
        "budget": {
            "max_thinking_tokens": None,
            "min_thinking_tokens": 0,
            "num_waits": 0,
            "wait_string": None,
        },
    }


def test_metrics_split_by_kind_hand_computed():
    base = [
        record("c1", "closed", True),
        record("c2", "closed", False),
        record("o1", "open", False, 0.5),
        record("o2", "open", True, 1.0),
        record("o3", "open", False, 0.0),
    ]
    tuned = [dict(r, model="tuned") for r in base]
    tuned[1].update(correct=True, exact_match=True, recall=1.0, f1=1.0)  # c2 right -> one wrong->right flip
    tuned[4].update(recall=0.5, f1=0.5)  # o3 partly recalled
    m = compute_metrics(base + tuned, n_bootstrap=200)
    cell = m["runs"][0]["by_kind"]
    assert (cell["closed"]["n"], cell["closed"]["accuracy"]) == (2, 0.5)
    assert (cell["open"]["n"], cell["open"]["accuracy"]) == (3, pytest.approx(1 / 3))
    assert (
        cell["open"]["open"]["recall"] == pytest.approx(0.5) and cell["open"]["open"]["exact_match"] == 1 / 3
    )
    lo, hi = cell["open"]["open"]["recall_ci95"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    assert "open" not in cell["closed"]
    paired = m["comparisons"][0]["by_kind"]
    assert (paired["closed"]["wrong_to_right"], paired["closed"]["accuracy_diff"]) == (1, 0.5)
    assert paired["open"]["open_recall"]["diff"] == pytest.approx(0.5 / 3)
    assert paired["open"]["accuracy_diff"] == 0.0 and paired["open"]["mcnemar_p"] == 1.0
    assert set(m["comparisons"][0]["by_modality"]) == {"CT"}


# ------------------------------------------------------------------------------------------------ curation
def traced(answer: str, kind: str, output: str | None, item_id: str = "t") -> VQAItem:
    item = VQAItem(
        id=item_id,
        image="x.png",
        question="What is shown?",
        choices=[],
        answer_label=None,
        answer=answer,
        kind=kind,
    )
    return item if output is None else item.with_extra(raw_output=output)


def test_the_filter_grades_free_text_and_names_every_drop():
    from mvqa.curate.correctness import filter_correct

    items = [
        traced("yes", "closed", "<think>seen</think><answer>Yes, there is.</answer>", "c-right"),
        traced("no", "closed", "<think>seen</think><answer>yes</answer>", "c-wrong"),
        traced("left lung", "open", "<answer>the Left Lung.</answer>", "o-exact"),
        traced("left lower lobe", "open", "<answer>left lobe</answer>", "o-partial"),  # recall 2/3
        traced("liver", "open", "<think>cut by the budget", "o-cut"),
        traced("liver", "open", None, "o-untraced"),
    ]
    kept, stats = filter_correct(items, "normalised")
    assert [it.id for it in kept] == ["c-right", "o-exact"]
    assert {d["id"]: d["reason"] for d in stats.dropped} == {
        "c-wrong": "wrong",
        "o-partial": "wrong",
        "o-cut": "unparseable",
        "o-untraced": "no_trace",
    }
    assert stats.metrics["by_kind"] == {"closed": {"in": 2, "kept": 1}, "open": {"in": 4, "kept": 1}}
    kept, _ = filter_correct(
        items, "normalised", min_recall=0.6
    )  # token recall >= 0.6 also keeps an open trace
    assert [it.id for it in kept] == ["c-right", "o-exact", "o-partial"]
    kept, _ = filter_correct(items, "strict")  # the stripped texts must agree
    assert [it.id for it in kept] == []
    with pytest.raises(ValueError, match="min_recall must be within"):
        filter_correct(items, min_recall=1.5)


def test_similarity_rules_on_free_text_outputs():
    from mvqa.curate.difficulty import SimilarityRules

    rules = SimilarityRules()
    closed = traced("no", "closed", None)
    assert rules.failed("No, it is normal.", 0.2, None, closed) == "matches_answer"
    assert rules.failed("Yes", 0.5, None, closed) is None  # wrong and on topic: hard
    opened = traced("left lung", "open", None)
    assert rules.failed("the left lung", 0.99, None, opened) == "matches_answer"
    assert rules.failed("the lung on the left", 0.8, None, opened) == "close_to_answer"
    assert rules.failed("kidney", 0.5, None, opened) is None
    assert rules.failed("zzzz", 0.1, None, opened) == "gibberish"
    assert rules.failed("It is A: x or B: y", 0.5, None, opened) == "lists_options"


def test_predictions_import_takes_free_text_rows_with_no_choice_similarity(tmp_path):
    from mvqa.curate.difficulty import apply_similarity_rules, import_predictions

    path = tmp_path / "preds.csv"
    path.write_text(
        "figure_path,question,model_output,true_answer,similarity_to_answer,max_similarity_to_choices\n"
        "a.jpg,Is it normal?,No.,no,0.9,\n"
        "b.jpg,Which organ?,kidney,liver,0.5,\n"
        "c.jpg,Which modality?,CT,MRI,0.4,0.95\n"
    )
    items = [
        VQAItem(id="a", image="a.jpg", question="Is it normal?", choices=[], answer_label=None, answer="no"),
        VQAItem(
            id="b", image="b.jpg", question="Which organ?", choices=[], answer_label=None, answer="liver"
        ),
        VQAItem(
            id="c",
            image="c.jpg",
            question="Which modality?",
            choices=["CT", "MRI"],
            answer_label="B",
            answer="MRI",
        ),
    ]
    scored, stats = import_predictions(items, path)
    assert (
        stats.n_out == 3
        and scored[0].extra["max_choice_sim"] is None
        and scored[2].extra["max_choice_sim"] == 0.95
    )
    hard, hard_stats = apply_similarity_rules(scored)
    assert [it.id for it in hard] == ["b", "c"] and hard_stats.drop_reasons == {"matches_answer": 1}
    path.write_text(path.read_text().replace("0.4,0.95", "0.4,"))  # an mcq row needs its choice similarity
    with pytest.raises(ValueError, match=r"row 4 .*no max_similarity_to_choices, but item 'c' has choices"):
        import_predictions(items, path)
