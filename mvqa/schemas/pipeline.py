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
class ScoreConf:
    # Items per chunk of the score stage's partial JSONL: a kill loses at most the chunk in flight.
    chunk_size: int = 64
    # Shards launched together (pipeline.stages=[score,trace], num_shards=N): a shard that has scored its
    # slice waits up to this long for the others, then traces in the same process; a peer still scoring at
    # the deadline is an error naming it. 0: the shard stops after scoring, to be rerun once all have scored.
    wait_for_shards_s: float = 0.0


@dataclass
class FilterConf:
    # normalised: "C", "C) MRI", " c " or the option's own text count as that letter, and a closed/open answer
    # matches by normalised exact match; strict: exactly the seed's `generated_answer.strip() ==
    # Answer_label.strip()` (a Med-R1 run answers with bare letters either way), the stripped texts for
    # closed/open items.
    mode: str = "normalised"
    # > 0: also keep an open trace whose token recall of the gold answer reaches this (LLaVA-Med's open
    # recall).
    min_recall: float = 0.0


@dataclass
class ExportConf:
    # copy | zip | none: how the matched images travel with the curated set.
    images: str = "copy"
    llava_json: bool = True
    # Fail the export when an item's image could not be exported (missing, or a link out of the image root);
    # off: the shortfall is a warning on the console and in export_stats.json.
    require_images: bool = False


@dataclass
class PipelineConf:
    stages: list[str] = field(default_factory=lambda: list(ALL_STAGES))
    # Stage outputs are cached here by a hash of (stage, its config, its input), so rerunning the same config
    # skips finished stages and a killed trace stage resumes; set per-project to share across run dirs.
    cache_dir: str = "${paths.cache}/stages"
    score: ScoreConf = field(default_factory=ScoreConf)
    # One process writes a stage's cache entry at a time (an OS lock). null: jobs of a Hydra multirun wait
    # while the writer runs (a sweep's jobs share upstream stages), a single run stops at once naming the
    # writer's pid; 0: always stop at once; N: wait up to N seconds, then take the finished entry.
    lock_wait_s: float | None = None
    trace: TraceConf = field(default_factory=TraceConf)
    filter: FilterConf = field(default_factory=FilterConf)
    export: ExportConf = field(default_factory=ExportConf)


SCHEMAS = {"schema_pipeline": PipelineConf}
