"""Schema of the `study/` group: a data-selection study (mvqa.study), s1's Table 2 for this project."""

from __future__ import annotations

from dataclasses import dataclass, field

GROUP = "study"


@dataclass
class ArmConf:
    # How an arm picks its set from the pool of correct traces (mvqa.curate.arms):
    # diverse: the configured sampler; random: uniformly at random; hardest: the lowest p_correct (ranked
    # within
    #   each question kind); all: every item (the full-data row, not N).
    select: str = "random"
    # Keep only this hardest fraction of the pool first (by p_correct within each kind); null: no difficulty
    # filter.
    hard_fraction: float | None = None
    # Rank difficulty within each value of this item field too (content_type, modality, ...), so no question
    # type leaves the set because the scorer finds it easy throughout; null: within each kind only.
    stratify_by: str | None = None


@dataclass
class StudyConf:
    name: str = "selection"
    # Items per arm (the `all` arm takes every correct trace).
    n: int = 450
    # The arms to run, in report order; each is a key of `arms`. `random` is what every other arm is tested
    # against.
    run: list[str] = field(default_factory=lambda: ["curated", "random", "hard_only", "diverse_only", "all"])
    arms: dict[str, ArmConf] = field(default_factory=dict)
    # Fine-tunes per arm: one per seed (the seed of train.py; the selection itself uses the top-level seed).
    seeds: list[int] = field(default_factory=lambda: [0])
    # The pool's curation stages (generate.py): no `hard` and no `sample`, which are the arms' business. Drop
    # `trace` for a dataset whose items already carry traces (the synthetic world's template traces).
    pool_stages: list[str] = field(default_factory=lambda: ["score", "trace", "filter", "export"])
    # Overrides passed to each entry. The pool: generate.py (its score, trace and filter stages run once);
    # the fine-tunes: train.py, the same for every arm; the evaluation: evaluate.py (base and every arm).
    generate: list[str] = field(default_factory=list)
    train: list[str] = field(default_factory=list)
    evaluate: list[str] = field(default_factory=list)
    # Hydra launcher overrides for the fine-tunes and the evaluation, e.g. [hydra/launcher=joblib] or
    # [hydra/launcher=slurm, hydra.launcher.partition=gpu]; empty: Hydra's basic launcher (in sequence).
    launcher: list[str] = field(default_factory=list)
    # Torch threads per fine-tune job (OMP_NUM_THREADS); e.g. 1 with [hydra/launcher=joblib,
    # hydra.launcher.n_jobs=2] runs two small fine-tunes side by side on a 2-core machine. null: torch's
    # default.
    train_threads: int | None = None
    # The base as it is used (unforced, with its own prompt) beside the base forced on the grid.
    base_prompt: str | None = None


SCHEMAS = {"schema_study": StudyConf}
