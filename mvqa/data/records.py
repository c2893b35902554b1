"""The one VQA item record that flows through every stage: multiple choice, closed (yes/no) or open.

Readers produce lists of `VQAItem`; every stage maps items to items (plus stats). Stage-specific payloads
(scores, traces, parsed answers) live in the open `extra` map so the record itself stays fixed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mvqa.data.answers import is_yes_no

LETTERS = "ABCDE"
MIN_CHOICES, MAX_CHOICES = 2, len(LETTERS)

# Question kinds. mcq: has choices, scored by letter. closed: a closed-set free-text answer (yes/no above all;
# SLAKE's CLOSED also holds "left"/"right"-style answers), scored by accuracy. open: a free-text answer,
# scored by
# normalised exact match, token recall (LLaVA-Med's open-set recall) and token F1.
MCQ, CLOSED, OPEN = "mcq", "closed", "open"
KINDS = (MCQ, CLOSED, OPEN)

# The item fields curation may stratify by: the sampler's quotas (sampler.stratify) and the hard stage's
# per-stratum cut (mvqa.curate.difficulty).
STRATA_FIELDS = ("modality", "kind", "answer_label", "content_type", "source", "split")


def letter_index(letter: str) -> int:
    """Index of a choice letter ("A" -> 0)."""
    if len(letter) != 1 or letter not in LETTERS:
        raise ValueError(f"expected one of the choice letters {list(LETTERS)}, got {letter!r}")
    return LETTERS.index(letter)


@dataclass
class VQAItem:
    """One VQA question about one image.

    `kind` is one of KINDS. An `mcq` item holds 2-5 `choices` labelled A, B, ...; `answer_label` is then the
    correct letter and `answer` its text. `closed` and `open` items have no choices, `answer_label=None` and a
    free-text `answer` (empty only for an unlabelled item: stages that need the gold answer refuse those). A
    reader that knows the kind (an answer-type column) sets it; otherwise it is inferred: choices make an mcq,
    a yes/no answer a closed item, anything else an open one.

    `image` is the path as the source writes it (e.g. PMC-VQA's figure_path); `image_root` is where it is
    resolved, so exports can write the source's own path back unchanged.
    """

    id: str
    image: str
    question: str
    choices: list[str]
    answer_label: str | None
    answer: str
    image_root: str = ""
    modality: str = ""
    content_type: str = ""
    split: str = ""
    source: str = ""
    kind: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.kind:
            self.kind = infer_kind(self.choices, self.answer)
        self.validate()

    def validate(self) -> None:
        where = f"item {self.id!r}"
        if not self.id:
            raise ValueError("item with an empty id")
        if not self.question or not self.question.strip():
            raise ValueError(f"{where}: empty question")
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind {self.kind!r} is not one of {list(KINDS)}")
        if self.kind != MCQ:
            if self.choices:
                raise ValueError(f"{where}: a {self.kind} item has no choices, got {len(self.choices)}")
            if self.answer_label is not None:
                raise ValueError(
                    f"{where}: answer_label {self.answer_label!r} given but there are no choices")
            return
        n = len(self.choices)
        if not MIN_CHOICES <= n <= MAX_CHOICES:
            raise ValueError(f"{where}: {n} choices, expected {MIN_CHOICES}-{MAX_CHOICES}")
        if self.answer_label is None or self.answer_label not in LETTERS[:n]:
            raise ValueError(f"{where}: answer_label {self.answer_label!r} is not one of {list(LETTERS[:n])}")

    @property
    def is_mcq(self) -> bool:
        return self.kind == MCQ

    @property
    def is_free_text(self) -> bool:
        """Closed or open: answered in words, not by a choice letter."""
        return self.kind != MCQ

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.choices)]

    @property
    def answer_index(self) -> int:
        if self.answer_label is None:
            raise ValueError(f"item {self.id!r} is open-ended: it has no answer index")
        return letter_index(self.answer_label)

    def choice_map(self) -> dict[str, str]:
        return dict(zip(self.letters, self.choices))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> VQAItem:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(row) - known
        if unknown:
            raise ValueError(
                f"item {row.get('id')!r}: unknown fields {sorted(unknown)}; expected {sorted(known)}")
        return cls(
            **{**row, "choices": list(row.get("choices") or []), "extra": dict(row.get("extra") or {})})

    def replace(self, **changes: Any) -> VQAItem:
        """A copy with `changes`; new choices or a new answer re-infer the kind unless `kind` is given too."""
        if ("choices" in changes or "answer" in changes) and "kind" not in changes:
            changes["kind"] = ""
        return dataclasses.replace(self, **changes)

    def with_extra(self, **values: Any) -> VQAItem:
        return dataclasses.replace(self, extra={**self.extra, **values})


def infer_kind(choices: list[str], answer: str) -> str:
    """The kind of an item whose source does not say: choices make an mcq, a yes/no answer a closed item."""
    if choices:
        return MCQ
    return CLOSED if is_yes_no(answer) else OPEN


def kind_counts(items: Iterable[VQAItem]) -> dict[str, int]:
    """Items per kind, every kind listed (zeros included) so a console line always reads the same."""
    counts = dict.fromkeys(KINDS, 0)
    for it in items:
        counts[it.kind] += 1
    return counts


def items_to_frame(items: Iterable[VQAItem]) -> pd.DataFrame:
    """A DataFrame with one column per field (choices and extra kept as Python objects)."""
    return pd.DataFrame([it.to_dict() for it in items], columns=[f.name for f in dataclasses.fields(VQAItem)])


def items_from_frame(frame: pd.DataFrame) -> list[VQAItem]:
    return [VQAItem.from_dict(row) for row in frame.to_dict(orient="records")]


def item_to_json(item: VQAItem) -> str:
    return json.dumps(item.to_dict(), ensure_ascii=False, sort_keys=True)


def item_from_json(line: str) -> VQAItem:
    return VQAItem.from_dict(json.loads(line))


def check_unique_ids(items: list[VQAItem], source: str) -> None:
    """Duplicate ids would make joins, resume and sharding ambiguous: refuse them early."""
    seen: dict[str, int] = {}
    for i, it in enumerate(items):
        if it.id in seen:
            raise ValueError(f"{source}: duplicate item id {it.id!r} at rows {seen[it.id]} and {i}")
        seen[it.id] = i
