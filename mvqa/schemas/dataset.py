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
    # Rows equal in everything but their id (image, question, choices, answer, extra columns): drop all but
    # the
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
    # CLOSED/OPEN per row (any case; empty: a yes/no answer makes a closed item); read from a column named
    # answer_type when unmapped.
    answer_type: str | None = None
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
    path: str = MISSING  # <path>/{train,validate,test}.json and <path>/imgs/
    split: str = "test"  # train | validate | test
    val_split: str | None = "validate"
    test_split: str | None = "test"
    source: str = "slake"
    # CLOSED -> closed, OPEN -> open by default (comparable with published SLAKE results); true makes multiple
    # choice of them: Yes/No, the options a closed question names, distractors drawn for open questions.
    open_to_mcq: bool = False
    num_distractors: int = 3
    seed: int = II("seed")
    encoding: str = "utf-8"


@dataclass
class BenchmarkConf(DatasetConf):
    """A public benchmark read from a local copy (`path`) in its published layout, or a Hub id when online."""

    path: str = MISSING
    source: str = MISSING
    # Embedded images (Hub parquet bytes, base64 in a TSV) are written here once, named by their content.
    image_cache: str = "${paths.cache}/benchmark-images"


@dataclass
class VqaRadConf(BenchmarkConf):
    _target_: str = "mvqa.data.benchmarks.read_vqa_rad"
    name: str = "vqa_rad"
    source: str = "vqa_rad"
    split: str = "test"  # train | test
    val_split: str | None = None
    test_split: str | None = "test"


@dataclass
class PathVqaConf(BenchmarkConf):
    _target_: str = "mvqa.data.benchmarks.read_path_vqa"
    name: str = "path_vqa"
    source: str = "path_vqa"
    split: str = "test"  # train | validation | test
    val_split: str | None = "validation"
    test_split: str | None = "test"


@dataclass
class PmcVqaTestConf(DatasetConf):
    _target_: str = "mvqa.data.benchmarks.read_pmc_vqa_test"
    name: str = "pmc_vqa_test"
    path: str = MISSING  # the folder holding test_clean.csv and images/
    file: str = "test_clean.csv"  # test.csv: the uncleaned test split
    source: str = "pmc_vqa"
    split: str = "test"


@dataclass
class OmniMedVqaConf(BenchmarkConf):
    _target_: str = "mvqa.data.benchmarks.read_omnimedvqa"
    name: str = "omnimedvqa"
    source: str = "omnimedvqa"
    access: list[str] = field(default_factory=lambda: ["Open-access"])  # QA_information/<access>/
    subsets: list[str] = field(default_factory=list)  # JSON file names without .json; empty: all


@dataclass
class MmmuConf(BenchmarkConf):
    _target_: str = "mvqa.data.benchmarks.read_mmmu"
    name: str = "mmmu_med"
    source: str = "mmmu"
    split: str = "validation"  # dev | validation (test answers are withheld)
    val_split: str | None = "dev"
    test_split: str | None = "validation"
    # MMMU's "Health & Medicine" discipline.
    subjects: list[str] = field(
        default_factory=lambda: [
            "Basic_Medical_Science",
            "Clinical_Medicine",
            "Diagnostics_and_Laboratory_Medicine",
            "Pharmacy",
            "Public_Health",
        ]
    )


@dataclass
class VlmEvalKitTsvConf(BenchmarkConf):
    _target_: str = "mvqa.data.benchmarks.read_vlmevalkit_tsv"
    name: str = "tsv"
    source: str = "vlmevalkit"
    split: str = ""  # rows of a `split` column equal to this; empty: all rows
    subjects: list[str] = field(default_factory=list)


SCHEMAS: dict[str, type] = {
    "schema_pmc_vqa": PmcVqaConf,
    "schema_mvqa1k_release": Mvqa1kReleaseConf,
    "schema_curated": CuratedConf,
    "schema_csv": CsvConf,
    "schema_slake": SlakeConf,
    "schema_vqa_rad": VqaRadConf,
    "schema_path_vqa": PathVqaConf,
    "schema_pmc_vqa_test": PmcVqaTestConf,
    "schema_omnimedvqa": OmniMedVqaConf,
    "schema_mmmu_med": MmmuConf,
    "schema_vlmevalkit_tsv": VlmEvalKitTsvConf,
}
