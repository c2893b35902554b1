"""Readers for the standard medical VQA benchmarks, each from the layout its public copy ships in.

Nothing downloads unless `path` is a Hugging Face Hub id (`owner/name`, not a local path) and the machine is
online; every reader otherwise reads a local copy and, when the copy is in no layout it knows, says which it
expects. Images embedded as bytes (Hub parquet, VLMEvalKit's base64) are written once to `image_cache`, named
by their content (`images.store_image_bytes`), so later stages open them by path like any other image.

| reader              | layouts (`path` is the folder or file)                                               
   |
| read_vqa_rad        | hub: data/{train,test}-*.parquet (image, question, answer); osf: "VQA_RAD Dataset
Public.json" + "VQA_RAD Image Folder/"; tsv |
| read_path_vqa       | hub: data/{train,validation,test}-*.parquet (image, question, answer); tsv           
      |
| read_pmc_vqa_test   | csv: test_clean.csv + images/ (the Hub repo's CSV with images.zip extracted)         
    |
| read_omnimedvqa     | json: QA_information/<access>/*.json + Images/; tsv                                  
     |
| read_mmmu           | hub: <Subject>/{dev,validation}-*.parquet (id, question, options, answer,
image_1..7); tsv |
| read_vlmevalkit_tsv | VLMEvalKit's TSV: index, image (base64), question, answer, [A..E], [category],
[answer_type] |

SLAKE (JSON + imgs/) is `readers.read_slake`. Kinds: choices make an mcq; an answer-type column (CLOSED/OPEN)
says
closed or open where the source has one; otherwise a yes/no answer makes a closed item and any other an open
one.
"""

from __future__ import annotations

import ast
import base64
import binascii
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mvqa.data.images import check_image_path, check_on_bad_image, store_image_bytes
from mvqa.data.readers import LOAD_STAGE, _finish, kind_from_answer_type
from mvqa.data.records import LETTERS, MAX_CHOICES, MIN_CHOICES, VQAItem, check_unique_ids
from mvqa.data.stats import StageStats
from mvqa.schemas import schema_default
from mvqa.schemas.dataset import (
    MmmuConf,
    OmniMedVqaConf,
    PathVqaConf,
    PmcVqaTestConf,
    VlmEvalKitTsvConf,
    VqaRadConf,
)

IMAGE_CACHE_NAME = "benchmark-images"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TSV_MAX_OPTIONS = "ABCDEFGHIJ"  # VLMEvalKit writes up to I/J for MMMU; more than MAX_CHOICES is dropped


def default_image_cache() -> Path:
    from mvqa.config import PROJECT_ROOT

    return Path(os.environ.get("MVQA_CACHE", PROJECT_ROOT / ".cache")) / IMAGE_CACHE_NAME


class LayoutError(ValueError):
    """`path` holds no copy of the benchmark in a layout its reader knows."""


def layout_error(benchmark: str, path: Path | str, layouts: Sequence[str], found: str = "") -> LayoutError:
    expected = "; ".join(layouts)
    return LayoutError(
        f"{benchmark}: {path} is not a copy in a layout this reader knows"
        f"{f' ({found})' if found else ''}. Expected {expected}"
    )


def is_hub_id(path: str) -> bool:
    """`owner/name` that is not a local path: a Hugging Face Hub dataset id."""
    return bool(_HUB_ID.match(str(path))) and not Path(path).exists()


def _hub_offline() -> bool:
    flags = (os.environ.get(k, "").strip().upper() for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(f in ("1", "ON", "YES", "TRUE") for f in flags)


def load_hub_dataset(
    repo_id: str, split: str, benchmark: str, layouts: Sequence[str], config: str | None = None
):
    """`datasets.load_dataset(repo_id, config, split=split)` with embedded images left as bytes."""
    where = f"{benchmark}: dataset.path {repo_id!r} is no local folder"
    advice = f"copy the benchmark to a folder and set dataset.path to it; {benchmark} reads " + "; ".join(
        layouts
    )
    if _hub_offline():
        raise ValueError(
            f"{where}, and as a Hugging Face Hub id it cannot be loaded offline "
            f"(HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set): {advice}"
        )
    import datasets

    try:
        ds = datasets.load_dataset(repo_id, config, split=split)
    except Exception as err:  # network, auth, a missing repo or split: all end here with the same advice
        raise ValueError(
            f"{where}, and loading it as a Hugging Face Hub id failed "
            f"({type(err).__name__}: {str(err)[:300]}): {advice}"
        ) from err
    return _bytes_images(ds)


def _bytes_images(ds):
    """Image columns stay {bytes, path} dicts: decoding every image at load time would cost minutes."""
    import datasets

    for column, feature in ds.features.items():
        if isinstance(feature, datasets.Image) and feature.decode:
            ds = ds.cast_column(column, datasets.Image(decode=False))
    return ds


def read_parquet_files(files: Sequence[Path], split: str, image_cache: Path):
    """Local Hub parquet files (one split) through `datasets`, images as bytes."""
    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a local file: seconds at most, and each bar would be a console line
    try:
        ds = datasets.load_dataset(
            "parquet",
            data_files={split: [str(f) for f in files]},
            split=split,
            cache_dir=str(Path(image_cache).parent / "hf-datasets"),
        )
    finally:
        if bars:
            datasets.enable_progress_bars()
    return _bytes_images(ds)


def _split_parquet(root: Path, split: str) -> list[Path]:
    """The Hub's parquet names for a split: data/<split>-00000-of-00001.parquet and variants."""
    for pattern in (
        f"data/{split}-*.parquet",
        f"data/{split}.parquet",
        f"{split}-*.parquet",
        f"{split}.parquet",
    ):
        found = sorted(root.glob(pattern))
        if found:
            return found
    return []


def image_bytes(cell: Any, where: str) -> bytes:
    """The bytes of a Hub image cell ({bytes, path} with decode off, or raw bytes)."""
    if isinstance(cell, dict):
        cell = cell.get("bytes")
    if isinstance(cell, (bytes, bytearray)) and cell:
        return bytes(cell)
    raise ValueError(f"{where}: no embedded image bytes (got {type(cell).__name__})")


def _check_columns(where: str, present: Iterable[str], needed: Sequence[str], layout: str) -> None:
    missing = [c for c in needed if c not in present]
    if missing:
        raise ValueError(f"{where}: missing columns {missing}; columns present: {list(present)}. {layout}")


def _limit(ds, limit: int | None):
    return ds if limit is None else ds.select(range(min(limit, len(ds))))


def _resolve_cache(image_cache) -> Path:
    return Path(image_cache) if image_cache else default_image_cache()


def _free_text_parquet(
    ds, where: str, *, name: str, split: str, source: str, image_cache: Path, layout: str
) -> list[VQAItem]:
    """image/question/answer rows (VQA-RAD's and PathVQA's Hub copies): no choices, kind from the answer."""
    _check_columns(where, ds.column_names, ("image", "question", "answer"), layout)
    items = []
    for i, row in enumerate(ds):
        at = f"{where}: row {i}"
        try:
            image = store_image_bytes(image_bytes(row["image"], at), image_cache, at)
            items.append(
                VQAItem(
                    id=f"{name}:{split}:{i}",
                    image=image,
                    question=str(row["question"]).strip(),
                    choices=[],
                    answer_label=None,
                    answer=str(row["answer"]).strip(),
                    image_root=str(image_cache),
                    split=split,
                    source=source,
                )
            )
        except ValueError as err:
            raise ValueError(f"{at}: {err}" if not str(err).startswith(at) else str(err)) from None
    return items


# ------------------------------------------------------------------------------------------------- VQA-RAD

VQA_RAD_SPLITS = ("train", "test")
VQA_RAD_JSON, VQA_RAD_IMAGES = "VQA_RAD Dataset Public.json", "VQA_RAD Image Folder"
VQA_RAD_KEYS = ("qid", "image_name", "question", "answer", "answer_type", "phrase_type")
VQA_RAD_LAYOUTS = (
    "the Hub's parquet: <path>/data/{train,test}-*.parquet with columns image (bytes), question, answer",
    (
        f"the OSF release: <path>/{VQA_RAD_JSON} (qid, image_name, question, answer, answer_type, "
        "phrase_type) "
        f"and <path>/{VQA_RAD_IMAGES}/"
    ),
    "VLMEvalKit's TSV (a .tsv file)",
)


def read_vqa_rad(
    path,
    split: str = VqaRadConf.split,
    name: str = VqaRadConf.name,
    source: str = VqaRadConf.source,
    image_cache=None,
    on_bad_image: str = VqaRadConf.on_bad_image,
    check_images: bool = VqaRadConf.check_images,
    limit: int | None = VqaRadConf.limit,
    on_duplicate: str = VqaRadConf.on_duplicate,
) -> tuple[list[VQAItem], StageStats]:
    """VQA-RAD (Lau et al., 2018): 1,793 train / 451 test questions, half yes/no.

    The OSF JSON says CLOSED/OPEN per question and its test split is the `test_*` phrase types; the Hub copy
    has no answer type, so a yes/no answer makes a closed item there.
    """
    check_on_bad_image(on_bad_image)
    if split not in VQA_RAD_SPLITS:
        raise ValueError(f"VQA-RAD split {split!r}: expected one of {list(VQA_RAD_SPLITS)}")
    kw = {
        "name": name,
        "source": source,
        "image_cache": image_cache,
        "on_bad_image": on_bad_image,
        "check_images": check_images,
        "limit": limit,
        "on_duplicate": on_duplicate,
    }
    root, cache = Path(path), _resolve_cache(image_cache)
    if str(path).endswith(".tsv"):
        return read_vlmevalkit_tsv(path, split=split, **kw)
    if (root / VQA_RAD_JSON).is_file():
        return _read_vqa_rad_osf(root, split, **kw)
    return _read_hub_layout(path, split, "VQA-RAD", VQA_RAD_LAYOUTS,
                            f"no {split} parquet and no {VQA_RAD_JSON}", name=name, source=source,
                            cache=cache, limit=limit, on_bad_image=on_bad_image, check_images=check_images,
                            on_duplicate=on_duplicate)


def _read_hub_layout(path, split: str, benchmark: str, layouts: Sequence[str], missing: str, *, name: str,
                     source: str, cache: Path, limit: int | None, on_bad_image: str, check_images: bool,
                     on_duplicate: str) -> tuple[list[VQAItem], StageStats]:
    """A free-text benchmark in the Hub's layout: a Hub id, or a local copy's data/<split>-*.parquet."""
    if is_hub_id(str(path)):
        ds, where = load_hub_dataset(str(path), split, benchmark, layouts), f"{path}[{split}]"
    else:
        root = Path(path)
        files = _split_parquet(root, split) if root.is_dir() else []
        if not files:
            raise layout_error(benchmark, path, layouts, missing)
        ds, where = read_parquet_files(files, split, cache), str(files[0])
    stats = StageStats(LOAD_STAGE, n_in=len(ds))
    items = _free_text_parquet(_limit(ds, limit), where, name=name, split=split, source=source,
                               image_cache=cache, layout=layouts[0])
    stats.metrics.update(path=str(path), layout="hub")
    return _finish(items, stats, where, on_bad_image, check_images, on_duplicate)


def _read_vqa_rad_osf(
    root: Path, split: str, *, name, source, image_cache, on_bad_image, check_images, limit, on_duplicate
):
    path = root / VQA_RAD_JSON
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: expected a non-empty JSON list of questions")
    for i, r in enumerate(rows):
        missing = [k for k in VQA_RAD_KEYS if k not in r]
        if missing:
            raise ValueError(f"{path}: row {i}: missing keys {missing}; keys present: {sorted(r)}")
    # The official test set is the 451 questions whose phrase type starts with test_ (test_freeform,
    # test_para).
    chosen = [
        (i, r) for i, r in enumerate(rows) if str(r["phrase_type"]).startswith("test") == (split == "test")
    ]
    stats = StageStats(LOAD_STAGE, n_in=len(chosen))
    items = []
    for i, r in chosen[:limit]:
        where = f"{path}: row {i}"
        try:
            check_image_path(str(r["image_name"]))
            items.append(
                VQAItem(
                    id=f"{name}:{r['qid']}",
                    image=str(r["image_name"]),
                    question=str(r["question"]).strip(),
                    choices=[],
                    answer_label=None,
                    answer=str(r["answer"]).strip(),
                    image_root=str(root / VQA_RAD_IMAGES),
                    content_type=str(r.get("question_type", "")).strip(),
                    modality=str(r.get("image_organ", "")).strip(),
                    split=split,
                    source=source,
                    kind=kind_from_answer_type(r["answer_type"], "answer_type"),
                    extra={
                        "qid": r["qid"],
                        "answer_type": str(r["answer_type"]).strip().upper(),
                        "phrase_type": r["phrase_type"],
                    },
                )
            )
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    check_unique_ids(items, str(path))
    stats.metrics.update(path=str(path), layout="osf")
    return _finish(items, stats, path, on_bad_image, check_images, on_duplicate)


# ------------------------------------------------------------------------------------------------- PathVQA

PATH_VQA_SPLITS = ("train", "validation", "test")
PATH_VQA_LAYOUTS = (
    ("the Hub's parquet: <path>/data/{train,validation,test}-*.parquet with columns image (bytes), question, "
     "answer"),
    "VLMEvalKit's TSV (a .tsv file)",
)


def read_path_vqa(
    path,
    split: str = PathVqaConf.split,
    name: str = PathVqaConf.name,
    source: str = PathVqaConf.source,
    image_cache=None,
    on_bad_image: str = PathVqaConf.on_bad_image,
    check_images: bool = PathVqaConf.check_images,
    limit: int | None = PathVqaConf.limit,
    on_duplicate: str = PathVqaConf.on_duplicate,
) -> tuple[list[VQAItem], StageStats]:
    """PathVQA (He et al., 2020): pathology images, about half yes/no (closed) and half open questions."""
    check_on_bad_image(on_bad_image)
    if split not in PATH_VQA_SPLITS:
        raise ValueError(f"PathVQA split {split!r}: expected one of {list(PATH_VQA_SPLITS)}")
    cache = _resolve_cache(image_cache)
    if str(path).endswith(".tsv"):
        return read_vlmevalkit_tsv(
            path,
            split=split,
            name=name,
            source=source,
            image_cache=image_cache,
            on_bad_image=on_bad_image,
            check_images=check_images,
            limit=limit,
            on_duplicate=on_duplicate,
        )
    return _read_hub_layout(path, split, "PathVQA", PATH_VQA_LAYOUTS, f"no {split} parquet", name=name,
                            source=source, cache=cache, limit=limit, on_bad_image=on_bad_image,
                            check_images=check_images, on_duplicate=on_duplicate)


# --------------------------------------------------------------------------------------------- PMC-VQA test

PMC_VQA_TEST_LAYOUT = (
    "<path>/test_clean.csv (Figure_path, Question, Answer, Choice A-D, Answer_label) and "
    "<path>/images/ (the Hub repo's CSV with images.zip extracted)"
)


def read_pmc_vqa_test(
    path,
    file: str = PmcVqaTestConf.file,
    name: str = PmcVqaTestConf.name,
    source: str = PmcVqaTestConf.source,
    split: str = PmcVqaTestConf.split,
    **kwargs,
) -> tuple[list[VQAItem], StageStats]:
    """PMC-VQA's test split (the cleaned 2k questions by default; `file=test.csv` for the full one): all
    mcq."""
    from mvqa.data.readers import read_pmc_vqa

    root = Path(path)
    csv = root / file
    if is_hub_id(str(path)):
        raise layout_error(
            "PMC-VQA",
            path,
            [PMC_VQA_TEST_LAYOUT],
            "the Hub repo ships its images as a zip: download and extract it",
        )
    if not csv.is_file() or not (root / "images").is_dir():
        raise layout_error(
            "PMC-VQA",
            path,
            [PMC_VQA_TEST_LAYOUT],
            f"{file}: {'found' if csv.is_file() else 'missing'}, "
            f"images/: {'found' if (root / 'images').is_dir() else 'missing'}",
        )
    return read_pmc_vqa(csv, image_root=root / "images", name=name, split=split, source=source, **kwargs)


# ---------------------------------------------------------------------------------------------- OmniMedVQA

OMNIMEDVQA_KEYS = ("question_id", "question", "gt_answer", "image_path", "option_A", "option_B")
OMNIMEDVQA_LAYOUTS = (
    (
        "<path>/QA_information/<access>/*.json (question_id, question, gt_answer, image_path, option_A..D, "
        "question_type, modality_type) with image_path relative to <path> (Images/...)"
    ),
    "VLMEvalKit's TSV (a .tsv file)",
)


def read_omnimedvqa(
    path,
    name: str = OmniMedVqaConf.name,
    source: str = OmniMedVqaConf.source,
    access: Sequence[str] = schema_default(OmniMedVqaConf, "access"),
    subsets: Sequence[str] = schema_default(OmniMedVqaConf, "subsets"),
    image_cache=None,
    on_bad_image: str = OmniMedVqaConf.on_bad_image,
    check_images: bool = OmniMedVqaConf.check_images,
    limit: int | None = OmniMedVqaConf.limit,
    on_duplicate: str = OmniMedVqaConf.on_duplicate,
) -> tuple[list[VQAItem], StageStats]:
    """OmniMedVQA (Hu et al., 2024): mcq only, one JSON per source dataset, no splits (all of it is test).

    `access` picks the QA_information folders (Open-access, Restricted-access), `subsets` the JSON files by
    name (e.g. ["Chest CT Scan"]; empty: all). A gt_answer that is none of the options drops the row.
    """
    check_on_bad_image(on_bad_image)
    root = Path(path)
    if str(path).endswith(".tsv"):
        return read_vlmevalkit_tsv(
            path,
            split="test",
            name=name,
            source=source,
            image_cache=image_cache,
            on_bad_image=on_bad_image,
            check_images=check_images,
            limit=limit,
            on_duplicate=on_duplicate,
        )
    folders = [root / "QA_information" / a for a in access]
    missing = [str(f) for f in folders if not f.is_dir()]
    if is_hub_id(str(path)) or missing:
        raise layout_error("OmniMedVQA", path, OMNIMEDVQA_LAYOUTS, f"missing {missing}" if missing else "")
    files = sorted(f for folder in folders for f in folder.glob("*.json") if not subsets or f.stem in subsets)
    unknown = sorted(set(subsets) - {f.stem for f in files})
    if unknown or not files:
        present = sorted(f.stem for folder in folders for f in folder.glob("*.json"))
        raise ValueError(
            f"OmniMedVQA: no JSON for subsets {unknown or list(subsets)} under {folders}; present: {present}"
        )
    stats = StageStats(LOAD_STAGE)
    items: list[VQAItem] = []
    for file in files:
        rows = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(rows, list) or not rows:
            raise ValueError(f"{file}: expected a non-empty JSON list of questions")
        stats.n_in += len(rows)
        for i, r in enumerate(rows):
            if limit is not None and len(items) >= limit:
                break
            where = f"{file}: row {i}"
            missing_keys = [k for k in OMNIMEDVQA_KEYS if k not in r]
            if missing_keys:
                raise ValueError(f"{where}: missing keys {missing_keys}; keys present: {sorted(r)}")
            choices = [
                str(r[f"option_{x}"]).strip() for x in "ABCDE" if str(r.get(f"option_{x}") or "").strip()
            ]
            answer = str(r["gt_answer"]).strip()
            hits = [k for k, c in enumerate(choices) if c.lower() == answer.lower()]
            item_id = f"{name}:{file.stem}:{r['question_id']}"
            if len(hits) != 1:
                stats.drop(item_id, "answer_not_one_option", file=str(file), row=i)
                continue
            try:
                check_image_path(str(r["image_path"]))
                items.append(
                    VQAItem(
                        id=item_id,
                        image=str(r["image_path"]),
                        question=str(r["question"]).strip(),
                        choices=choices,
                        answer_label=LETTERS[hits[0]],
                        answer=choices[hits[0]],
                        image_root=str(root),
                        modality=str(r.get("modality_type") or r.get("modality") or "").strip(),
                        content_type=str(r.get("question_type", "")).strip(),
                        split="test",
                        source=source,
                        extra={"subset": file.stem, "access": file.parent.name},
                    )
                )
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
    check_unique_ids(items, str(root))
    stats.metrics.update(path=str(path), layout="json", files=len(files))
    return _finish(items, stats, root, on_bad_image, check_images, on_duplicate)


# ---------------------------------------------------------------------------------------------------- MMMU

MMMU_SPLITS = ("dev", "validation")
MMMU_COLUMNS = ("id", "question", "options", "answer", "question_type", "image_1")
MMMU_LAYOUTS = (
    (
        "the Hub's parquet: <path>/<Subject>/{dev,validation}-*.parquet (id, question, options, answer, "
        "question_type, image_1..image_7) for each subject"
    ),
    "VLMEvalKit's TSV (MMMU_DEV_VAL.tsv)",
)


def read_mmmu(
    path,
    split: str = MmmuConf.split,
    subjects: Sequence[str] = schema_default(MmmuConf, "subjects"),
    name: str = MmmuConf.name,
    source: str = MmmuConf.source,
    image_cache=None,
    on_bad_image: str = MmmuConf.on_bad_image,
    check_images: bool = MmmuConf.check_images,
    limit: int | None = MmmuConf.limit,
    on_duplicate: str = MmmuConf.on_duplicate,
) -> tuple[list[VQAItem], StageStats]:
    """MMMU's medical subjects (Yue et al., 2024): mostly mcq, some open. One image per item here, so a
    question
    with several images is dropped ("multi_image"), as is one with more than five options
    ("too_many_choices").
    The test split's answers are withheld, so only dev and validation load."""
    check_on_bad_image(on_bad_image)
    if split not in MMMU_SPLITS:
        raise ValueError(
            f"MMMU split {split!r}: expected one of {list(MMMU_SPLITS)} (test answers are withheld)"
        )
    if str(path).endswith(".tsv"):
        return read_vlmevalkit_tsv(
            path,
            split=split,
            name=name,
            source=source,
            image_cache=image_cache,
            subjects=subjects,
            on_bad_image=on_bad_image,
            check_images=check_images,
            limit=limit,
            on_duplicate=on_duplicate,
        )
    root, cache = Path(path), _resolve_cache(image_cache)
    parts = []
    if is_hub_id(str(path)):
        for subject in subjects:
            parts.append(
                (
                    subject,
                    f"{path}/{subject}[{split}]",
                    load_hub_dataset(str(path), split, "MMMU", MMMU_LAYOUTS, config=subject),
                )
            )
    else:
        files = {subject: _split_parquet(root / subject, split) for subject in subjects}
        missing = [f"{subject}/{split}-*.parquet" for subject, found in files.items() if not found]
        if missing:
            present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            raise layout_error(
                "MMMU", path, MMMU_LAYOUTS, f"no {', '.join(missing)}; subject folders: {present}"
            )
        parts = [
            (subject, str(found[0]), read_parquet_files(found, split, cache))
            for subject, found in files.items()
        ]
    stats = StageStats(LOAD_STAGE, n_in=sum(len(ds) for _, _, ds in parts))
    items: list[VQAItem] = []
    for subject, where_file, ds in parts:
        _check_columns(where_file, ds.column_names, MMMU_COLUMNS, MMMU_LAYOUTS[0])
        image_columns = [c for c in ds.column_names if re.fullmatch(r"image_\d+", c)]
        for i, row in enumerate(ds):
            if limit is not None and len(items) >= limit:
                break
            where, item_id = f"{where_file}: row {i}", f"{name}:{row['id']}"
            images = [row[c] for c in image_columns if row[c] is not None]
            try:
                options = _literal_list(row["options"], "options")
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            mcq = str(row["question_type"]).strip() == "multiple-choice"
            reason = (
                "multi_image"
                if len(images) > 1
                else "no_image"
                if not images
                else "too_many_choices"
                if mcq and len(options) > MAX_CHOICES
                else "too_few_choices"
                if mcq and len(options) < MIN_CHOICES
                else ""
            )
            label = str(row["answer"]).strip().upper() if mcq else None
            if not reason and mcq and label not in LETTERS[: len(options)]:
                reason = "answer_not_one_option"
            if reason:
                stats.drop(item_id, reason, file=where_file, row=i)
                continue
            try:
                image = store_image_bytes(image_bytes(images[0], where), cache, where)
                items.append(
                    VQAItem(
                        id=item_id,
                        image=image,
                        question=str(row["question"]).strip(),
                        choices=[str(o).strip() for o in options] if mcq else [],
                        answer_label=label,
                        answer=str(options[LETTERS.index(label)]).strip()
                        if mcq
                        else str(row["answer"]).strip(),
                        image_root=str(cache),
                        modality=_img_type(row.get("img_type")),
                        content_type=str(row.get("subfield") or "").strip(),
                        split=split,
                        source=source,
                        extra={"subject": subject, "question_type": row["question_type"]},
                    )
                )
            except ValueError as err:
                raise ValueError(f"{where}: {err}" if not str(err).startswith(where) else str(err)) from None
    stats.metrics.update(path=str(path), layout="hub", subjects=list(subjects))
    return _finish(items, stats, path, on_bad_image, check_images, on_duplicate)


def _literal_list(cell: Any, what: str) -> list:
    """MMMU writes lists as Python literals in a string: "['a', 'b']"."""
    if isinstance(cell, (list, tuple)):
        return list(cell)
    try:
        value = ast.literal_eval(str(cell)) if str(cell).strip() else []
    except (ValueError, SyntaxError):
        value = None
    if isinstance(value, list):
        return value
    raise ValueError(f"{what} {str(cell)[:80]!r} is not a list literal")


def _img_type(cell: Any) -> str:
    try:
        return ", ".join(str(x) for x in _literal_list(cell, "img_type"))
    except ValueError:
        return str(cell or "").strip()


# --------------------------------------------------------------------------------------- VLMEvalKit's TSV

TSV_LAYOUT = (
    "VLMEvalKit's TSV: columns index, image (base64; a short cell names the index of the row that "
    "holds the image), question, answer; A..E options for mcq (answer is then the letter); optional "
    "category, answer_type (CLOSED/OPEN), split, id"
)


def read_vlmevalkit_tsv(
    path,
    split: str = VlmEvalKitTsvConf.split,
    name: str = VlmEvalKitTsvConf.name,
    source: str = VlmEvalKitTsvConf.source,
    subjects: Sequence[str] = schema_default(VlmEvalKitTsvConf, "subjects"),
    image_cache=None,
    on_bad_image: str = VlmEvalKitTsvConf.on_bad_image,
    check_images: bool = VlmEvalKitTsvConf.check_images,
    limit: int | None = VlmEvalKitTsvConf.limit,
    on_duplicate: str = VlmEvalKitTsvConf.on_duplicate,
) -> tuple[list[VQAItem], StageStats]:
    """A VLMEvalKit benchmark TSV. A `split` column, when present, selects rows equal to `split`; `subjects`
    keeps rows whose MMMU-style id (`validation_Clinical_Medicine_3`) or category names one of them."""
    check_on_bad_image(on_bad_image)
    path, cache = Path(path), _resolve_cache(image_cache)
    if not path.is_file():
        raise layout_error(name, path, [TSV_LAYOUT], "no such file")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False)
    _check_columns(str(path), list(frame.columns), ("index", "image", "question", "answer"), TSV_LAYOUT)
    images_by_index = dict(zip(frame["index"], frame["image"]))
    if split and "split" in frame.columns:
        frame = frame[frame["split"] == split]
    if subjects:
        frame = frame[[_tsv_subject(r) in set(subjects) for r in frame.to_dict(orient="records")]]
    option_columns = [c for c in _TSV_MAX_OPTIONS if c in frame.columns]
    stats = StageStats(LOAD_STAGE, n_in=len(frame))
    items: list[VQAItem] = []
    for row_number, r in zip(frame.index, frame.to_dict(orient="records")):
        if limit is not None and len(items) >= limit:
            break
        where, item_id = f"{path}: row {row_number}", f"{name}:{r['index']}"
        options = [r[c].strip() for c in option_columns if r[c].strip()]
        answer = r["answer"].strip()
        cell = r["image"].strip()
        if len(cell) <= 64 and cell in images_by_index:  # VLMEvalKit stores a repeated image once
            cell = images_by_index[cell].strip()
        encoded = _literal_list(cell, "image") if cell.startswith("[") else [cell]
        reason = (
            "multi_image"
            if len(encoded) > 1
            else "too_many_choices"
            if len(options) > MAX_CHOICES
            else "too_few_choices"
            if len(options) == 1
            else ""
        )
        label = None
        if not reason and options:
            if answer.upper() in LETTERS[: len(options)]:
                label = answer.upper()
            else:  # some TSVs write the option text
                hits = [k for k, o in enumerate(options) if o.lower() == answer.lower()]
                label = LETTERS[hits[0]] if len(hits) == 1 else None
            reason = "" if label else "answer_not_one_option"
        if reason:
            stats.drop(item_id, reason, row=int(row_number))
            continue
        try:
            data = base64.b64decode(encoded[0], validate=True)
            image = store_image_bytes(data, cache, where)
            items.append(
                VQAItem(
                    id=item_id,
                    image=image,
                    question=r["question"].strip(),
                    choices=options,
                    answer_label=label,
                    answer=options[LETTERS.index(label)] if label else answer,
                    image_root=str(cache),
                    modality=r.get("modality", "").strip(),
                    content_type=r.get("category", "").strip(),
                    split=r.get("split", "").strip() or split,
                    source=source,
                    kind="" if options else kind_from_answer_type(r.get("answer_type"), "answer_type"),
                )
            )
        except (ValueError, binascii.Error) as err:
            message = str(err) if str(err).startswith(where) else f"{where}: {err}"
            raise ValueError(message) from None
    check_unique_ids(items, str(path))
    stats.metrics.update(path=str(path), layout="tsv")
    return _finish(items, stats, path, on_bad_image, check_images, on_duplicate)


def _tsv_subject(row: dict[str, str]) -> str:
    match = re.fullmatch(r"(?:dev|validation|test)_(.+)_\d+", row.get("id", "").strip())
    return match.group(1) if match else row.get("category", "").strip()
