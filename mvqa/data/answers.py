"""Free-text answers: the normaliser and the field's metrics for closed and open questions.

The normaliser follows the SQuAD/VQA convention the medical VQA papers inherit: lower case, punctuation and
the articles a/an/the removed, whitespace collapsed; on top of it number words become digits ("two" -> "2")
and a whole answer that is a yes/no synonym ("Yeah.", "true", "Correct") becomes "yes" or "no".

Metrics, as the field names them:
- closed: accuracy. A yes/no gold answer is matched by the prediction's leading yes/no word ("Yes, the liver"
  counts as yes); any other closed answer by normalised exact match.
- open: normalised exact match; token recall, LLaVA-Med's open-set recall (the share of the gold answer's
  tokens found in the prediction); token F1 (SQuAD's, counts with multiplicity). """

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass

YES, NO = "yes", "no"
YES_SYNONYMS = frozenset({"yes", "y", "yeah", "yep", "true", "correct", "affirmative", "present", "positive"})
NO_SYNONYMS = frozenset(
    {"no", "n", "nope", "false", "incorrect", "negative", "absent", "not present", "none"})
NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
     "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"])}
ARTICLES = frozenset({"a", "an", "the"})
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def tokens(text: str) -> list[str]:
    """The normalised tokens of an answer (no yes/no mapping: that applies to whole answers only)."""
    words = _PUNCT.sub(" ", str(text).lower()).split()
    return [NUMBER_WORDS.get(w, w) for w in words if w not in ARTICLES]


def normalise_answer(text: str) -> str:
    """Canonical form of a free-text answer: compare two answers by comparing their normal forms."""
    joined = " ".join(tokens(text))
    if joined in YES_SYNONYMS:
        return YES
    if joined in NO_SYNONYMS:
        return NO
    return joined


def is_yes_no(text: str) -> bool:
    return normalise_answer(text) in (YES, NO)


def leading_yes_no(text: str) -> str | None:
    """yes/no when the answer is one, or starts with one ("No, it is benign."); None otherwise."""
    whole = normalise_answer(text)
    if whole in (YES, NO):
        return whole
    words = tokens(text)
    if words and words[0] in YES_SYNONYMS | NO_SYNONYMS:
        return YES if words[0] in YES_SYNONYMS else NO
    return None


def exact_match(prediction: str, gold: str) -> bool:
    return normalise_answer(prediction) == normalise_answer(gold) != ""


def token_recall(prediction: str, gold: str) -> float:
    """Share of the gold answer's distinct tokens present in the prediction (LLaVA-Med's open-set recall).
    Tokens are compared as normalised words; a whole-answer match ("yeah" for "yes") counts in full."""
    if exact_match(prediction, gold):
        return 1.0
    gold_tokens = set(tokens(gold))
    if not gold_tokens:
        return 0.0
    return len(gold_tokens & set(tokens(prediction))) / len(gold_tokens)


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD's token F1 (counts with multiplicity); a whole-answer match counts in full."""
    if exact_match(prediction, gold):
        return 1.0
    pred, ref = tokens(prediction), tokens(gold)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def closed_correct(prediction: str, gold: str) -> bool:
    gold_yn = normalise_answer(gold)
    if gold_yn in (YES, NO):
        return leading_yes_no(prediction) == gold_yn
    return exact_match(prediction, gold)


@dataclass(frozen=True)
class FreeTextScore:
    correct: bool  # closed: accuracy; open: exact match (what "accuracy" means for an open item)
    exact_match: bool
    recall: float
    f1: float


def score_free_text(prediction: str | None, gold: str, kind: str) -> FreeTextScore:
    """Every metric of one free-text prediction; `kind` is "closed" or "open". A missing answer scores
    zero."""
    if prediction is None or not str(prediction).strip():
        return FreeTextScore(False, False, 0.0, 0.0)
    em = exact_match(prediction, gold)
    correct = closed_correct(prediction, gold) if kind == "closed" else em
    return FreeTextScore(correct, em, token_recall(prediction, gold), token_f1(prediction, gold))
