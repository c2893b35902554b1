"""Dataset readers: each turns a source file into `(list[VQAItem], StageStats)` for the stage "load".

- `read_pmc_vqa`: PMC-VQA-format CSVs (PMC-VQA itself, the MVQA1k release, a curation run's final.csv).
- `read_csv_dataset`: any CSV whose columns are mapped in config, so a new dataset needs no code.
- `read_slake`: SLAKE 1.0 JSON, English questions, CLOSED -> closed and OPEN -> open (`open_to_mcq` makes
  multiple choice of them instead).

Other benchmarks (VQA-RAD, PathVQA, PMC-VQA's test split, OmniMedVQA, MMMU) are in `mvqa.data.benchmarks`.
A question's kind: choices make an mcq; a mapped answer-type column (CLOSED/OPEN, any case) makes a closed or
open item; without one a yes/no answer makes a closed item and any other answer an open one.

Row numbers in messages count data rows from 0 (header excluded), as in the default ids `<name>:<row>`.
"""

from __future__ import annotations

import collections
import json
import logging
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mvqa.data.images import check_image_path, check_on_bad_image, verify_images
from mvqa.data.records import CLOSED, LETTERS, MAX_CHOICES, OPEN, VQAItem
from mvqa.data.stats import StageStats
from mvqa.schemas import schema_default
from mvqa.schemas.dataset import CsvConf, PmcVqaConf, SlakeConf

log = logging.getLogger(__name__)
LOAD_STAGE = "load"
PMC_VQA_COLUMNS: dict[str, Any] = {
    "image": "Figure_path",
    "question": "Question",
    "answer": "Answer",
    "choices": ["Choice A", "Choice B", "Choice C", "Choice D"],
    "answer_label": "Answer_label",
}
# Record fields filled from a column of the same name when the CSV has one (the synthetic world writes them).
RECORD_COLUMNS = ("id", "modality", "content_type", "split")
# answer_type (CLOSED/OPEN) says the kind of a row without choices; also read from a column of that name.
COLUMN_KEYS = ("image", "question", "answer", "choices", "answer_label", "answer_type", *RECORD_COLUMNS)
RELEASE_TRACE_COLUMNS = ("generated_reasoning", "generated_answer", "raw_output")

_CHOICE_PREFIX = {letter: re.compile(rf"^\s*'?{letter}\s*:\s*") for letter in LETTERS}
# PMC-VQA has rows cut out of a stringified list: " 'A: Mild stenosis ...' '", "MRI Scan'" (real release
# rows).
_PAIRED_QUOTE_TAIL = re.compile(r"\s*'\s*'\s*$")
_LONE_QUOTE_TAIL = re.compile(r"(?<=[^\d\s'])\s*'\s*$")  # not after a digit: 5' and 3' are primes


def kind_from_answer_type(value, where: str) -> str:
    """An answer-type cell ("CLOSED"/"OPEN", any case) -> the kind; empty -> "" (inferred from the answer)."""
    text = "" if value is None else str(value).strip().upper()
    if not text:
        return ""
    if text in ("CLOSED", "OPEN"):
        return CLOSED if text == "CLOSED" else OPEN
    raise ValueError(f"{where}: answer type {value!r}, expected CLOSED or OPEN (any case) or empty")


def clean_text(text: str) -> str:
    """Strip surrounding spaces and PMC-VQA's stray closing-quote artefacts (an unbalanced trailing quote)."""
    if "'" not in text:  # nearly every cell: skip the regexes
        return text.strip()
    text = _PAIRED_QUOTE_TAIL.sub("", text)
    if text.count("'") % 2:
        text = _LONE_QUOTE_TAIL.sub("", text)
    return text.strip()


def strip_choice_prefix(text: str, letter: str) -> str:
    """' A: CT scan ' -> 'CT scan': drop the choice's own letter prefix (once), quote artefacts and spaces."""
    return clean_text(_CHOICE_PREFIX[letter].sub("", text, count=1))


def read_pmc_vqa(
    path,
    image_root=PmcVqaConf.image_root,
    name: str = PmcVqaConf.name,
    split: str = PmcVqaConf.split,
    source: str = PmcVqaConf.source,
    on_bad_image: str = PmcVqaConf.on_bad_image,
    check_images: bool = PmcVqaConf.check_images,
    limit: int | None = PmcVqaConf.limit,
    columns: Mapping[str, Any] | None = None,
    extra_columns: Sequence[str] = schema_default(PmcVqaConf, "extra_columns"),
    on_duplicate: str = PmcVqaConf.on_duplicate,
    encoding: str = PmcVqaConf.encoding,
) -> tuple[list[VQAItem], StageStats]:
    """A PMC-VQA CSV (`Figure_path, Question, Answer, Choice A..D, Answer_label`), names matched ignoring
    case.

    `columns` overrides single entries of PMC_VQA_COLUMNS (None keeps the default); `extra_columns` are
    copied into `item.extra`. The image root defaults to the CSV's directory.
    """
    overrides = {k: v for k, v in _column_mapping(columns, path).items() if v is not None}
    return _read_table(
        path, {**PMC_VQA_COLUMNS, **overrides}, strip_prefixes=True, image_root=image_root, name=name,
        split=split, source=source, on_bad_image=on_bad_image, check_images=check_images, limit=limit,
        extra_columns=extra_columns, on_duplicate=on_duplicate, encoding=encoding,
    )


def read_csv_dataset(
    path,
    columns: Mapping[str, Any],
    image_root=CsvConf.image_root,
    name: str = CsvConf.name,
    split: str = CsvConf.split,
    source: str = CsvConf.source,
    strip_choice_prefixes: bool = CsvConf.strip_choice_prefixes,
    on_bad_image: str = CsvConf.on_bad_image,
    check_images: bool = CsvConf.check_images,
    limit: int | None = CsvConf.limit,
    extra_columns: Sequence[str] = schema_default(CsvConf, "extra_columns"),
    on_duplicate: str = CsvConf.on_duplicate,
    encoding: str = CsvConf.encoding,
) -> tuple[list[VQAItem], StageStats]:
    """Any CSV: `columns` maps image, question, answer (required), choices (list), answer_label, id, ... to
    column names. Without an answer_label column the label is the one choice whose text equals the answer."""
    mapping = {k: v for k, v in _column_mapping(columns, path).items() if v not in (None, [])}
    unmapped = [k for k in ("image", "question", "answer") if k not in mapping]
    if unmapped:
        raise ValueError(f"{path}: the column mapping needs {unmapped}; got {mapping}")
    return _read_table(
        path, mapping, strip_prefixes=strip_choice_prefixes, image_root=image_root, name=name, split=split,
        source=source, on_bad_image=on_bad_image, check_images=check_images, limit=limit,
        extra_columns=extra_columns, on_duplicate=on_duplicate, encoding=encoding,
    )


def _column_mapping(columns: Mapping[str, Any] | None, path) -> dict[str, Any]:
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(COLUMN_KEYS))
    if unknown:
        raise ValueError(
            f"{path}: unknown column mapping keys {unknown}; expected some of {list(COLUMN_KEYS)}")
    if columns.get("choices") is not None:
        columns["choices"] = list(columns["choices"])
        if len(columns["choices"]) > MAX_CHOICES:
            raise ValueError(
                f"{path}: {len(columns['choices'])} choice columns, at most {MAX_CHOICES} allowed")
    return columns


def decode_error(path: Path, encoding: str) -> ValueError:
    """Where a file stops being `encoding`: line, data row and byte offset, without the file's content."""
    data = path.read_bytes()
    try:
        data.decode(encoding)
        return ValueError(f"{path}: not readable as {encoding}")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        return ValueError(f"{path}: line {line} (data row {line - 2} unless a cell spans lines), byte offset "
                          f"{err.start}: byte 0x{data[err.start]:02x} is not valid {encoding} "
                          f"({err.reason}); "
                          "fix the file or set dataset.encoding (e.g. latin-1, cp1252)")
    except LookupError:
        return ValueError(f"{path}: unknown encoding {encoding!r} (dataset.encoding)")


def _read_frame(path: Path, limit: int | None, encoding: str = "utf-8-sig") -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    try:
        # Every cell as text, and no NA guessing: an answer "None" or "NA" is an answer.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, nrows=limit,
                            encoding=encoding)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty CSV (no header and no rows)") from None
    except (UnicodeDecodeError, LookupError):  # pandas' own message carries a slice of the file's bytes
        raise decode_error(path, encoding) from None
    if frame.empty:
        raise ValueError(f"{path}: no data rows (columns: {list(frame.columns)})")
    return frame


def _match_columns(path: Path, present: list[str], mapping: dict[str, Any],
                   extra: Sequence[str]) -> dict[str, Any]:
    """Map each wanted name to the CSV's own spelling (case and surrounding spaces ignored)."""
    by_key: dict[str, str] = {}
    for col in present:
        key = col.strip().lower()
        if key in by_key:
            raise ValueError(f"{path}: columns {by_key[key]!r} and {col!r} differ only in case or spaces")
        by_key[key] = col
    wanted = [mapping[k]
              for k in ("image", "question", "answer", "answer_label", "answer_type", *RECORD_COLUMNS)
              if k in mapping]
    missing = [w for w in [*wanted, *mapping.get("choices", []), *extra] if w.strip().lower() not in by_key]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; columns present: {present}")
    found = {k: by_key[v.strip().lower()] for k, v in mapping.items() if k != "choices"}
    found["choices"] = [by_key[c.strip().lower()] for c in mapping.get("choices", [])]
    for field in (*RECORD_COLUMNS, "answer_type"):  # not mapped but present under the field's own name
        if field not in found and field in by_key:
            found[field] = by_key[field]
    found["extra"] = {e: by_key[e.strip().lower()] for e in extra}
    return found


def _label_from_answer(answer: str, choices: list[str], where: str) -> str:
    hits = [i for i, c in enumerate(choices) if c.lower() == answer.lower()]
    if len(hits) != 1:
        raise ValueError(f"{where}: answer {answer!r} matches {len(hits)} of the choices {choices}; "
                         "map an answer_label column or fix the row")
    return LETTERS[hits[0]]


def _read_table(path, mapping, *, strip_prefixes, image_root, name, split, source, on_bad_image, check_images,
                limit, extra_columns, on_duplicate="drop", encoding="utf-8-sig") -> tuple[list[VQAItem],
                                                                                          StageStats]:
    path = Path(path)
    check_on_bad_image(on_bad_image)
    check_on_duplicate(on_duplicate)
    frame = _read_frame(path, limit, encoding)
    cols = _match_columns(path, list(frame.columns), mapping, list(extra_columns))
    root = str(path.parent if image_root is None else image_root)
    n = len(frame)

    def column(key: str) -> list[str]:
        return frame[cols[key]].tolist() if key in cols else [""] * n

    images, questions, labels = column("image"), column("question"), column("answer_label")
    answers = [clean_text(a) for a in column("answer")]
    clean = strip_choice_prefix if strip_prefixes else (lambda text, _letter: clean_text(text))
    choice_columns = [[clean(t, letter) for t in frame[c].tolist()] for letter,
                      c in zip(LETTERS, cols["choices"])]
    modalities, content_types, splits = column("modality"), column("content_type"), column("split")
    answer_types = column("answer_type")
    extras = {e: frame[c].tolist() for e, c in cols["extra"].items()}
    ids = [s.strip() for s in frame[cols["id"]].tolist()] if "id" in cols else [f"{name}:{i}"
                                                                                for i in range(n)]

    first_row: dict[str, int] = {}
    for i, item_id in enumerate(ids):
        if not item_id:
            raise ValueError(f"{path}: row {i}: empty id in column {cols['id']!r}")
        if item_id in first_row:
            if frame.iloc[i].tolist() == frame.iloc[first_row[item_id]].tolist() and on_duplicate == "drop":
                continue  # an exact repeat of the row, id included: dropped as a duplicate row below
            raise ValueError(f"{path}: duplicate id {item_id!r} at rows {first_row[item_id]} and {i}")
        first_row[item_id] = i

    stats = StageStats(LOAD_STAGE, n_in=n)
    items, mismatched = [], []
    for i in range(n):
        where = f"{path}: row {i}"
        choices = [col[i] for col in choice_columns]
        while choices and not choices[-1]:  # fewer options than choice columns: trailing cells are empty
            choices.pop()
        try:
            check_image_path(images[i])
            if "" in choices:
                raise ValueError(f"empty choice {LETTERS[choices.index('')]} before a non-empty one")
            raw_label = labels[i].strip().upper()
            if not choices:
                label = raw_label or None  # VQAItem refuses a label without choices
            elif "answer_label" in cols:
                if raw_label not in list(LETTERS[: len(choices)]):
                    raise ValueError(
                        f"answer label {labels[i]!r} is not one of {list(LETTERS[:len(choices)])}")
                label = raw_label
            else:
                label = _label_from_answer(answers[i], choices, where)
            item = VQAItem(
                id=ids[i], image=images[i].strip(), question=questions[i].strip(), choices=choices,
                answer_label=label, answer=answers[i], image_root=root, modality=modalities[i].strip(),
                content_type=content_types[i].strip(), split=splits[i].strip() or split, source=source,
                kind="" if choices
                else kind_from_answer_type(answer_types[i], f"column {cols.get('answer_type')!r}"),
                extra={e: values[i] for e, values in extras.items()},
            )
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        if choices and item.answer.lower() != choices[item.answer_index].lower():
            mismatched.append(item.id)
        items.append(item)

    if mismatched:  # kept: the label is the ground truth, but curation should know the text disagrees
        stats.warn(f"{path}: {len(mismatched)} rows whose answer text differs from the labelled choice "
                   f"(first: {mismatched[:5]})", reason="answer_text_mismatch")
    stats.metrics.update(path=str(path), answer_text_mismatch=len(mismatched))
    return _finish(items, stats, path, on_bad_image, check_images, on_duplicate)


ON_DUPLICATE = ("error", "drop", "keep")


def check_on_duplicate(on_duplicate: str) -> None:
    if on_duplicate not in ON_DUPLICATE:
        raise ValueError(f"on_duplicate={on_duplicate!r}: expected one of {list(ON_DUPLICATE)}")


def _row_key(item: VQAItem) -> tuple:
    """Everything a row says except its id: two rows equal here are one question asked twice."""
    return (item.image_root, item.image, item.question, tuple(item.choices), item.answer_label, item.answer,
            tuple(sorted((k, str(v)) for k, v in item.extra.items())))


def handle_duplicates(items: list[VQAItem], on_duplicate: str, stats: StageStats, path) -> list[VQAItem]:
    """Exact duplicate rows (same image, question, choices, answer and extra columns such as a trace): drop
    all but the first (recorded, reason `duplicate_row`), keep them (a warning), or stop naming them."""
    check_on_duplicate(on_duplicate)
    first: dict[tuple, str] = {}
    dups: list[tuple[str, str]] = []  # (duplicate id, id of its first row)
    repeats: set[int] = set()  # positions (a repeated row may repeat its id too)
    for pos, it in enumerate(items):
        key = _row_key(it)
        if key in first:
            dups.append((it.id, first[key]))
            repeats.add(pos)
        else:
            first[key] = it.id
    stats.metrics["duplicate_rows"] = len(dups)
    if not dups:
        return items
    shown = ", ".join(f"{d} = {f}" for d, f in dups[:5]) + (", ..." if len(dups) > 5 else "")
    if on_duplicate == "error":
        raise ValueError(f"{path}: {len(dups)} rows repeat an earlier row exactly ({shown}); "
                         "dataset.on_duplicate=drop keeps the first of each, keep keeps all")
    if on_duplicate == "keep":
        stats.warn(f"{path}: {len(dups)} rows repeat an earlier row exactly, kept ({shown})",
                   reason="duplicate_row_kept")
        return items
    for dup, of in dups:
        stats.drop(dup, "duplicate_row", duplicate_of=of)
    log.warning(
        "%s: dropped %d rows that repeat an earlier row exactly (%s); dataset.on_duplicate=keep|error",
        path, len(dups), shown)
    return [it for pos, it in enumerate(items) if pos not in repeats]


def _finish(items, stats, path, on_bad_image, check_images, on_duplicate="drop") -> tuple[list[VQAItem],
                                                                                          StageStats]:
    items = handle_duplicates(items, on_duplicate, stats, path)
    # skip promises that no stage trips over a bad image; later stages open images without a skip of
    # their own,
    # so the images are checked here even when check_images is off.
    if check_images or on_bad_image == "skip":
        items = verify_images(items, on_bad_image, stats)
    if not items:
        raise ValueError(f"{path}: no items left after loading (dropped: {stats.drop_reasons})")
    stats.n_out = len(items)
    return items, stats


# ---------------------------------------------------------------------------------------------------- SLAKE

SLAKE_SPLITS = ("train", "validate", "test")
SLAKE_LAYOUT = ("SLAKE's layout: <path>/{train,validate,test}.json (img_name, question, answer, answer_type, "
                "q_lang, qid, modality, content_type) and the images under <path>/imgs/")
SLAKE_KEYS = ("img_name", "question", "answer", "answer_type", "q_lang", "qid", "modality", "content_type")
YES_NO = ["Yes", "No"]


def parse_question_options(question: str) -> list[str] | None:
    """The options a closed question names, or None when they cannot be read.

    "Which organ is abnormal, heart or lung?" -> ["heart", "lung"];
    "Which is the biggest in this image,lung,liver or heart?" -> ["lung", "liver", "heart"];
    "Is the abnormality hyperdense or hypodense?" -> ["hyperdense", "hypodense"];
    "Is this a T1 weighted or T2 weighted MRI image?" -> ["T1 weighted", "T2 weighted"].
    """
    body = question.strip().rstrip("?").strip()
    if " or " not in body:
        return None
    head, last = body.rsplit(" or ", 1)
    if "," in head:  # "<stem>, a, b or c": everything after the stem's comma is an option
        options = [*head.split(",")[1:], last]
    else:  # "Is X a or b [rest]": one word each side, two when both share the second ("T1 weighted")
        left, right = head.split(), last.split()
        if not left or not right:
            return None
        shared = len(left) >= 2 and len(right) >= 2 and left[-1].lower() == right[1].lower()
        options = [" ".join(left[-2:]), " ".join(right[:2])] if shared else [left[-1], right[0]]
    options = [o.strip() for o in options if o.strip()]
    if not 2 <= len(options) <= MAX_CHOICES or len({o.lower() for o in options}) < len(options):
        return None
    if any(len(o.split()) > 3 for o in options):  # a clause, not an option: the stem had a comma of its own
        return None
    return options


def _match_option(answer: str, options: list[str]) -> int | None:
    """Index of the option the answer names: exact (ignoring case), else the one option containing its
    words."""
    exact = [i for i, o in enumerate(options) if o.lower() == answer.lower()]
    if len(exact) == 1:
        return exact[0]
    words = set(answer.lower().split())
    partial = [i for i, o in enumerate(options) if words and words <= set(o.lower().split())]
    return partial[0] if len(partial) == 1 else None


def _answer_key(answer: str) -> tuple[str, ...]:
    """Answers equal up to case and part order ("Liver, Heart" == "heart and liver") are one answer."""
    return tuple(
        sorted(p.strip().lower() for p in re.split(r",|\band\b", answer, flags=re.IGNORECASE) if p.strip()))


def _distractor_pools(rows: list[dict]) -> dict[str, list[tuple[tuple[str, ...], str]]]:
    """content_type -> distinct OPEN answers (key, first spelling seen), sorted so row order does not
    matter."""
    pools: dict[str, dict[tuple[str, ...], str]] = collections.defaultdict(dict)
    for r in rows:
        if r["answer_type"] == "OPEN":
            answer = str(r["answer"]).strip()
            pools[r["content_type"]].setdefault(_answer_key(answer), answer)
    return {ct: sorted(pool.items(), key=lambda kv: kv[1]) for ct, pool in pools.items()}


def read_slake(
    path,
    split: str = SlakeConf.split,
    name: str = SlakeConf.name,
    source: str = SlakeConf.source,
    open_to_mcq: bool = SlakeConf.open_to_mcq,
    num_distractors: int = SlakeConf.num_distractors,
    seed: int = 0,
    on_bad_image: str = SlakeConf.on_bad_image,
    check_images: bool = SlakeConf.check_images,
    limit: int | None = SlakeConf.limit,
    on_duplicate: str = SlakeConf.on_duplicate,
    encoding: str = SlakeConf.encoding,
) -> tuple[list[VQAItem], StageStats]:
    """SLAKE 1.0 `<path>/<split>.json`, English questions, images `<path>/imgs/<img_name>`.

    By default each question keeps SLAKE's own kind: CLOSED -> closed, OPEN -> open, free-text answers, so
    scores compare with published SLAKE results. `open_to_mcq` makes multiple choice of what it can instead:
    CLOSED yes/no questions get the choices ["Yes", "No"] in that fixed order; other CLOSED questions take
    the options named in the question, and stay closed free text when those cannot be read or do not contain
    the answer. OPEN questions get up to `num_distractors` distractors drawn (seeded per question) from the
    split's OPEN answers of the same content_type. `limit` cuts after the distractor pools are built, so it
    never changes an item's choices.
    """
    check_on_bad_image(on_bad_image)
    check_on_duplicate(on_duplicate)
    if split not in SLAKE_SPLITS:
        raise ValueError(f"SLAKE split {split!r}: expected one of {list(SLAKE_SPLITS)}")
    from mvqa.data.benchmarks import is_hub_id

    if is_hub_id(str(path)):
        raise ValueError(
            f"SLAKE: dataset.path {str(path)!r} is no local folder; the Hub's SLAKE ships its images "
            f"as a zip, so download and extract it. {SLAKE_LAYOUT}")
    root = Path(path)
    path = root / f"{split}.json"
    if not path.is_file():
        raise FileNotFoundError(f"SLAKE file not found: {path}. {SLAKE_LAYOUT}")
    try:
        rows = json.loads(path.read_text(encoding=encoding))
    except (UnicodeDecodeError, LookupError):
        raise decode_error(path, encoding) from None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: expected a non-empty JSON list of questions")
    for i, r in enumerate(rows):
        missing = [k for k in SLAKE_KEYS if k not in r]
        if missing:
            raise ValueError(f"{path}: row {i}: missing keys {missing}; keys present: {sorted(r)}")
        if r["answer_type"] not in ("OPEN", "CLOSED"):
            raise ValueError(
                f"{path}: row {i}: answer_type {r['answer_type']!r}, expected 'OPEN' or 'CLOSED'")
    english = [r for r in rows if r["q_lang"] == "en"]
    pools = _distractor_pools(english)

    stats = StageStats(LOAD_STAGE, n_in=len(english))
    kinds = ("closed_kept_closed", "open_kept_open", "closed_yes_no", "closed_parsed_options",
             "closed_not_mcq",
             "open_to_mcq", "open_no_distractors", "open_fewer_choices")
    counts = collections.Counter(dict.fromkeys(kinds, 0))
    n_choices: collections.Counter = collections.Counter()
    kept_open: list[str] = []
    items = []
    for r in english[:limit]:
        item_id = f"{name}:{r['qid']}"
        question, answer = str(r["question"]).strip(), str(r["answer"]).strip()
        choices: list[str] = []
        label = None
        if not open_to_mcq:
            kind = "closed_kept_closed" if r["answer_type"] == "CLOSED" else "open_kept_open"
        elif r["answer_type"] == "CLOSED":
            options = parse_question_options(question)
            index = _match_option(answer, options) if options else None
            if answer.lower() in ("yes", "no"):
                choices, label, kind = YES_NO, "A" if answer.lower() == "yes" else "B", "closed_yes_no"
            elif index is not None:
                choices, label, kind = options, LETTERS[index], "closed_parsed_options"
            else:
                kind = "closed_not_mcq"
                kept_open.append(item_id)
        else:
            rng = random.Random(f"{seed}:{r['qid']}")  # per question: the draw does not depend on row order
            key = _answer_key(answer)
            candidates = [text for k, text in pools[r["content_type"]] if k != key]
            choices = [*rng.sample(candidates, min(num_distractors, len(candidates))), answer]
            rng.shuffle(choices)
            if len(choices) < 2:
                choices, kind = [], "open_no_distractors"
            else:
                label, kind = LETTERS[choices.index(answer)], "open_to_mcq"
                if len(choices) < num_distractors + 1:
                    counts["open_fewer_choices"] += 1
        counts[kind] += 1
        if choices:
            n_choices[len(choices)] += 1
        try:
            check_image_path(r["img_name"])
            items.append(VQAItem(
                id=item_id, image=r["img_name"], question=question, choices=list(choices), answer_label=label,
                answer=choices[LETTERS.index(label)] if choices else answer, image_root=str(root / "imgs"),
                modality=str(r["modality"]), content_type=str(r["content_type"]), split=split, source=source,
                kind="" if choices else (CLOSED if r["answer_type"] == "CLOSED" else OPEN),
                extra={"qid": r["qid"], "answer_type": r["answer_type"], "location": r.get("location", ""),
                       "source_answer": answer},
            ))
        except ValueError as err:
            raise ValueError(f"{path}: question {r['qid']}: {err}") from None

    conversions = {k: counts[k] for k in ("closed_yes_no", "closed_parsed_options", "open_to_mcq")
                   if counts[k]}
    stats.metrics.update(path=str(path), non_english=len(rows) - len(english), **dict(counts),
                         n_choices=dict(sorted(n_choices.items())), closed_not_mcq_ids=kept_open,
                         conversions={f"{k}->mcq" if k != "open_to_mcq" else "open->mcq": n
                                      for k, n in conversions.items()})
    if counts["open_fewer_choices"]:
        stats.warn(
            f"{counts['open_fewer_choices']} open questions got fewer than {num_distractors} distractors "
            "(their content_type has few distinct answers in this split)")
    return _finish(items, stats, path, on_bad_image, check_images, on_duplicate)
