"""Schemas of the three entries' own top-level keys: `TrainConf`, `GenerateConf`, `EvaluateConf`.

Each comes first in its entry's defaults (conf/train.yaml: `- schema_train`), so every top-level key is typed
and a misspelt one (`data.batchsize`, `gradient_checkpoint`) or a mistyped value (`data.batch_size=eight`)
fails at compose time with the key named. The entries' own values live here, once; the YAML files only pick
the groups. The groups' contents are typed by their own schemas, so their keys here are `Any`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

GROUP = None  # the primary configs, not a group


@dataclass
class PathsConf:
    """Set in conf/common.yaml (interpolations of the project root, MVQA_CACHE and Hydra's run dir)."""

    root: str = MISSING
    # The shared real data (MVQA_DATA, else ../shared/data beside the project).
    shared_data: str = MISSING
    # Built tiny models, the synthetic world and bootstrapped demo checkpoints live here across runs.
    cache: str = MISSING
    output_dir: str = MISSING


@dataclass
class _EntryConf:
    seed: int = 0
    paths: PathsConf = field(default_factory=PathsConf)
    experiment_name: str | None = None
    dataset: Any = MISSING
    logger: Any = MISSING


@dataclass
class TrainDataConf:
    prompt: str = "med_r1_seed"  # a key of mvqa.data.prompts.PROMPTS
    max_length: int = 384
    batch_size: int = 8
    eval_batch_size: int = 16
    num_workers: int = 0
    val_fraction: float = 0.1  # used when the dataset has no val split of its own
    val_max_new_tokens: int = 96
    # val/acc is generated on the first N val items (a fixed slice, the same every epoch); null: all of them.
    val_generate_limit: int | None = 256


@dataclass
class TrainConf(_EntryConf):
    model: Any = MISSING
    recipe: Any = MISSING
    trace_format: Any = MISSING
    trainer: Any = MISSING
    callbacks: Any = MISSING
    data: TrainDataConf = field(default_factory=TrainDataConf)
    gradient_checkpointing: bool = False
    checkpoint_every_n_steps: int = 0  # 0: once per epoch (callbacks.every_n_steps)
    checkpoint_keep: int = 1  # the best N by val/acc besides last.ckpt (-1: all) (callbacks.keep)
    resume_from: str | None = None  # a checkpoint (e.g. RUN_DIR/checkpoints/last.ckpt) to continue from
    export_dir: str | None = None  # also save the result here (the demo's bootstraps use a stable cache path)


@dataclass
class GenerateConf(_EntryConf):
    scorer: Any = MISSING
    scorer_model: Any = MISSING
    reasoner: Any = MISSING
    engine: Any = MISSING
    sampler: Any = MISSING
    pipeline: Any = MISSING
    # Array jobs: shard=i num_shards=n traces items i, i+n, ...; then pipeline.stages=[score,hard,merge,...].
    shard: int = 0
    num_shards: int = 1
    # The diversity figure generate.py returns to an Optuna sweep.
    optimized_metric: str = "mean_pairwise_cosine_distance"


@dataclass
class EvaluateConf(_EntryConf):
    model: Any = MISSING
    engine: Any = MISSING
    budget: Any = MISSING
    eval: Any = MISSING
    trainer: Any = MISSING
    include_base: bool = True
    # Adapter dirs (a train run's RUN_DIR/adapter); each is evaluated as base + adapter.
    adapters: list[str] = field(default_factory=list)


@dataclass
class StudyEntryConf:
    """`python -m mvqa.study` (conf/study.yaml): the study group's keys are typed by mvqa/schemas/study.py."""

    seed: int = 0  # the arms' selection seed (each fine-tune's seed is one of study.seeds)
    paths: PathsConf = field(default_factory=PathsConf)
    study: Any = MISSING
    logger: Any = MISSING


SCHEMAS = {"schema_train": TrainConf, "schema_generate": GenerateConf, "schema_evaluate": EvaluateConf,
           "schema_study_entry": StudyEntryConf}
