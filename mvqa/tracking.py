"""The small W&B helper every entry uses: one run per job, grouped by experiment or sweep.

A job opens its run with `start_run`, logs through it (Lightning's WandbLogger attaches to the open run) and
closes it with `finish_run`, so every job of a multirun is its own W&B run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
ARTIFACT_POLICIES = ("online", "always", "never")


def _hydra_job() -> tuple[str | None, str | None]:
    """(sweep dir name, job override string) when running under Hydra's multirun, else (None, None)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None, None
    hc = HydraConfig.get()
    if hc.mode is None or hc.mode.name != "MULTIRUN":
        return None, hc.job.override_dirname or None
    return Path(hc.sweep.dir).name, hc.job.override_dirname or None


def wandb_mode(logger_cfg: DictConfig) -> str:
    return logger_cfg.mode or os.environ.get("WANDB_MODE") or "offline"


def start_run(cfg: DictConfig, job_type: str, output_dir: str | Path) -> Any | None:
    """Open the job's W&B run (None when the logger is not wandb) with the fully resolved config."""
    logger = cfg.logger
    if logger.kind != "wandb":
        return None
    artifact_policy(logger)  # a bad value fails before the job does any work
    import wandb

    sweep, overrides = _hydra_job()
    experiment = OmegaConf.select(cfg, "experiment_name")
    group = logger.group or sweep or experiment or job_type
    os.environ.setdefault("WANDB_CACHE_DIR", str(Path(output_dir) / ".wandb-cache"))
    run = wandb.init(
        project=logger.project,
        entity=logger.entity,
        dir=str(output_dir),
        mode=wandb_mode(logger),
        group=group,
        job_type=job_type,
        name=overrides or None,
        tags=list(logger.tags),
        config=OmegaConf.to_container(cfg, resolve=True),
        reinit="finish_previous",
    )
    # Where to find this job's run without W&B (mvqa.compare, and a check that jobs are separate runs).
    info = {"id": run.id, "group": group, "name": run.name, "job_type": job_type, "mode": run.settings.mode,
            "dir": run.dir}
    (Path(output_dir) / "wandb_run.json").write_text(json.dumps(info, indent=2))
    return run


def finish_run(run: Any | None) -> None:
    if run is not None:
        run.finish()


@contextlib.contextmanager
def job_run(cfg: DictConfig, job_type: str):
    """`with job_run(cfg, "train") as run:` opens the job's run and always finishes it."""
    run = start_run(cfg, job_type, cfg.paths.output_dir)
    try:
        yield run
    finally:
        finish_run(run)


def is_online(run: Any) -> bool:
    """Whether the run syncs live (not offline, not disabled)."""
    return run.settings.mode in ("online", "run", "shared")


def artifact_policy(logger_cfg: DictConfig) -> str:
    policy = str(logger_cfg.log_artifacts)
    if policy not in ARTIFACT_POLICIES:
        raise ValueError(f"logger.log_artifacts must be one of {list(ARTIFACT_POLICIES)}, got {policy!r}")
    return policy


def wants_model_artifact(run: Any | None, logger_cfg: DictConfig) -> bool:
    """Whether the trained adapter (or model) goes to W&B as an output artifact, by `logger.log_artifacts`:
    `online` only from runs that sync live, `always` from offline runs too (staged on disk, uploaded by
    `wandb sync`), `never`."""
    if run is None:
        return False
    policy = artifact_policy(logger_cfg)
    return policy == "always" or (policy == "online" and is_online(run))


def log_artifact(run: Any | None, paths: str | Path | list, name: str, kind: str, *,
                 use: bool = False) -> None:
    """Log (or, with use=True, declare as input) files and directories as one artifact; only when W&B is on.

    W&B cannot declare inputs of an offline run: there the input is known from the run's config only."""
    if run is None:
        return
    if use and not is_online(run):
        log.info("W&B run is %s: input artifact %s not declared (its path is in the run's config)",
                 run.settings.mode, name)
        return
    import wandb

    artifact = wandb.Artifact(name=_artifact_name(name), type=kind)
    for path in map(Path, paths if isinstance(paths, list) else [paths]):
        if path.is_dir():
            artifact.add_dir(str(path), name=path.name)
        elif path.exists():
            artifact.add_file(str(path))
    run.use_artifact(artifact) if use else run.log_artifact(artifact)


def _artifact_name(name: str) -> str:
    # W&B artifact names allow alphanumerics, dashes, underscores and dots only.
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:128]
