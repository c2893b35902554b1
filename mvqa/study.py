"""The data-selection study in one command: curated vs random (and more arms), trained and evaluated alike.

    python -m mvqa.study                                   # study=selection on the embedded default
    python -m mvqa.study study.n=200 'study.seeds=[0,1,2]' 'study.run=[curated,random]'
    python -m mvqa.study 'study.launcher=[hydra/launcher=slurm,hydra.launcher.partition=gpu]' \\
        'study.train=[model=llava_med,data.max_length=1024,gradient_checkpointing=true]'

Reads top to bottom:
1. pool: `generate.py` runs the shared stages once (score, trace, filter, export): every correct trace, with
   its difficulty.
2. arms: each arm picks its N items from the pool with the same seed (mvqa.curate.arms) and is exported as a
   curated set (`arms/<arm>/final.csv`).
3. fine-tunes: `train.py -m` over the arms and seeds (one multirun), through the configured Hydra launcher,
   the same recipe for every arm (`train/<arm>-seed<k>/`).
4. evaluation: one `evaluate.py -m` job: the base (forced on the budget grid, and as it is used) and every
   arm's adapter on the same held-out items and grid (`eval/`).
5. report: mvqa.eval.study_report (`study.json`, `study_report.md`, the plot), W&B in one group.
The study dir is stable (`outputs/study/<name>`): a rerun skips every finished step, so a killed study resumes
where it stopped and an added seed or arm trains only what is new.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mvqa.config import CONFIG_DIR, PROJECT_ROOT, setup

setup()


def entry_command(entry: str, overrides: list[str], multirun: bool = False) -> list[str]:
    return [sys.executable, str(PROJECT_ROOT / entry), *(["-m"] if multirun else []), *overrides]


def run_entry(entry: str, overrides: list[str], multirun: bool = False, threads: int | None = None) -> None:
    """One entry in a subprocess; its output streams to this console (progress, counts, drops)."""
    cmd = entry_command(entry, overrides, multirun)
    env = {
        **os.environ,
        **({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}),
    }
    print(
        f"\n$ {f'OMP_NUM_THREADS={threads} ' if threads else ''}python "
        f"{' '.join(shlex.quote(c) for c in cmd[1:])}",
        flush=True,
    )
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=PROJECT_ROOT, check=False, env=env)
    if done.returncode:
        raise SystemExit(f"study: {entry} failed (exit {done.returncode}); rerun the study to resume")
    print(f"  {entry} done in {time.perf_counter() - start:.0f} s", flush=True)


# Each entry's last write: a run dir holds it only once the run has finished (what a resume trusts).
LAST_WRITE = {"generate.py": "summary.json", "train.py": "metrics.json", "evaluate.py": "metrics.json"}


def common_overrides(cfg: DictConfig) -> list[str]:
    """What every step shares: the logger, with one W&B group for the whole study."""
    return [f"logger={cfg.logger.kind}", f"logger.group=study-{cfg.study.name}"]


def run_pool(cfg: DictConfig, study_dir: Path) -> Path:
    pool = study_dir / "pool"
    if (pool / LAST_WRITE["generate.py"]).is_file():  # the pool is complete
        print(f"pool: finished earlier ({pool})")
        return pool
    stages = ",".join(cfg.study.pool_stages)
    run_entry(
        "generate.py",
        [
            *cfg.study.generate,
            f"pipeline.stages=[{stages}]",
            *common_overrides(cfg),
            f"seed={cfg.seed}",
            f"hydra.run.dir={pool}",
        ],
    )
    return pool


def run_arms(cfg: DictConfig, pool: Path, study_dir: Path) -> dict[str, dict]:
    from mvqa.curate.arms import funnel_line, select_arm
    from mvqa.curate.export import export_curated
    from mvqa.data.storage import read_items_jsonl, write_json

    pool_cfg = OmegaConf.load(pool / ".hydra" / "config.yaml")
    items = read_items_jsonl(pool / "items.jsonl")
    funnels = {}
    for name in cfg.study.run:
        if name not in cfg.study.arms:
            raise ValueError(
                f"study.run names arm {name!r}, which study.arms does not define; "
                f"defined: {sorted(cfg.study.arms)}"
            )
        out = study_dir / "arms" / name
        if (out / "selection.json").is_file() and (out / "final.csv").is_file():
            funnels[name] = json.loads((out / "selection.json").read_text())
            print(f"arm {name}: selected earlier, {funnels[name]['n_out']} items")
            continue
        chosen, stats = select_arm(items, name, cfg.study.arms[name], cfg.study.n, cfg.seed, pool_cfg.sampler)
        export_curated(chosen, out, pool_cfg.pipeline.trace.prompt, images="copy", llava_json=True)
        funnels[name] = stats.to_dict()
        write_json(funnels[name], out / "selection.json")  # last: its presence means the arm is complete
        print(funnel_line(stats))
    return funnels


def train_dir(study_dir: Path, arm: str, seed: int) -> Path:
    return study_dir / "train" / f"{arm}-seed{seed}"


def unfinished_fine_tunes(study_dir: Path, arms, seed: int) -> list[str]:
    """The arms whose fine-tune for `seed` has no metrics.json: train.py's last write, after the adapter, so a
    run killed between the two is redone."""
    return [a for a in arms if not (train_dir(study_dir, a, seed) / LAST_WRITE["train.py"]).is_file()]


def run_fine_tunes(cfg: DictConfig, study_dir: Path) -> None:
    """The unfinished fine-tunes, one multirun per set of seeds that lack the same arms (a fresh study: one
    multirun of arms x seeds: the launcher's workers start once and take the jobs in turn, seed by seed)."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for seed in cfg.study.seeds:
        todo = unfinished_fine_tunes(study_dir, cfg.study.run, seed)
        done = [a for a in cfg.study.run if a not in todo]
        if done:
            print(f"fine-tunes, seed {seed}: finished earlier: {done}")
        if todo:
            groups.setdefault(tuple(todo), []).append(seed)
    for todo, seeds in groups.items():
        run_entry(
            "train.py",
            [
                *cfg.study.train,
                *cfg.study.launcher,
                *common_overrides(cfg),
                f"seed={','.join(map(str, seeds))}",  # before the arms: the sweep runs seed by seed
                f"experiment_name={','.join(todo)}",
                "dataset=curated",
                f"dataset.path={study_dir}/arms/${{experiment_name}}/final.csv",
                f"hydra.sweep.dir={study_dir / 'train'}",
                "hydra.sweep.subdir=${experiment_name}-seed${seed}",
            ],
            multirun=True,
            threads=cfg.study.train_threads,
        )


def run_evaluation(cfg: DictConfig, study_dir: Path) -> Path:
    adapters = [str(train_dir(study_dir, a, s) / "adapter") for a in cfg.study.run for s in cfg.study.seeds]
    out = study_dir / "eval"
    stamp = out / "study_adapters.json"
    finished = (out / LAST_WRITE["evaluate.py"]).is_file() and stamp.is_file()
    if finished and json.loads(stamp.read_text()) == adapters:
        print(f"evaluation: finished earlier ({out})")
        return out
    base_prompt = [f"eval.base_prompt={cfg.study.base_prompt}"] if cfg.study.base_prompt else []
    run_entry(
        "evaluate.py",
        [
            *cfg.study.evaluate,
            *cfg.study.launcher,
            *common_overrides(cfg),
            f"seed={cfg.seed}",
            f"adapters=[{','.join(adapters)}]",
            "eval.base_budget=both",
            *base_prompt,
            f"hydra.sweep.dir={study_dir}",
            "hydra.sweep.subdir=eval",
        ],
        multirun=True,
    )
    stamp.write_text(json.dumps(adapters))
    return out


def run_study(cfg: DictConfig, study_dir: Path) -> dict:
    from mvqa.eval.study_report import write_study_report

    study_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"study {cfg.study.name}: arms {list(cfg.study.run)}, {cfg.study.n} items each, fine-tune seeds "
        f"{list(cfg.study.seeds)}, selection seed {cfg.seed} -> {study_dir}"
    )
    pool = run_pool(cfg, study_dir)
    funnels = run_arms(cfg, pool, study_dir)
    run_fine_tunes(cfg, study_dir)
    eval_dir = run_evaluation(cfg, study_dir)
    return write_study_report(cfg, study_dir, pool, funnels, eval_dir)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="study")
def main(cfg: DictConfig) -> None:
    run_study(cfg, Path(cfg.paths.output_dir))


if __name__ == "__main__":
    main()
