"""A learnable synthetic medical VQA world: procedural scans with lesions, a small textbook, balanced
questions, template traces.

Every item is one image and one question of one of three kinds: four-choice (mcq), closed (yes/no: "Is the
lesion in the upper left quadrant?") or open (the answer's words: "upper left"); `closed_share` and
`open_share` of each question type are closed and open, yes and no balanced. The world is written to disk as
PNGs plus one PMC-VQA-format CSV per split (closed/open rows leave the choices empty and say their kind in
`answer_type`) and read back through `read_pmc_vqa`, so the real reader path is exercised.
It is a pure function of its parameters (numpy's PCG64 seeded per item), cached under a directory named by
their hash and written to a temporary directory renamed into place, so a kill never leaves a world that
looks complete.

Two families of question types (`question_mix` weighs them):
- perception (modality, location, count, size, presence, modality + location): one or two findings read off
  the image;
- textbook (diagnosis, stage, largest): several findings combined with a fixed rule of `TEXTBOOK`, which the
  traces cite. A diagnosis needs the lesion's intensity (dark or bright) with the modality or the half it lies
  in; a stage needs the lesion count with the exception for a large lesion; the largest lesion needs the sizes
  compared across quadrants. Closed textbook questions are asked negated half the time ("Is this lesion
  something other than a cyst?"). Answering directly has to compose the rule inside the model; a trace names
  the findings, cites the rule and answers.

Designed to be learnable by a tiny VLM at 32 px: the three modality styles differ in silhouette and texture,
lesions are bright (or, in diagnosis items, dark) discs centred in a quadrant, and for every question type the
answer value and the correct letter are balanced by construction, so the text alone gives nothing away. A
fraction of items (`hard_fraction`) gets a high per-item difficulty: more noise, fainter and smaller lesions.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from mvqa.data.prompts import CONVERSATIONS, PROMPTS, format_conversation, format_question
from mvqa.data.readers import read_pmc_vqa
from mvqa.data.records import LETTERS, VQAItem
from mvqa.data.stats import StageStats
from mvqa.data.storage import atomic_dir
from mvqa.schemas.dataset_synthetic import QUESTION_MIX, SyntheticConf

VERSION = 5  # bump when rendering, questions or traces change: it is part of the cache key
SPLITS = ("train", "val", "test")
MODALITIES = ("CT", "MRI", "X-ray")
QUADRANTS = ("upper left", "upper right", "lower left", "lower right")
SIZES = ("tiny", "small", "medium", "large")
SIZE_RADIUS = (0.05, 0.08, 0.12, 0.17)  # lesion radius as a fraction of the image side, before difficulty
COUNTS = ("0", "1", "2", "3")
PERCEPTION_TYPES = ("modality", "location", "count", "size", "presence", "modality_location")
TEXTBOOK_TYPES = ("diagnosis", "stage", "largest")
QUESTION_TYPES = PERCEPTION_TYPES + TEXTBOOK_TYPES
DIAGNOSES = ("abscess", "cyst", "tumor", "hematoma")
STAGES = ("stage I", "stage II", "stage III", "stage IV")
# The world's textbook: the rules its textbook questions need and its traces cite, one line each.
TEXTBOOK = {
    "abscess": "a dark lesion on MRI is an abscess",
    "cyst": "a dark lesion on CT or X-ray is a cyst",
    "tumor": "a bright lesion in the upper half is a tumor",
    "hematoma": "a bright lesion in the lower half is a hematoma",
    "stage": "the stage is the number of lesions, one higher if any lesion is large",
    "largest": "compare the sizes of all lesions",
}
CSV_COLUMNS = [
    "id",
    "Figure_path",
    "Question",
    "Answer",
    "Choice A",
    "Choice B",
    "Choice C",
    "Choice D",
    "Answer_label",
    "answer_type",
    "modality",
    "content_type",
    "split",
    "trace",
    "difficulty",
    "caption",
]
KINDS = ("mcq", "closed", "open")
# The open question of the optional describe items (see `read_synthetic(describe=True)`).
DESCRIBE_QUESTION = "Describe the findings in this scan."

# A small, fixed set of wordings per type: enough variety for a tokenizer, few enough for a tiny model.
QUESTIONS = {
    "modality": [
        "What imaging modality was used to acquire this image?",
        "Which modality is shown in this scan?",
        "This image was most likely obtained with which imaging technique?",
    ],
    "location": [
        "In which quadrant is the lesion located?",
        "Where is the lesion in this image?",
        "Which part of the image contains the abnormality?",
    ],
    "count": [
        "How many lesions are visible in this image?",
        "How many focal abnormalities can be seen?",
        "What is the number of lesions in this scan?",
    ],
    "size": [
        "How large is the lesion?",
        "What is the size of the abnormality shown?",
        "Which best describes the size of the lesion?",
    ],
    "presence": [
        "Which quadrant shows no lesion?",
        "In which quadrant is a lesion absent?",
        "Which part of the image is free of abnormalities?",
    ],
    "modality_location": [
        "Which option gives both the imaging modality and the lesion location?",
        "Which description of the scan and its lesion is correct?",
    ],
    "diagnosis": [
        "What is the most likely diagnosis?",
        "Which diagnosis fits this lesion?",
        "What does this lesion most likely represent?",
    ],
    "stage": [
        "What is the stage of this disease?",
        "Which stage does this scan show?",
        "How would you stage this scan?",
    ],
    "largest": [
        "In which quadrant is the largest lesion?",
        "Where is the biggest lesion?",
        "Which quadrant holds the largest abnormality?",
    ],
}
# Closed questions ask whether one value (the true one for a yes, a distractor for a no) holds.
CLOSED_QUESTIONS = {
    "modality": ["Is this a {value} image?", "Was this scan acquired with {value}?"],
    "location": [
        "Is the lesion in the {value} quadrant?",
        "Is the abnormality located in the {value} quadrant?",
    ],
    "count": ["Is the number of lesions {value}?", "Are exactly {value} lesions visible?"],
    "size": ["Is the lesion {value}?", "Would you call the lesion {value}?"],
    "presence": ["Is the {value} quadrant free of lesions?", "Is there no lesion in the {value} quadrant?"],
    "modality_location": ["Does this image show {value}?", "Is this {value}?"],
    "diagnosis": ["Is this lesion most likely {a} {value}?", "Does this scan show {a} {value}?"],
    "stage": ["Is this {value}?", "Would you stage this scan as {value}?"],
    "largest": [
        "Is the largest lesion in the {value} quadrant?",
        "Is the biggest lesion in the {value} quadrant?",
    ],
}
# Half of the closed textbook questions are negated: a yes says the asked value does NOT hold.
NEGATED_QUESTIONS = {
    "diagnosis": ["Is this lesion something other than {a} {value}?", "Is this lesion not {a} {value}?"],
    "stage": ["Is this scan not {value}?", "Would you stage this scan as anything but {value}?"],
    "largest": [
        "Is the largest lesion outside the {value} quadrant?",
        "Is the biggest lesion anywhere but the {value} quadrant?",
    ],
}
# Open questions use the type's own wordings, except where those refer to options.
OPEN_QUESTIONS = {
    "modality_location": [
        "What is the imaging modality, and where is the lesion?",
        "Name the modality of this scan and the quadrant of its lesion.",
    ]
}
# Short evidence phrases keep template traces at ~40 tokens: the demo's reasoner is trained on them and the
# whole chain (traces, fine-tune, budget sweeps) pays for every token.
MODALITY_EVIDENCE = {
    "CT": ["a bright bony rim around a round body", "a round slice ringed by dense bone"],
    "MRI": ["an oval with concentric soft bands", "layered oval signal with no bony rim"],
    "X-ray": ["rib-like bands filling the frame", "a full-frame projection with rib shadows"],
}
OPENERS = ["Let me look.", "First, the scan.", ""]


@dataclass(frozen=True)
class WorldParams:
    """What a world is made from (its cache key). The defaults are `dataset/synthetic`'s: one home, the
    schema."""

    n_train: int = SyntheticConf.n_train
    n_val: int = SyntheticConf.n_val
    n_test: int = SyntheticConf.n_test
    image_size: int = SyntheticConf.image_size
    seed: int = 0  # the schema's is ${seed}, the entries' seed, whose default is also 0
    # per-item difficulty of ordinary items, 0 (clear) .. 1 (barely visible)
    difficulty: float = SyntheticConf.difficulty
    # share of items whose difficulty is drawn from [0.6, 1]
    hard_fraction: float = SyntheticConf.hard_fraction
    # share of each question type asked as yes/no (closed) and open (answered in words)
    closed_share: float = SyntheticConf.closed_share
    open_share: float = SyntheticConf.open_share
    # relative weight of each question type; the schema's default is documented there
    question_mix: dict[str, float] = field(default_factory=lambda: dict(QUESTION_MIX))

    def __post_init__(self) -> None:
        unknown = sorted(set(self.question_mix) - set(QUESTION_TYPES))
        if unknown:
            raise ValueError(
                f"synthetic question_mix has unknown question types {unknown}; the types are "
                f"{list(QUESTION_TYPES)}"
            )
        mix = {str(k): float(v) for k, v in self.question_mix.items()}
        if any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
            raise ValueError(f"synthetic question_mix weights must be >= 0 with a positive sum, got {mix}")
        # In QUESTION_TYPES' order, without the zero weights: the same mix always hashes to the same world.
        object.__setattr__(self, "question_mix", {t: mix[t] for t in QUESTION_TYPES if mix.get(t, 0) > 0})
        if self.image_size < 16:
            raise ValueError(f"synthetic image_size must be >= 16, got {self.image_size}")
        for name in ("difficulty", "hard_fraction", "closed_share", "open_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"synthetic {name} must be within [0, 1], got {getattr(self, name)}")
        if self.closed_share + self.open_share > 1.0:
            raise ValueError(
                f"synthetic closed_share + open_share must be <= 1, got {self.closed_share} + "
                f"{self.open_share}"
            )
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) < 0:
                raise ValueError(f"synthetic {name} must be >= 0, got {getattr(self, name)}")

    def sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "version": VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Scene:
    modality: str
    lesions: tuple[tuple[int, int, bool], ...]  # (quadrant index, size index, dark)
    difficulty: float


# ------------------------------------------------------------------------------------------------ scenes
def _type_counts(mix: dict[str, float], n: int) -> dict[str, int]:
    """n items shared out by weight, largest remainders first (ties in QUESTION_TYPES' order): exact and
    stable."""
    total = sum(mix.values())
    quota = {t: n * w / total for t, w in mix.items()}
    counts = {t: int(q) for t, q in quota.items()}
    for t in sorted(quota, key=lambda t: -(quota[t] - counts[t]))[: n - sum(counts.values())]:
        counts[t] += 1
    return counts


def _plan(params: WorldParams, split: str) -> list[dict]:
    """Question type, answer value, correct letter, modality and hardness per item, balanced within the split.

    One shuffled index per item drives both its answer value and its modality (whose cycle carries on from
    type to type), so values, modalities and their combinations all come out as even as the counts allow
    (except where the textbook ties them: an abscess is on MRI, a cyst on CT or X-ray).
    """
    n = params.sizes()[split]
    rng = np.random.default_rng([params.seed, SPLITS.index(split), 0])
    counts = _type_counts(params.question_mix, n)
    types = rng.permutation(np.repeat(np.arange(len(counts)), list(counts.values())))
    plan: list[dict] = [{} for _ in range(n)]
    offset = letter_offset = yes_offset = negated_offset = 0
    for t, qtype in enumerate(counts):
        idx = np.flatnonzero(types == t)
        order = rng.permutation(len(idx))
        modality = (offset + order) % len(MODALITIES)
        offset += len(idx)
        value = {"modality": modality, "modality_location": modality * 4 + order % 4}.get(qtype, order % 4)
        if (
            qtype == "diagnosis"
        ):  # the textbook's dark lesions: an abscess on MRI, a cyst on CT or X-ray in turn
            modality = np.where(value == 0, 1, np.where(value == 1, 2 * ((order // 4) % 2), modality))
        hard = rng.permutation(len(idx)) < round(
            params.hard_fraction * len(idx)
        )  # exactly that share per type
        n_closed, n_open = round(params.closed_share * len(idx)), round(params.open_share * len(idx))
        kinds = rng.permutation(np.repeat([1, 2, 0], [n_closed, n_open, len(idx) - n_closed - n_open]))
        yes, negated = np.zeros(len(idx), dtype=bool), np.zeros(len(idx), dtype=bool)
        # As many yes as no answers (to one) within the type and, the cycle carrying on, across the split.
        yes[kinds == 1] = (yes_offset + rng.permutation(n_closed)) % 2 == 0
        yes_offset += n_closed
        if qtype in TEXTBOOK_TYPES:
            negated[kinds == 1] = (negated_offset + rng.permutation(n_closed)) % 2 == 0
            negated_offset += n_closed
        # The mcq items' letters, balanced within the type and (their cycle carrying on) across the split.
        letters, n_mcq = np.zeros(len(idx), dtype=int), int((kinds == 0).sum())
        letters[kinds == 0] = (letter_offset + rng.permutation(n_mcq)) % 4
        letter_offset += n_mcq
        for i, v, m, letter, h, k, y, neg in zip(idx, value, modality, letters, hard, kinds, yes, negated):
            plan[i] = {
                "qtype": qtype,
                "value": int(v),
                "letter": LETTERS[letter],
                "modality": int(m),
                "hard": bool(h),
                "kind": KINDS[k],
                "yes": bool(y),
                "negated": bool(neg),
            }
    return plan


def _scene(plan: dict, rng: np.random.Generator, params: WorldParams) -> Scene:
    qtype, value = plan["qtype"], plan["value"]
    modality, quadrant = plan["modality"], value % 4
    quadrants = list(rng.permutation(4))
    dark = False
    if qtype in ("location", "size", "modality_location"):
        n_lesions = 1
        if qtype != "size":
            quadrants = [quadrant]
    elif qtype == "count":
        n_lesions = value
    elif qtype == "presence":
        n_lesions, quadrants = 3, [q for q in range(4) if q != value]
    elif qtype == "diagnosis":  # one lesion, small or larger so its intensity reads; the half the rule needs
        n_lesions, dark = 1, value < 2
        if DIAGNOSES[value] == "tumor":
            quadrants = [int(rng.integers(0, 2))]
        elif DIAGNOSES[value] == "hematoma":
            quadrants = [int(rng.integers(2, 4))]
    elif qtype == "stage":  # stage s: s lesions, or s - 1 lesions one of which is large
        with_large = value == 3 or (value > 0 and bool(rng.integers(0, 2)))
        n_lesions = value + 1 - with_large
    elif qtype == "largest":  # two or three lesions of distinct sizes, the largest in the asked-for quadrant
        n_lesions = int(rng.integers(2, 4))
        quadrants = [quadrant] + [q for q in quadrants if q != quadrant]
    else:
        n_lesions = int(rng.integers(0, 4))
    if qtype == "size":
        sizes = [value]
    elif qtype == "diagnosis":
        sizes = [int(rng.integers(1, 4))]
    elif qtype == "stage":  # the large lesion only where the stage counts it
        sizes = [3] * with_large + list(rng.integers(0, 3, size=n_lesions - with_large))
    elif qtype == "largest":
        sizes = sorted(rng.choice(4, size=n_lesions, replace=False).tolist(), reverse=True)
    else:
        sizes = list(rng.integers(0, 4, size=n_lesions))
    difficulty = float(rng.uniform(0.6, 1.0)) if plan["hard"] else params.difficulty
    lesions = tuple((int(q), int(s), dark) for q, s in zip(quadrants[:n_lesions], sizes))
    return Scene(MODALITIES[modality], lesions, round(difficulty, 3))


# ------------------------------------------------------------------------------------------------ images
def render(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 image: modality background, bright or dark disc lesions, noise (scaled by difficulty)."""
    d = scene.difficulty
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size - 0.5  # coordinates in [-0.5, 0.5], y down
    r = np.hypot(xx, yy)
    if scene.modality == "CT":
        body = r < 0.40
        img = np.where(body, 0.32 + 0.05 * np.sin(9 * xx + 3 * rng.random()) * np.cos(7 * yy), 0.02)
        img = np.where((r >= 0.40) & (r < 0.46), 0.85, img)  # bright bony rim
    elif scene.modality == "MRI":
        e = np.hypot(xx / 0.46, yy / 0.34)
        img = np.where(e < 1.0, 0.30 + 0.12 * np.cos(e * 18 + rng.random()), 0.0)  # concentric bands
    else:  # X-ray: whole frame, rib-like horizontal bands and a brighter central column
        img = 0.20 + 0.14 * (np.sin(yy * 2 * np.pi * 6 + rng.random() * 2 * np.pi) > 0.3)
        img = img + 0.16 * (np.abs(xx) < 0.06)
    contrast = 0.65 * (1.0 - 0.7 * d)
    shrink = 1.0 - 0.35 * d
    for quadrant, size_idx, dark in scene.lesions:
        cy = (-0.22 if quadrant < 2 else 0.22) + rng.uniform(-0.03, 0.03)
        cx = (-0.22 if quadrant % 2 == 0 else 0.22) + rng.uniform(-0.03, 0.03)
        radius = SIZE_RADIUS[size_idx] * shrink
        # A soft edge (one pixel wide) keeps tiny lesions visible after downscaling instead of aliasing away.
        mask = np.clip((radius - np.hypot(xx - cx, yy - cy)) * size + 0.5, 0.0, 1.0)
        # A dark lesion is drawn below its background (clipped at black), a bright one above.
        img = img - contrast * mask if dark else img + contrast * mask
    img = img + rng.normal(0.0, 0.02 + 0.22 * d, size=img.shape)
    gray = (np.clip(img, 0.0, 1.0) * 255).round().astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


# --------------------------------------------------------------------------------------- questions, traces
def _choices(plan: dict, scene: Scene, rng: np.random.Generator) -> tuple[list[str], str]:
    """Four choices with the correct one at plan["letter"], and the correct text."""
    qtype, value = plan["qtype"], plan["value"]
    if qtype == "modality_location":
        # A 2x2 grid (two modalities x two quadrants): each modality and each quadrant appears twice, so the
        # wording cannot single out the correct option.
        m, q = divmod(value, 4)
        m2 = int(rng.choice([x for x in range(3) if x != m]))
        q2 = int(rng.choice([x for x in range(4) if x != q]))
        correct, *others = [
            f"{MODALITIES[a]} with a lesion in the {QUADRANTS[b]} quadrant"
            for a, b in ((m, q), (m, q2), (m2, q), (m2, q2))
        ]
    else:  # every other value of the type (modality adds an Ultrasound distractor to make four)
        values = {
            "modality": list(MODALITIES) + ["Ultrasound"],
            "location": list(QUADRANTS),
            "count": list(COUNTS),
            "size": list(SIZES),
            "presence": list(QUADRANTS),
            "diagnosis": list(DIAGNOSES),
            "stage": list(STAGES),
            "largest": list(QUADRANTS),
        }[qtype]
        correct, others = values[value], [v for i, v in enumerate(values) if i != value]
    distractors = [others[i] for i in rng.permutation(len(others))]
    slot = LETTERS.index(plan["letter"])
    return distractors[:slot] + [correct] + distractors[slot:], correct


def _spots(scene: Scene, intensity: bool = False) -> str:
    """ "upper left small, lower right large": each lesion's quadrant and size (and "dark"/"bright")."""
    return ", ".join(
        f"{QUADRANTS[q]} {SIZES[s]}"
        + (f" {'dark' if d else 'bright'}" if intensity else " dark" if d else "")
        for q, s, d in sorted(scene.lesions)
    )


def _describe_lesions(scene: Scene, rng: np.random.Generator, intensity: bool = False) -> list[str]:
    if not scene.lesions:
        return [str(rng.choice(["No lesion is seen.", "The tissue is uniform, no lesion."]))]
    n = len(scene.lesions)
    return [f"I see {n} lesion{'s' if n > 1 else ''}: {_spots(scene, intensity)}."]


def caption(scene: Scene) -> str:
    """The scene's findings in one line: what a describe item answers."""
    spots = _spots(scene)
    return f"{scene.modality}. " + (f"Lesions: {spots}." if spots else "No lesion.")


def _rule(plan: dict, scene: Scene, correct: str) -> list[str]:
    """The textbook's rule the question needs, cited, and what it gives for this scan (empty for
    perception)."""
    qtype = plan["qtype"]
    if qtype == "diagnosis":
        return [
            f"Rule: {TEXTBOOK[correct]}.",
            f"So it is {'an' if correct[0] in 'aeiou' else 'a'} {correct}.",
        ]
    if qtype == "stage":
        n, large = len(scene.lesions), sum(s == 3 for _, s, _ in scene.lesions)
        found = f"{n} lesion{'s' if n > 1 else ''}" + (", one large" if large else ", none large")
        return [f"Rule: {TEXTBOOK['stage']}.", f"{found}: {correct}."]
    if qtype == "largest":
        q, s, _ = max(scene.lesions, key=lambda lesion: lesion[1])
        return [
            f"Rule: {TEXTBOOK['largest']}.",
            f"The largest is {SIZES[s]}, in the {QUADRANTS[q]} quadrant.",
        ]
    return []


def _trace(
    plan: dict, scene: Scene, choices: list[str], correct: str, rng: np.random.Generator, asked: str = ""
) -> str:
    """Template reasoning: visual evidence, the fact(s) the question needs (for a textbook question, the rule
    cited and applied), then per kind: optional elimination and the letter (mcq), the asked value checked
    against the fact (closed, negated or not), or the answer's words (open)."""
    qtype, letter, kind = plan["qtype"], plan["letter"], plan.get("kind", "mcq")
    steps = [
        str(rng.choice(OPENERS)),
        f"It shows {rng.choice(MODALITY_EVIDENCE[scene.modality])}, so it is {scene.modality}.",
    ]
    steps += _describe_lesions(scene, rng, intensity=qtype == "diagnosis")
    if scene.difficulty >= 0.6:
        steps.append(
            str(rng.choice(["The image is noisy, so I look carefully.", "Noise makes this harder."]))
        )
    free = [QUADRANTS[q] for q in range(4) if q not in {lq for lq, _, _ in scene.lesions}]
    steps += _rule(plan, scene, correct) or [
        {
            "modality": f"The modality is {scene.modality}.",
            "location": f"The lesion is {correct}.",
            "count": f"So there are {len(scene.lesions)}.",
            "size": f"The lesion is {correct}.",
            "presence": f"Only the {', '.join(free)} quadrant is free.",
            "modality_location": f"Both facts: {correct}.",
        }[qtype]
    ]
    if kind == "closed":
        answer = "yes" if plan["yes"] else "no"
        holds = asked == correct
        verdict = f"That matches {asked}." if holds else f"That is not {asked}."
        if plan.get("negated"):
            verdict += f" The question asks if it is not {asked}."
        steps += [verdict, f"So the answer is {answer}."]
    elif kind == "open":
        answer = correct
        steps.append(str(rng.choice([f"The answer is {correct}.", f"So: {correct}."])))
    else:
        answer = letter
        if rng.random() < 0.5:  # eliminate the other options (varies the trace length)
            steps.append(
                "Not " + ", not ".join(LETTERS[i] for i, c in enumerate(choices) if c != correct) + "."
            )
        steps.append(
            str(rng.choice([f"The answer is {letter}: {correct}.", f"So I choose {letter}: {correct}."]))
        )
    return f"<think>{' '.join(s for s in steps if s)}</think><answer>{answer}</answer>"


def _item_text(
    params: WorldParams, split: str, i: int, plan: dict
) -> tuple[Scene, np.random.Generator, dict, list[str]]:
    """The item's scene, its random stream (rendering continues it), its CSV row and its plain choices."""
    rng = np.random.default_rng([params.seed, SPLITS.index(split), 1, i])
    scene = _scene(plan, rng, params)
    choices, correct = _choices(plan, scene, rng)
    kind, question, answer = plan.get("kind", "mcq"), str(rng.choice(QUESTIONS[plan["qtype"]])), correct
    asked = ""
    if (
        kind == "closed"
    ):  # a yes asks the true value, a no one of the distractors (the other way round negated)
        holds = plan["yes"] != plan.get("negated", False)
        asked = correct if holds else next(c for c in choices if c != correct and c != "Ultrasound")
        wordings = NEGATED_QUESTIONS if plan.get("negated") else CLOSED_QUESTIONS
        question = str(rng.choice(wordings[plan["qtype"]])).format(
            value=asked, a="an" if asked[:1] in "aeiou" else "a"
        )
        answer = "yes" if plan["yes"] else "no"
    elif kind == "open" and plan["qtype"] in OPEN_QUESTIONS:
        question = str(rng.choice(OPEN_QUESTIONS[plan["qtype"]]))
    row = {
        "id": f"synthetic-{split}-{i:05d}",
        "Figure_path": f"{split}/{split}_{i:05d}.png",
        "Question": question,
        "Answer": answer,
        # PMC-VQA writes its choices as " A: text "; the reader strips that back off.
        **{f"Choice {L}": (f" {L}: {c} " if kind == "mcq" else "") for L, c in zip(LETTERS, choices)},
        "Answer_label": plan["letter"] if kind == "mcq" else "",
        "answer_type": "" if kind == "mcq" else kind.upper(),
        "modality": scene.modality,
        "content_type": plan["qtype"],
        "split": split,
        "trace": _trace(plan, scene, choices, correct, rng, asked),
        "difficulty": scene.difficulty,
        "caption": caption(scene),
    }
    return scene, rng, row, choices if kind == "mcq" else []


# ------------------------------------------------------------------------------------------------- world
def split_stats(frame: pd.DataFrame) -> dict:
    """Counts that show the balance: items, question types and kinds, letters, closed answers, modalities,
    hard items."""
    kinds = frame["answer_type"].fillna("").replace("", "MCQ").str.lower()
    closed_answers = frame.loc[kinds == "closed", "Answer"]
    return {
        "items": len(frame),
        "hard": int((frame["difficulty"] >= 0.6).sum()),
        "kind": {str(k): int(v) for k, v in kinds.value_counts().sort_index().items()},
        "closed_answer": {str(k): int(v) for k, v in closed_answers.value_counts().sort_index().items()},
        **{
            col: {
                str(k): int(v)
                for k, v in frame[col].replace("", np.nan).dropna().value_counts().sort_index().items()
            }
            for col in ("content_type", "Answer_label", "modality")
        },
    }


def world_dir(root: str | os.PathLike, params: WorldParams) -> Path:
    return Path(root) / f"world-{params.key()}"


def make_world(root: str | os.PathLike, params: WorldParams) -> Path:
    """Write the world (images/, <split>.csv, world.json) under root unless it is already complete there."""
    final = world_dir(root, params)
    if (final / "world.json").is_file():
        return final
    with atomic_dir(final, replace=False) as tmp:  # another process's identical world may win the race
        stats = {}
        for split in SPLITS:
            (tmp / "images" / split).mkdir(parents=True)
            rows = []
            for i, plan in enumerate(_plan(params, split)):
                scene, rng, row, _ = _item_text(params, split, i, plan)
                pixels = render(scene, params.image_size, rng)
                Image.fromarray(pixels, "RGB").save(tmp / "images" / row["Figure_path"], optimize=False)
                rows.append(row)
            frame = pd.DataFrame(rows, columns=CSV_COLUMNS)
            frame.to_csv(tmp / f"{split}.csv", index=False)
            stats[split] = split_stats(frame)
        (tmp / "world.json").write_text(
            json.dumps(
                {"params": asdict(params), "version": VERSION, "stats": stats}, indent=2, sort_keys=True
            )
        )
    return final


def read_synthetic(
    root: str,
    split: str = SyntheticConf.split,
    name: str = SyntheticConf.name,
    on_bad_image: str = SyntheticConf.on_bad_image,
    check_images: bool = SyntheticConf.check_images,
    limit: int | None = SyntheticConf.limit,
    describe: bool = SyntheticConf.describe,
    on_duplicate: str = SyntheticConf.on_duplicate,
    **world: Any,
) -> tuple[list[VQAItem], StageStats]:
    """Make the world if absent, then read one split through the PMC-VQA reader.

    `world` holds WorldParams' fields (n_train, n_val, n_test, image_size, seed, difficulty, hard_fraction,
    closed_share, open_share, question_mix).

    `describe` adds to the train split one open item per image ("Describe the findings in this scan." -> its
    caption), like LLaVA's caption stage: dense supervision that teaches a from-scratch vision tower what to
    look at.
    """
    if split not in SPLITS:
        raise ValueError(f"synthetic split must be one of {list(SPLITS)}, got {split!r}")
    try:
        params = WorldParams(**world)
    except TypeError as e:  # a key of neither the reader nor the world
        raise TypeError(
            f"read_synthetic: {e}; the world's fields are {list(WorldParams.__dataclass_fields__)}"
        ) from e
    world = make_world(root, params)
    items, stats = read_pmc_vqa(
        world / f"{split}.csv",
        image_root=str(world / "images"),
        name=name,
        split=split,
        source="synthetic",
        on_bad_image=on_bad_image,
        check_images=check_images,
        limit=limit,
        extra_columns=("trace", "difficulty", "caption"),
        on_duplicate=on_duplicate,
    )
    # The CSV round trip gives strings; difficulty is a number downstream (hard-item analyses).
    items = [it.with_extra(difficulty=float(it.extra["difficulty"])) for it in items]
    if describe and split == "train":
        items += [
            it.replace(
                id=f"{it.id}-describe",
                question=DESCRIBE_QUESTION,
                choices=[],
                answer_label=None,
                answer=it.extra["caption"],
                content_type="describe",
                extra={"difficulty": it.extra["difficulty"]},
            )
            for it in items
        ]
        stats.metrics["describe_items"] = len(items) // 2
    stats.metrics["synthetic_world"] = str(world)
    stats.metrics["synthetic_split"] = json.loads((world / "world.json").read_text())["stats"][split]
    return items, stats


def synthetic_corpus(seed: int = 0, n_items: int = 2000) -> list[str]:
    """Text of a world's train split for training tiny tokenizers, rendering and writing no images.

    Per item: the question, choices, answer and trace, and the item's prompt under one of the PROMPTS
    templates (in turn), wrapped in a CONVERSATIONS style (in turn), so the prompt wording is covered too.
    """
    params = WorldParams(n_train=n_items, n_val=0, n_test=0, seed=seed)
    templates, styles = sorted(PROMPTS), sorted(CONVERSATIONS)
    texts = []
    for i, plan in enumerate(_plan(params, "train")):
        _, _, row, choices = _item_text(params, "train", i, plan)
        item = VQAItem(
            id=row["id"],
            image=row["Figure_path"],
            question=row["Question"],
            choices=choices,
            answer_label=row["Answer_label"] or None,
            answer=row["Answer"],
            kind=row["answer_type"].lower() or "mcq",
        )
        prompt = format_question(item, templates[i % len(templates)])
        texts += [
            row["Question"],
            *choices,
            row["Answer"],
            row["trace"],
            DESCRIBE_QUESTION,
            row["caption"],
            format_conversation(prompt, row["trace"], styles[i % len(styles)]),
        ]
    return texts
