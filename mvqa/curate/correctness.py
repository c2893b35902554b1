"""Step 3: keep traces whose answer matches the ground-truth label.

`strict` is the seed's test (`generated_answer.strip() == Answer_label.strip()`); `normalised` first maps
answers such as "C) MRI" or " c " to a letter. Wrong and unparseable traces are dropped with their reason;
they stay in the trace stage's output, which export writes as the partial traces file.
"""

from __future__ import annotations

from mvqa.data.prompts import parse_answer
from mvqa.data.records import VQAItem
from mvqa.data.stats import StageStats


def answer_letter(item: VQAItem, mode: str) -> str | None:
    """The trace's answer as a letter, or None when it cannot be read."""
    if "generated_answer" in item.extra and item.extra["generated_answer"] is not None:
        raw = str(item.extra["generated_answer"])
    elif item.extra.get("raw_output"):
        raw = parse_answer(str(item.extra["raw_output"]), n_choices=len(item.choices),
                           choices=item.choices).answer_text or ""
    else:
        return None
    if mode == "strict":
        return raw.strip() or None
    if mode == "normalised":
        return parse_answer(f"<answer>{raw}</answer>", n_choices=len(item.choices), choices=item.choices).letter
    raise ValueError(f"pipeline.filter.mode must be 'strict' or 'normalised', got {mode!r}")


def filter_correct(items: list[VQAItem], mode: str = "strict") -> tuple[list[VQAItem], StageStats]:
    stats = StageStats("filter", n_in=len(items))
    kept = []
    for item in items:
        letter = answer_letter(item, mode)
        if letter is None or (mode == "strict" and letter not in item.letters):
            stats.drop(item.id, "unparseable", answer=item.extra.get("generated_answer"))
        elif letter != (item.answer_label or "").strip():
            stats.drop(item.id, "wrong", answer=letter, label=item.answer_label)
        else:
            kept.append(item)
    stats.n_out = len(kept)
    stats.metrics.update(correct=len(kept), wrong=stats.drop_reasons.get("wrong", 0),
                         unparseable=stats.drop_reasons.get("unparseable", 0), mode=mode)
    return kept, stats


def filter_stage(items, ctx):
    return filter_correct(items, ctx.cfg.pipeline.filter.mode)
