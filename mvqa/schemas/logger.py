"""Schema of the `logger/` group, shared by the three entries."""

from __future__ import annotations

from dataclasses import dataclass, field

GROUP = "logger"


@dataclass
class LoggerConf:
    # wandb | csv | none. Local files (metrics JSON, stats, reports) are written in every case; training's
    # step metrics go to RUN_DIR/csv/metrics.csv with csv and wandb, nowhere else with none.
    kind: str = "wandb"
    project: str = "mvqa"
    entity: str | None = None
    # online | offline | disabled; null reads WANDB_MODE and falls back to offline, so nothing needs a login.
    mode: str | None = None
    # null: the experiment name, or the sweep dir's name in a multirun.
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    # The trained adapter (or full model) as an output artifact: online (only from runs that sync live),
    # always (offline runs too: staged on disk, uploaded by `wandb sync`), never. Curated sets are logged
    # always.
    log_artifacts: str = "online"


SCHEMAS = {"schema_logger": LoggerConf}
