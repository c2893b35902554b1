"""Step 5: turn reasoning traces into s1-style training targets that keep thinking after "Wait".

A target is three strings: `opening` (the think delimiter), `thinking` (the reasoning, with Waits inserted)
and `closing` (end of thinking and the answer section). The collator tokenizes them separately so a sequence
over `max_length` is cut inside the thinking, never the answer. """

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mvqa.data.grading import grade_answer
from mvqa.data.prompts import OK, ParsedAnswer, parse_item_answer
from mvqa.data.records import VQAItem
from mvqa.data.stats import StageStats
from mvqa.models.bundle import SpecialTokens
from mvqa.schemas import schema_default
from mvqa.schemas.trace_format import TraceFormatConf

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Target:
    opening: str
    thinking: str
    closing: str

    @property
    def text(self) -> str:
        return self.opening + self.thinking + self.closing


def split_segments(reasoning: str, boundary: str = "sentence") -> list[str]:
    if boundary == "step":
        parts = reasoning.splitlines()
    elif boundary == "sentence":
        parts = _SENTENCE_END.split(reasoning)
    else:
        raise ValueError(f"trace_format.boundary must be 'sentence' or 'step', got {boundary!r}")
    return [p.strip() for p in parts if p.strip()]


class TraceFormatter:
    """Callable stage: items -> items with `extra["target"]` set, plus stats."""

    def __init__(
        self,
        style: str = TraceFormatConf.style,
        trace_fields: Sequence[str] = schema_default(TraceFormatConf, "trace_fields"),
        wait_string: str = TraceFormatConf.wait_string,
        num_waits: int = TraceFormatConf.num_waits,
        position: str = TraceFormatConf.position,
        boundary: str = TraceFormatConf.boundary,
        self_check: bool = TraceFormatConf.self_check,
        self_check_template: str = TraceFormatConf.self_check_template,
        require_label_match: bool = TraceFormatConf.require_label_match,
        answer_format: str = TraceFormatConf.answer_format,
        seed: int = 0,
    ) -> None:
        if style not in ("med_r1", "s1", "direct"):
            raise ValueError(f"trace_format.style must be med_r1, s1 or direct, got {style!r}")
        if position not in ("random", "end", "spread"):
            raise ValueError(f"trace_format.position must be random, end or spread, got {position!r}")
        if answer_format not in ("letter", "text"):
            raise ValueError(f"trace_format.answer_format must be letter or text, got {answer_format!r}")
        if num_waits < 0:
            raise ValueError(f"trace_format.num_waits must be >= 0, got {num_waits}")
        self.style, self.trace_fields = style, list(trace_fields)
        self.wait_string, self.num_waits, self.position = wait_string, num_waits, position
        self.boundary, self.self_check, self.self_check_template = boundary, self_check, self_check_template
        self.require_label_match, self.answer_format, self.seed = require_label_match, answer_format, seed

    def __call__(self, items: list[VQAItem], tokens: SpecialTokens) -> tuple[list[VQAItem], StageStats]:
        stats = StageStats("format", n_in=len(items))
        out, waits = [], 0
        for item in items:
            reasoning, letter, why = self._reasoning_and_answer(item)
            if why:
                stats.drop(item.id, why)
                continue
            thinking, n = self.insert_waits(reasoning, self._rng(item.id)) if self.style != "direct" else ("",
                                                                                                           0)
            waits += n
            if item.is_free_text:  # a closed or open item is taught its gold answer text
                answer = item.answer.strip()
            else:
                answer = item.choices[item.letters.index(letter)] if self.answer_format == "text" else letter
            out.append(item.with_extra(target=vars(self.target(thinking, answer, tokens))))
        stats.n_out = len(out)
        stats.metrics.update(waits_inserted=waits, style=self.style, wait_string=self.wait_string)
        return out, stats

    def target(self, thinking: str, answer: str, tokens: SpecialTokens) -> Target:
        if self.style == "direct":
            return Target("", "", f"{tokens.answer_start}{answer}{tokens.answer_end}")
        if self.style == "med_r1":
            return Target(tokens.think_start, thinking,
                          f"{tokens.think_end}{tokens.answer_start}{answer}{tokens.answer_end}")
        # s1: the answer section follows the end of thinking as "Answer: X".
        return Target(tokens.think_start, thinking, f"{tokens.think_end}Answer: {answer}")

    def _reasoning_and_answer(self, item: VQAItem) -> tuple[str, str | None, str | None]:
        """(reasoning, answer letter or free-text answer, drop reason or None)."""
        if item.is_free_text and not item.answer.strip():
            return "", None, "no_gold_answer"
        field = next((f for f in self.trace_fields if item.extra.get(f)), None)
        if field is None and self.style != "direct":
            return "", None, "no_trace"
        if field is None:  # direct answers need only the label (or the answer text)
            return "", item.answer_label if item.is_mcq else item.answer, None
        text = str(item.extra[field])
        if field == "generated_reasoning":  # the release's pre-parsed columns
            given = str(item.extra.get("generated_answer", "")).strip()
            parsed = ParsedAnswer(text, given or None, None, OK if given else "no_answer")
            if item.is_mcq and given:  # the release writes bare letters; "C) MRI" is read as C too
                parsed = ParsedAnswer(text, given,
                                      parse_item_answer(item, f"<answer>{given}</answer>").letter, OK)
        else:
            parsed = parse_item_answer(item, text)
        reasoning, letter = parsed.thinking or "", parsed.answer
        if letter is None:
            return "", None, "unparseable_answer"
        if self.require_label_match and not grade_answer(item, parsed).correct:
            return "", None, "answer_disagrees_with_label"
        if self.style != "direct" and not reasoning.strip():
            return "", None, "empty_reasoning"
        return reasoning.strip(), letter, None

    def _rng(self, item_id: str) -> random.Random:
        digest = hashlib.sha256(f"{self.seed}:{item_id}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def insert_waits(self, reasoning: str, rng: random.Random) -> tuple[str, int]:
        """Insert `num_waits` continuation strings at segment boundaries; returns (text, waits inserted).

        Boundaries are the gaps after each segment, the end included, so a one-sentence trace (the release's
        traces are short) still gets its Wait followed by a re-check.
        """
        segments = split_segments(reasoning, self.boundary)
        if self.num_waits == 0 or not segments:
            return " ".join(segments), 0
        gaps = list(range(1, len(segments) + 1))
        k = self.num_waits
        if self.position == "end":
            chosen = [len(segments)] * k
        elif self.position == "spread":
            chosen = [gaps[round(i * (len(gaps) - 1) / max(k - 1, 1))]
                      for i in range(k)] if k > 1 else [gaps[-1]]
        else:
            chosen = sorted(rng.choice(gaps) for _ in range(k))
        pieces: list[str] = []
        for gap, segment in enumerate(segments, 1):
            pieces.append(segment)
            for _ in range(chosen.count(gap)):
                pieces.append(self._continuation(segment, at_end=gap == len(segments)))
        joiner = "\n" if self.boundary == "step" else " "
        return joiner.join(pieces), k

    def _continuation(self, previous: str, at_end: bool) -> str:
        # A bare Wait right before the end of thinking would teach nothing to continue with: re-check there.
        if self.self_check or at_end:
            return self.self_check_template.format(wait=self.wait_string, previous=previous)
        return f"{self.wait_string},"
