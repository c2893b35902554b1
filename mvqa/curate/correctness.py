"""Step 3: keep traces whose answer matches the ground truth, for every question kind.

Multiple choice: `strict` is the seed's test (`generated_answer.strip() == Answer_label.strip()`);
`normalised` first maps answers such as "C) MRI" or " c " to a letter. Closed and open items: `normalised`
(the default) is normalised exact match (mvqa.data.answers: case, punctuation, articles, number words, yes/no
synonyms; a yes/no gold answer matches the leading yes/no), `strict` compares the stripped texts; `min_recall`
> 0 also keeps an open trace whose token recall of the gold answer reaches it. Wrong and unparseable traces
are dropped with their reason; they stay in the trace stage's output, which export writes as the partial
traces file. """

from __future__ import annotations

from mvqa.data.answers import token_recall
from mvqa.data.grading import grade_answer
from mvqa.data.prompts import OK, ParsedAnswer, parse_answer, parse_item_answer
from mvqa.data.records import OPEN, VQAItem, kind_counts
from mvqa.data.stats import StageStats

MODES = ("strict", "normalised")


def generated_answer(item: VQAItem) -> str | None:
    """The trace's answer as written: the release's pre-parsed column, or the answer section of the reasoner's
    raw output (else of a trace the dataset carries, like the synthetic world's template traces)."""
    if item.extra.get("generated_answer") is not None:
        return str(item.extra["generated_answer"])
    for field in ("raw_output", "trace"):
        if item.extra.get(field):
            return parse_item_answer(item, str(item.extra[field])).answer_text
    return None


def answer_letter(item: VQAItem, mode: str) -> str | None:
    """A multiple-choice trace's answer as a letter, or None when it cannot be read."""
    if mode not in MODES:
        raise ValueError(f"pipeline.filter.mode must be one of {MODES}, got {mode!r}")
    raw = generated_answer(item)
    if raw is None:
        return None
    if mode == "strict":
        return raw.strip() or None
    return parse_answer(f"<answer>{raw}</answer>", n_choices=len(item.choices), choices=item.choices).letter


def verdict(item: VQAItem, mode: str = "normalised", min_recall: float = 0.0) -> tuple[str, dict]:
    """("correct" | "wrong" | "unparseable" | "no_trace", detail) for one item."""
    if not any(item.extra.get(f) for f in ("generated_answer", "raw_output", "trace")):
        return "no_trace", {}  # the trace stage did not run on it (or the dataset carries no traces)
    if item.is_mcq:
        letter = answer_letter(item, mode)
        if letter is None or (mode == "strict" and letter not in item.letters):
            return "unparseable", {"answer": item.extra.get("generated_answer")}
        if letter != (item.answer_label or "").strip():
            return "wrong", {"answer": letter, "label": item.answer_label}
        return "correct", {}
    if mode not in MODES:
        raise ValueError(f"pipeline.filter.mode must be one of {MODES}, got {mode!r}")
    raw = generated_answer(item)
    if raw is None or not raw.strip():
        return "unparseable", {"answer": raw}
    if mode == "strict":
        right = raw.strip() == item.answer.strip()
    else:
        right = grade_answer(item, ParsedAnswer(None, raw, None, OK)).correct
    if not right and item.kind == OPEN and min_recall > 0 and token_recall(raw, item.answer) >= min_recall:
        right = True
    return ("correct", {}) if right else ("wrong", {"answer": raw, "label": item.answer})


def filter_correct(items: list[VQAItem], mode: str = "normalised",
                   min_recall: float = 0.0) -> tuple[list[VQAItem], StageStats]:
    if not 0.0 <= min_recall <= 1.0:
        raise ValueError(f"pipeline.filter.min_recall must be within [0, 1], got {min_recall}")
    stats = StageStats("filter", n_in=len(items))
    kept = []
    for item in items:
        outcome, detail = verdict(item, mode, min_recall)
        if outcome == "correct":
            kept.append(item)
        else:
            stats.drop(item.id, outcome, kind=item.kind, **detail)
    stats.n_out = len(kept)
    by_kind = {k: {"in": n, "kept": kind_counts(kept)[k]} for k, n in kind_counts(items).items() if n}
    stats.metrics.update(correct=len(kept), wrong=stats.drop_reasons.get("wrong", 0),
                         unparseable=stats.drop_reasons.get("unparseable", 0), mode=mode,
                         min_recall=min_recall,
                         by_kind=by_kind)
    return kept, stats


def filter_stage(items, ctx):
    f = ctx.cfg.pipeline.filter
    return filter_correct(items, f.mode, f.min_recall)
