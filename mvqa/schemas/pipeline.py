"""Schema of the `pipeline/` group: which curation stages run and how the model-free ones behave."""

from __future__ import annotations

from dataclasses import dataclass, field

GROUP = "pipeline"

ALL_STAGES = ["score", "hard", "trace", "filter", "sample", "export"]


@dataclass
class TraceConf:
    # A key of mvqa.data.prompts.PROMPTS: the seed's Med-R1 prompt by default.
    prompt: str = "med_r1_seed"
    max_new_tokens: int = 256
    batch_size: int = 16
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    # Samples per item when sampling; each becomes its own row (id suffixed #k).
    num_samples: int = 1
    progress: bool = True


@dataclass
class FilterConf:
    # normalised: "C", "C) MRI", " c " or the option's own text count as that letter; strict: exactly the
    # seed's `generated_answer.strip() == Answer_label.strip()` (a Med-R1 run answers with bare letters either
    # way).
    mode: str = "normalised"


@dataclass
class ExportConf:
    # copy | zip | none: how the matched images travel with the curated set.
    images: str = "copy"
    llava_json: bool = True


@dataclass
class PipelineConf:
    stages: list[str] = field(default_factory=lambda: list(ALL_STAGES))
    # Stage outputs are cached here by a hash of (stage, its config, its input), so rerunning the same config
    # skips finished stages and a killed trace stage resumes; set per-project to share across run dirs.
    cache_dir: str = "${paths.cache}/stages"
    trace: TraceConf = field(default_factory=TraceConf)
    filter: FilterConf = field(default_factory=FilterConf)
    export: ExportConf = field(default_factory=ExportConf)


SCHEMAS = {"schema_pipeline": PipelineConf}
