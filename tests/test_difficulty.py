"""Difficulty: the seed's similarity rules, the predictions importer on the real files, keep_hardest,
MiniLM."""

from __future__ import annotations

import pandas as pd
import pytest
from hydra.utils import instantiate

from mvqa.curate.difficulty import (
    SIM_ANSWER,
    SIM_CHOICES,
    SimilarityRules,
    SimilarityScorer,
    apply_similarity_rules,
    import_predictions,
    keep_hardest,
    read_predictions,
    similarity_prompt,
)
from mvqa.data.readers import read_pmc_vqa
from mvqa.data.records import VQAItem


def item(i, output="The answer is MRI", sim_answer=0.5, max_choice=0.9, **extra) -> VQAItem:
    return VQAItem(id=f"q{i}", image=f"PMC{i}_F1.jpg", question=f"Which modality {i}?", choices=["CT", "MRI"],
                   answer_label="B", answer="MRI",
                   extra={"scorer_output": output, SIM_ANSWER: sim_answer, SIM_CHOICES: max_choice, **extra})


@pytest.fixture(scope="module")
def predictions_path(shared_data):
    return shared_data / "mvqa1k" / "filtered_difficult_cases.csv"


@pytest.fixture(scope="module")
def prediction_items(predictions_path) -> list[VQAItem]:
    """The predictions file's own rows as open-ended items (it has no choices)."""
    frame = pd.read_csv(predictions_path, dtype=str, keep_default_na=False)
    return [VQAItem(id=f"row{i}", image=r.figure_path, question=r.question, choices=[], answer_label=None,
                    answer=r.true_answer) for i, r in enumerate(frame.itertuples())]


@pytest.mark.parametrize("output, sim_answer, max_choice, rule", [
    ("It is A: CT or B: MRI", 0.5, 0.9, "lists_options"),
    ("c: left, d: right", 0.5, 0.9, "lists_options"),
    ("Answer: MRI: sagittal", 0.5, 0.9, "too_many_colons"),
    ("MRI of the head", 0.76, 0.9, "close_to_answer"),
    ("MRI of the head", 0.60, 0.61, "answer_is_closest"),
    ("MRI of the head", 0.60, 0.62, "answer_is_closest"),  # exactly at the 0.02 margin
    ("zzz", 0.20, 0.25, "gibberish"),
    ("something else", 0.40, 0.70, "far_from_choices"),
    ("something else", 0.40, 0.75, "far_from_choices"),  # the seed drops max_choice_sim <= 0.75
])
def test_each_rule_drops_with_its_name(output, sim_answer, max_choice, rule):
    kept, stats = apply_similarity_rules([item(0, output, sim_answer, max_choice), item(1)])
    assert [it.id for it in kept] == ["q1"]
    assert stats.dropped == [
        {"id": "q0", "reason": rule, "sim_to_answer": sim_answer, "max_choice_sim": max_choice}]
    assert (stats.n_in, stats.n_out) == (2, 1)


def test_hard_rows_survive_and_thresholds_are_configurable():
    hard = [item(0, "A: CT", 0.75, 0.9), item(1, "MRI", 0.5, 0.751)]  # one colon, boundaries not crossed
    assert len(apply_similarity_rules(hard)[0]) == 2
    solved = item(2, "MRI", 0.8, 0.95)
    assert apply_similarity_rules([solved])[0] == []
    assert len(apply_similarity_rules([solved], SimilarityRules(max_sim_to_answer=0.85))[0]) == 1
    assert SimilarityRules(max_colons=1).failed("A: CT", 0.5, 0.9) == "too_many_colons"


def test_rules_need_scores():
    bare = VQAItem(id="x", image="a.jpg", question="q?", choices=["a", "b"], answer_label="A", answer="a")
    with pytest.raises(ValueError, match="'x'.*sim_to_answer"):
        apply_similarity_rules([bare])
    with pytest.raises(ValueError, match="similarity_prompt"):
        SimilarityScorer().score([bare])


def test_similarity_prompt_is_the_seeds():
    it = VQAItem(id="x", image="a.jpg", question="What is shown?", choices=["CT", "MRI", "X-ray", "PET"],
                 answer_label="B", answer="MRI")
    assert similarity_prompt(it) == ("[INST]<ImageHere>\nQuestion: What is shown?\nChoices: \nA. CT \nB. MRI "
                                     "\nC. X-ray \nD. PET \n Repeat full answer[/INST]")


def test_real_predictions_all_pass_the_rules(predictions_path, prediction_items):
    scored, stats = import_predictions(prediction_items, predictions_path)
    assert stats.metrics["matched"] == 12_803 and stats.metrics["predictions_unmatched"] == 0
    _, rules = apply_similarity_rules(scored)
    assert (rules.n_in, rules.n_out, rules.dropped) == (12_803, 12_803, [])
    assert scored[0].extra["scorer_output"] == "The answer is C:MRI."
    assert scored[0].extra[SIM_ANSWER] == pytest.approx(0.7234498)


def test_join_to_the_release_matches_all_1000(compose, shared_data, predictions_path):
    release, _ = read_pmc_vqa(shared_data / "mvqa1k" / "sampled_final.csv")
    stray = VQAItem(id="stray", image="PMC0_F0.jpg", question="Not scored?", choices=["a", "b"],
                    answer_label="A",
                    answer="a")
    scorer = instantiate(compose("generate", ["scorer=predictions"]).scorer)
    scored, stats = scorer.score(release + [stray])
    assert stats.metrics == {"predictions": 12_803, "matched": 1000, "items_unmatched": 1,
                             "predictions_unmatched": 11_803, "recomputed": False}
    assert stats.dropped == [{"id": "stray", "reason": "no_prediction"}]
    assert "11803 of 12803 predictions match no item" in stats.warnings[0]
    hard, hard_stats = scorer.hard(scored)
    assert len(hard) == 1000 and hard_stats.drop_reasons == {}


def test_bad_prediction_files_name_the_problem(tmp_path, prediction_items):
    good = "figure_path,question,model_output,true_answer,similarity_to_answer,max_similarity_to_choices\n"
    cases = {
        "missing.csv": ("figure_path,question,model_output\na.jpg,q?,x\n",
                        r"missing columns \['true_answer'"),
        "text.csv": (good + "a.jpg,q?,x,y,0.5,0.9\nb.jpg,q?,x,y,high,0.9\n",
                     "row 3 column 'similarity_to_answer'"),
        "dup.csv": (good + "a.jpg,q?,x,y,0.5,0.9\na.jpg, q? ,x,y,0.5,0.9\n", r"repeated at rows \[2, 3\]"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message) as err:
            read_predictions(tmp_path / name)
        assert name in str(err.value)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        import_predictions(prediction_items[:1], tmp_path / "nope.csv")


def test_keep_hardest_fraction_threshold_and_ties():
    items = [item(i, p_correct=p) for i, p in enumerate([0.9, 0.1, 0.5, 0.1, 0.3, 0.7, 0.2, 0.8, 0.6, 0.4])]
    kept, stats = keep_hardest(items, fraction=0.15)  # ceil(1.5) = 2: the two 0.1s
    assert [it.id for it in kept] == ["q1", "q3"] and stats.drop_reasons == {"not_hardest": 8}
    kept, _ = keep_hardest(items, fraction=0.1)  # one of the tied 0.1s: the smaller id, whatever the order
    assert [it.id for it in kept] == ["q1"] and [it.id for it in keep_hardest(items[::-1], 0.1)[0]] == ["q1"]
    kept, _ = keep_hardest(items, threshold=0.3)
    assert [it.id for it in kept] == ["q1", "q3", "q4", "q6"]  # input order kept
    with pytest.raises(ValueError, match="'q0'.*p_correct"):
        keep_hardest([item(0)])
    with pytest.raises(ValueError, match="fraction"):
        keep_hardest(items, fraction=0)


def test_keep_hardest_stratified_keeps_every_question_type():
    """Overall, the easy type vanishes; stratified, each type keeps its own hardest fraction."""
    from dataclasses import replace

    easy = [replace(item(i, p_correct=0.9 + i / 100), content_type="modality") for i in range(4)]
    hard = [replace(item(i, p_correct=0.1 + i / 100), content_type="size") for i in range(4, 12)]
    kept, _ = keep_hardest(easy + hard, fraction=0.25)
    assert {it.content_type for it in kept} == {"size"} and len(kept) == 3
    kept, stats = keep_hardest(easy + hard, fraction=0.25, stratify_by="content_type")
    # ceil(0.25 * 4) = 1 modality, ceil(0.25 * 8) = 2 size
    assert [it.id for it in kept] == ["q0", "q4", "q5"]
    assert stats.metrics["strata"] == {"modality": 1, "size": 2} and stats.drop_reasons == {"not_hardest": 9}
    with pytest.raises(ValueError, match="stratify_by='content'.*content_type"):
        keep_hardest(hard, fraction=0.5, stratify_by="content")
    from mvqa.curate.likelihood import LikelihoodScorer

    with pytest.raises(ValueError, match="scorer.stratify_by='qtype'"):
        LikelihoodScorer(stratify_by="qtype")


@pytest.mark.slow
def test_minilm_offline_reproduces_the_seeds_similarities(monkeypatch, shared_data, predictions_path):
    """Recomputing with the packaged MiniLM (hub offline) gives the seed's stored similarities on real rows,
    with the choices embedded as "A: text" like the seed's PMC-VQA choices."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    release, _ = read_pmc_vqa(shared_data / "mvqa1k" / "sampled_final.csv", limit=12)
    stored, _ = import_predictions(release, predictions_path)
    again, stats = import_predictions(release, predictions_path, recompute=True)
    assert stats.metrics["recomputed"]
    for a, b in zip(stored, again):
        assert b.extra[SIM_ANSWER] == pytest.approx(a.extra[SIM_ANSWER], abs=1e-5)
        assert b.extra[SIM_CHOICES] == pytest.approx(a.extra[SIM_CHOICES], abs=1e-5)
    scorer = SimilarityScorer()
    rescored, _ = scorer.score(stored)  # the similarity scorer's own path: embed extra["scorer_output"]
    assert [it.extra[SIM_ANSWER] for it in rescored] == pytest.approx([it.extra[SIM_ANSWER] for it in stored],
                                                                      abs=1e-5)
