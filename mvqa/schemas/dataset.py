"""Schemas of the `dataset/` group: one per reader. Every reader returns (items, StageStats)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import II, MISSING

GROUP = "dataset"


@dataclass
class DatasetConf:
    """Fields every reader takes."""

    _target_: str = MISSING
    name: str = MISSING
    # error: a missing/corrupt image stops the load naming it; skip: the row is dropped and recorded in stats.
    on_bad_image: str = "error"
    # Open every image at load time (off for sources shipped without images, e.g. the MVQA1k release).
    check_images: bool = False
    limit: int | None = None
    # Rows equal in everything but their id (image, question, choices, answer, extra columns): drop all but the
    # first (logged and recorded in stats), keep them (a warning), or error naming them.
    on_duplicate: str = "drop"


@dataclass
class ColumnsConf:
    """Record field -> CSV column. For PMC-VQA files null keeps PMC-VQA's own name; names ignore case."""

    image: str | None = None
    question: str | None = None
    answer: str | None = None
    choices: list[str] | None = None
    answer_label: str | None = None
    # Optional everywhere: when unmapped, a column named like the field fills it if the CSV has one.
    id: str | None = None
    modality: str | None = None
    content_type: str | None = None
    split: str | None = None


@dataclass
class PmcVqaConf(DatasetConf):
    _target_: str = "mvqa.data.readers.read_pmc_vqa"
    _convert_: str = "all"  # plain dicts and lists reach the reader
    name: str = "pmc_vqa"
    path: str = MISSING
    image_root: str | None = None  # null: the CSV's directory
    split: str = ""
    source: str = "pmc_vqa"
    columns: ColumnsConf = field(default_factory=ColumnsConf)
    extra_columns: list[str] = field(default_factory=list)  # copied into item.extra
    encoding: str = "utf-8-sig"  # a non-UTF-8 file (latin-1, cp1252) names its encoding here


_TRACE_COLUMNS = ["generated_reasoning", "generated_answer", "raw_output"]


@dataclass
class Mvqa1kReleaseConf(PmcVqaConf):
    # The traces ride along in item.extra so curation can start at its filter stage.
    name: str = "mvqa1k"
    source: str = "mvqa1k_release"
    extra_columns: list[str] = field(default_factory=lambda: list(_TRACE_COLUMNS))


@dataclass
class CuratedConf(PmcVqaConf):
    # A curation run's final.csv (path required), read for training.
    name: str = "curated"
    source: str = "curated"
    extra_columns: list[str] = field(default_factory=lambda: list(_TRACE_COLUMNS))
    # export copies the images to images/ beside final.csv
    image_root: str | None = "${mvqa.dirname:${.path}}/images"


@dataclass
class CsvConf(DatasetConf):
    _target_: str = "mvqa.data.readers.read_csv_dataset"
    _convert_: str = "all"
    name: str = "csv"
    path: str = MISSING
    columns: ColumnsConf = field(default_factory=ColumnsConf)  # image, question and answer required
    image_root: str | None = None
    split: str = ""
    source: str = "csv"
    strip_choice_prefixes: bool = False  # PMC-VQA style " A: " prefixes in the choice cells
    extra_columns: list[str] = field(default_factory=list)
    encoding: str = "utf-8-sig"


@dataclass
class SlakeConf(DatasetConf):
    _target_: str = "mvqa.data.readers.read_slake"
    name: str = "slake"
    root: str = MISSING
    split: str = "test"  # train | validate | test
    val_split: str | None = "validate"
    test_split: str | None = "test"
    source: str = "slake"
    open_ended: bool = False  # keep OPEN questions open instead of adding distractors
    num_distractors: int = 3
    seed: int = II("seed")
    encoding: str = "utf-8"


SCHEMAS: dict[str, type] = {
    "schema_pmc_vqa": PmcVqaConf,
    "schema_mvqa1k_release": Mvqa1kReleaseConf,
    "schema_curated": CuratedConf,
    "schema_csv": CsvConf,
    "schema_slake": SlakeConf,
}
