"""Grading one answer against one item, for every question kind: the single rule that curation's correctness
filter, training's validation and evaluation all use.

- mcq: the answer letter equals the label (the letter is read from "C", "(C)", "C) MRI" or the option's text).
- closed: accuracy under mvqa.data.answers.closed_correct (a yes/no gold answer matches the leading yes/no).
- open: `correct` is normalised exact match; token recall (LLaVA-Med's open-set recall) and token F1 beside
it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mvqa.data.answers import score_free_text
from mvqa.data.prompts import NO_ANSWER, OK, UNPARSEABLE, ParsedAnswer, parse_item_answer
from mvqa.data.records import VQAItem


@dataclass(frozen=True)
class Grade:
    kind: str
    answer: str | None  # the letter (mcq) or the answer text (closed/open); None when none could be read
    status: str  # ok | no_answer | unparseable (mvqa.data.prompts)
    correct: bool
    exact_match: bool
    recall: float  # mcq: 1.0 when correct, else 0.0, so a mean over a mixed set stays meaningful
    f1: float


def grade_answer(item: VQAItem, parsed: ParsedAnswer) -> Grade:
    if item.is_mcq:
        right = parsed.letter is not None and parsed.letter == item.answer_label
        return Grade(item.kind, parsed.letter, parsed.status, right, right, float(right), float(right))
    score = score_free_text(parsed.answer_text if parsed.status == OK else None, item.answer, item.kind)
    return Grade(
        item.kind, parsed.answer_text, parsed.status, score.correct, score.exact_match, score.recall, score.f1
    )


def grade_output(item: VQAItem, text: str) -> Grade:
    """Grade a model's whole output (its <answer> section or s1's `Answer:` line)."""
    return grade_answer(item, parse_item_answer(item, text))


__all__ = ["NO_ANSWER", "OK", "UNPARSEABLE", "Grade", "grade_answer", "grade_output"]
