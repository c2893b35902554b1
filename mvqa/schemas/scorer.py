"""Schemas of the `scorer/` group's rule-based scorers (mvqa.curate.difficulty): similarity, predictions."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

GROUP = "scorer"


@dataclass
class SimilarityRulesConf:
    """The seed's thresholds; a row is hard when none fires (see mvqa.curate.difficulty.SimilarityRules)."""

    max_sim_to_answer: float = 0.75
    margin: float = 0.02
    gibberish: float = 0.3
    min_choice_sim: float = 0.75
    max_colons: int = 2


@dataclass
class SimilarityScorerConf:
    _target_: str = "mvqa.curate.difficulty.SimilarityScorer"
    name: str = "similarity"
    rules: SimilarityRulesConf = field(default_factory=SimilarityRulesConf)
    # Embed choices as "A: text", as the seed did with PMC-VQA's labelled choices.
    label_choices: bool = True
    batch_size: int = 64
    device: str = "cpu"
    # The VLM that answers in free text when items carry no scorer_output (generate.yaml: model@scorer_model).
    model_key: str = "scorer_model"
    max_new_tokens: int = 64


@dataclass
class PredictionsScorerConf(SimilarityScorerConf):
    _target_: str = "mvqa.curate.difficulty.PredictionsScorer"
    name: str = "predictions"
    # A CSV in the seed's filtered_difficult_cases.csv layout.
    path: str = MISSING
    # Recompute the similarities with MiniLM from the items' answers and choices instead of the file's.
    recompute: bool = False


SCHEMAS = {"schema_similarity": SimilarityScorerConf, "schema_predictions": PredictionsScorerConf}


@dataclass
class LikelihoodScorerConf:
    _target_: str = "mvqa.curate.likelihood.LikelihoodScorer"
    name: str = "likelihood"
    # The config node of the model that scores (generate.yaml puts a model there: model@scorer_model).
    model_key: str = "scorer_model"
    prompt: str = "direct"
    # letter: score "<answer>X</answer>"; text: the choice's own text; tagged_text: "<answer>text</answer>".
    continuation: str = "letter"
    # Keep the hardest fraction by p_correct, or every item with p_correct <= threshold when set.
    fraction: float | None = 0.15
    threshold: float | None = None
    # Take the fraction within each value of an item field (content_type, modality, answer_label, source,
    # split) so no question type drops out of the curated set; null: over all items.
    stratify_by: str | None = None
    progress: bool = True
    batch_size: int = 8  # items per forward pass (each brings one sequence per choice)


SCHEMAS["schema_likelihood"] = LikelihoodScorerConf
