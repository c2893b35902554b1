"""`make demo`: the whole chain on the embedded default, offline, as the commands a user would type.

synthetic world -> bootstrap the tiny base and reasoner -> the selection study (mvqa.study): a pool of correct
traces, `curated` (hard -> diverse) and `random` sets of the same N, each LoRA fine-tuned on its traces with
Waits, evaluated with the base across thinking budgets -> the study's report.

Each step runs its entry (`train.py`, `generate.py`, `evaluate.py`) in a subprocess with its run dir under
`outputs/demo/<time>/` (the two bootstraps side by side, one thread each); bootstrapped checkpoints are kept
in the cache and reused by later demos while their stamp (world and tiny-build versions, world size,
experiment config) still matches.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from mvqa.config import PROJECT_ROOT

# 2,000 train / 200 val / 300 test items: what the bootstraps need to reach their held-out accuracy.
WORLD = ["dataset.n_train=2000", "dataset.n_val=200", "dataset.n_test=300"]
SIZES = {
    # Sized for 10 minutes on 2 cores: a pool of the first 1,000 train items, 200 per arm, 100 held out.
    "full": {
        "curate": ["dataset.limit=1000", "pipeline.trace.max_new_tokens=128"],
        "study_n": 200,
        "study_seeds": "[0]",
        "finetune": [],
        "evaluate": ["budget.max_thinking_tokens=[64,128]", "budget.num_waits=[0,1]", "eval.limit=100"],
    },
    # CI's integration test: the same world and bootstraps (their accuracy is part of what it checks), the
    # rest of the chain on a slice: a pool of 200 items, 30 per arm and two seeds, short fine-tunes, 16
    # held-out items (every kind, eight of the nine question types) at 32 thinking tokens, 0 and 1 Waits.
    "reduced": {
        "curate": ["dataset.limit=200", "pipeline.trace.max_new_tokens=128"],
        "study_n": 30,
        "study_seeds": "[0,1]",
        "finetune": ["trainer.max_steps=20"],
        "evaluate": [
            "budget.max_thinking_tokens=[32]",
            "budget.num_waits=[0,1]",
            "eval.limit=16",
            "eval.n_bootstrap=200",
        ],
    },
}
# Tiny models generate on CPU where each decoding step's fixed cost dominates: 32 rows a step instead of the
# default 8 (sized for 7B models on a GPU) makes budget-forced evaluation 1.7x faster, same outputs.
GENERATE_BATCH = ["engine.batch_size=32"]
# The demo models answer with the option text: the base scores difficulty with the prompt and answer form it
# was taught, and the normalised filter maps the reasoner's text answers to letters. The base is judged both
# ways: over the budget grid like the fine-tune (s1's protocol) and once as it is used (its direct prompt,
# unforced).
CURATE = [
    "scorer.prompt=direct_text",
    "scorer.continuation=tagged_text",
    "scorer.stratify_by=content_type",
    "pipeline.filter.mode=normalised",
    *GENERATE_BATCH,
    "pipeline.trace.batch_size=64",
]
EVALUATE = ["eval.base_prompt=direct_text", "eval.base_budget=both", *GENERATE_BATCH, "eval.batch_size=64"]


def command(entry: str, overrides: list[str], run_dir: Path) -> list[str]:
    print(f"\n$ python {entry} {' '.join(shlex.quote(o) for o in overrides)}", flush=True)
    return [sys.executable, str(PROJECT_ROOT / entry), *overrides, f"hydra.run.dir={run_dir}"]


def run(entry: str, overrides: list[str], run_dir: Path, log: Path) -> None:
    start = time.perf_counter()
    with open(log, "a") as f:
        done = subprocess.run(
            command(entry, overrides, run_dir),
            check=False,
            cwd=PROJECT_ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    if done.returncode:
        sys.exit(f"{entry} failed (exit {done.returncode}); its output is in {log}")
    print(f"  done in {time.perf_counter() - start:.0f} s -> {run_dir}", flush=True)


Job = tuple[str, list[str], Path]  # entry, overrides, run dir
SHARDS = 2  # the pool's score and trace shards, one per core
SHARD_WAIT_S = (
    600  # how long a shard that has scored its half waits for the other's (they take the same time)
)
PROGRESS_EVERY_S = 30
# The line the bootstraps print (callbacks.progress_every_s: mvqa.train.callbacks.ProgressLine).
_PROGRESS = re.compile(r"^progress: (.*)$", re.MULTILINE)


def progress(log: Path) -> str:
    """The job's latest progress line (epoch, step, elapsed, ETA), or what it is doing before its first."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 8192))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return "starting"
    lines = _PROGRESS.findall(tail)
    if lines:
        return lines[-1] + ("; validating" if "Validation" in tail[-2000:] else "")
    # No progress line (yet, or a job without one, like scoring): the log's last line, shortened.
    last = [line.strip() for line in tail.replace("\r", "\n").splitlines() if line.strip()]
    return last[-1][:100] if last else "starting"


def finished_earlier(job: Job) -> bool:
    """The job's run dir holds a finished run of exactly these overrides (Hydra's record of them)."""
    import yaml

    from mvqa.study import LAST_WRITE

    entry, overrides, run_dir = job
    try:
        recorded = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return (run_dir / LAST_WRITE[entry]).is_file() and recorded == [
        o for o in overrides if not o.startswith("hydra.")
    ]


def run_parallel(
    jobs: dict[str, Job], out: Path, then: dict[str, tuple[str, Job]] | None = None, resume: bool = True
) -> None:
    """Run entries side by side, one torch thread each, each logging to out/<name>.log; `then[name]` is a job
    that starts once `name` has succeeded. With `resume`, a job whose run dir holds a finished run of the same
    overrides is not run again.

    On the demo's 2 cores two one-thread runs finish sooner than the same two in turn on two threads each
    (small matrices gain little from a second thread), and one thread per run makes their numbers the same on
    any machine: the bootstraps' accuracy moved with torch's thread count."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    then, clock, failed, running = dict(then or {}), time.perf_counter(), [], {}
    with contextlib.ExitStack() as stack:

        def launch(name: str, job: Job) -> None:
            entry, overrides, run_dir = job
            if resume and finished_earlier(
                job
            ):  # a rerun of the demo with the same --out resumes after this job
                print(f"  {name}: finished earlier -> {run_dir}", flush=True)
                if name in then:
                    launch(*then.pop(name))
                return
            log = stack.enter_context(open(out / f"{name}.log", "a"))
            running[name] = (
                subprocess.Popen(
                    command(entry, overrides, run_dir),
                    cwd=PROJECT_ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                ),
                log.name,
                run_dir,
            )

        for name, job in jobs.items():
            launch(name, job)
        shown = time.perf_counter()
        while running:
            time.sleep(0.5)
            if (
                time.perf_counter() - shown >= PROGRESS_EVERY_S
            ):  # the logs fill up; the terminal hears how far
                shown = time.perf_counter()
                for name, (_, log_name, _) in running.items():
                    print(f"  [{shown - clock:4.0f} s] {name}: {progress(Path(log_name))}", flush=True)
            for name, (proc, log_name, run_dir) in list(running.items()):
                if (code := proc.poll()) is None:
                    continue
                del running[name]
                if code:
                    failed.append(f"{name} (exit {code}; its output is in {log_name})")
                    continue
                print(f"  {name} done at {time.perf_counter() - clock:.0f} s -> {run_dir}", flush=True)
                if name in then:
                    launch(*then.pop(name))
    if failed:
        sys.exit("failed: " + "; ".join(failed))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="demo dir (default outputs/demo/<time>)")
    parser.add_argument(
        "--cache", default=None, help="paths.cache for every step (bootstraps are kept there)"
    )
    parser.add_argument(
        "--logger", default="wandb", help="wandb (offline unless WANDB_MODE says so) | csv | none"
    )
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="bootstrap the base and reasoner again instead of reusing the cached or shipped ones",
    )
    parser.add_argument(
        "--ship",
        action="store_true",
        help=f"copy the bootstraps into {SHIPPED.name}/ (the repository's), to commit",
    )
    parser.add_argument(
        "--bootstraps-only",
        action="store_true",
        help="stop after the bootstraps (with --retrain --ship: remake the shipped ones)",
    )
    parser.add_argument(
        "--reduced",
        action="store_true",
        help="CI: the same world and bootstraps, the rest of the chain on a slice",
    )
    args = parser.parse_args(argv)
    sizes = SIZES["reduced" if args.reduced else "full"]
    out = (args.out or PROJECT_ROOT / "outputs" / "demo" / time.strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "demo.log"
    common = [f"logger={args.logger}", *([f"paths.cache={args.cache}"] if args.cache else [])]
    cache = Path(args.cache) if args.cache else PROJECT_ROOT / ".cache"

    print("== 1. the synthetic world")
    from mvqa.config import setup

    setup()
    show_world(cache, WORLD)

    print("\n== 2. bootstrap the tiny base ('LLaVA-Med', answers directly) and reasoner ('Med-R1', thinks)")
    # Where model=demo_base and model@reasoner=demo_reasoner look by default.
    base, reasoner = cache / "demo" / "base", cache / "demo" / "reasoner"
    jobs = {}
    for name, path in (("base", base), ("reasoner", reasoner)):
        shipped = SHIPPED / name
        if not args.retrain and stamp_matches(path, name):
            print(
                f"  reusing {path} (held-out accuracy {stamp_accuracy(path)}; delete it, or pass "
                "--retrain, to bootstrap again)"
            )
        elif not args.retrain and stamp_matches(shipped, name):
            copy_checkpoint(shipped, path)
            print(
                f"  {name}: the shipped bootstrap {shipped.relative_to(PROJECT_ROOT)} (made by this recipe: "
                f"held-out accuracy {stamp_accuracy(shipped)}) -> {path}"
            )
        else:
            if (path / "config.json").is_file() or (shipped / "config.json").is_file():
                print(
                    f"  {name}: the kept bootstrap was made for another world, tiny-model build or recipe: "
                    "bootstrapping again"
                )
            jobs[f"bootstrap_{name}"] = (
                "train.py",
                [
                    f"experiment=demo/{name}",
                    *common,
                    *WORLD,
                    f"export_dir={path}",
                    f"callbacks.progress_every_s={PROGRESS_EVERY_S}",
                ],
                out / f"bootstrap_{name}",
            )
    run_parallel(jobs, out, resume=False)  # the stamps decide what is reused
    for job in jobs:
        name = job.removeprefix("bootstrap_")
        val_acc = json.loads((out / job / "metrics.json").read_text()).get("val_acc")
        (cache / "demo" / name / STAMP).write_text(
            json.dumps({**bootstrap_stamp(name), "val_acc": val_acc}, indent=2)
        )
        print(f"  {name}: held-out accuracy {read_metric(out / job, 'val_acc')}")
    if args.ship:
        for name in ("base", "reasoner"):
            copy_checkpoint(cache / "demo" / name, SHIPPED / name)
            print(f"  shipped {cache / 'demo' / name} -> {SHIPPED / name}: commit it")
    if args.bootstraps_only:
        return out

    print(
        "\n== 3. the pool's difficulty (the base scores) and traces (the reasoner), two shards side by side"
    )
    # Two one-thread shards use both cores where one generate.py would use one (decoding a tiny model gains
    # little from a second thread); the study's pool then merges them from the stage cache. Difficulty is
    # normalised over the whole pool, so each shard waits for the other's scores before it traces.
    curate = [
        *common,
        *WORLD,
        *CURATE,
        *sizes["curate"],
        f"scorer_model.path={base}",
        f"reasoner.path={reasoner}",
        f"pipeline.cache_dir={out}/stages",
        f"num_shards={SHARDS}",
    ]
    run_parallel(
        {
            f"shard{k}": (
                "generate.py",
                [
                    *curate,
                    f"shard={k}",
                    "pipeline.stages=[score,trace]",
                    f"pipeline.score.wait_for_shards_s={SHARD_WAIT_S}",
                ],
                out / f"shard{k}",
            )
            for k in range(SHARDS)
        },
        out,
    )

    print(
        "\n== 4-6. the selection study: one pool of correct traces, `curated` vs `random` at the same N, "
        "each\n        LoRA fine-tuned alike, evaluated with the base (forced and as it is used) across "
        "thinking budgets"
    )
    study = out / "study"
    run_study_step(curate, sizes, common, base, study, log)
    print(
        f"report: {study / 'study_report.md'}\nplot:   {study / 'study_acc_vs_thinking.png'}\nlog:    {log}"
    )
    return out


def run_study_step(
    curate: list[str], sizes: dict, common: list[str], base: Path, study: Path, log: Path
) -> None:
    """`python -m mvqa.study` with the demo's models: its pool reuses the difficulty scored in step 2 (same
    stage cache); the two fine-tunes run side by side, one thread each."""

    def hydra_list(overrides: list[str]) -> str:
        return "[" + ",".join(f'"{o}"' for o in overrides) + "]"

    overrides = [
        f"hydra.run.dir={study}",
        f"study.n={sizes['study_n']}",
        "study.run=[curated,random]",
        f"study.pool_stages=[score,{'merge' if SHARDS > 1 else 'trace'},filter,export]",
        f"study.seeds={sizes['study_seeds']}",
        "study.arms.curated.hard_fraction=0.5",
        "study.arms.curated.stratify_by=content_type",
        "study.base_prompt=direct_text",
        "study.launcher=" + hydra_list(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]),
        "study.train_threads=1",
        "study.generate=" + hydra_list([o for o in curate if not o.startswith("logger=")]),
        "study.train="
        + hydra_list(
            [
                "model=demo_base",
                f"model.path={base}",
                "experiment=demo/finetune",
                f"callbacks.progress_every_s={PROGRESS_EVERY_S}",
                *sizes["finetune"],
                *[o for o in common if o.startswith("paths.")],
            ]
        ),
        "study.evaluate="
        + hydra_list(
            [
                "model=demo_base",
                f"model.path={base}",
                *WORLD,
                *EVALUATE,
                *sizes["evaluate"],
                *[o for o in common if o.startswith("paths.")],
            ]
        ),
        *[o for o in common if o.startswith("logger=")],
    ]
    print(f"\n$ python -m mvqa.study {' '.join(shlex.quote(o) for o in overrides)}", flush=True)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its lines reach a log as they happen, not at the end
    done = subprocess.run(
        [sys.executable, "-m", "mvqa.study", *overrides], cwd=PROJECT_ROOT, check=False, env=env
    )
    if done.returncode:
        sys.exit(
            f"the study failed (exit {done.returncode}); rerun the demo with the same --out to resume it"
        )
    print(f"  study done in {time.perf_counter() - start:.0f} s -> {study}", flush=True)


def show_world(cache: Path, world: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from mvqa.config import CONFIG_DIR
    from mvqa.data.loading import load_dataset

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("generate", [f"paths.cache={cache}", "paths.output_dir=.", *world])
    for split in ("train", "val", "test"):
        items, stats = load_dataset(cfg.dataset, split=split)
        meta = stats.metrics.get("synthetic_split", {})
        print(
            f"  {split}: {len(items)} items; "
            + "; ".join(f"{k}: {v}" for k, v in meta.items() if isinstance(v, dict))
        )
    print(f"  world dir: {stats.metrics.get('synthetic_world')}")


STAMP = "demo_bootstrap.json"
# Bootstrapped checkpoints kept in the repository (a few MB each), made by `python -m mvqa.demo --retrain
# --ship`: a fresh clone's demo copies them into the cache while their stamp matches, instead of training them
# again.
SHIPPED = PROJECT_ROOT / "bootstraps"


def stamp_matches(path: Path, name: str) -> bool:
    """A checkpoint made by this world, tiny-model build and recipe (the stamp also records its accuracy)."""
    stamp, expected = read_stamp(path), bootstrap_stamp(name)
    return (
        (path / "config.json").is_file()
        and stamp is not None
        and all(stamp.get(k) == json.loads(json.dumps(v)) for k, v in expected.items())
    )


def copy_checkpoint(src: Path, dst: Path) -> None:
    """src -> dst through a temporary sibling renamed into place, so a kill never leaves half a checkpoint."""
    import shutil

    from mvqa.data.storage import atomic_dir

    with atomic_dir(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.ckpt", "checkpoints"))


def bootstrap_stamp(name: str) -> dict:
    """What a reusable bootstrap must have been made from: the world and tiny-build versions, the world's size
    and the experiment's config text."""
    from mvqa.config import CONFIG_DIR
    from mvqa.data.synthetic import VERSION
    from mvqa.models.tiny import BUILD_VERSION

    recipe = (CONFIG_DIR / "experiment" / "demo" / f"{name}.yaml").read_text()
    return {
        "synthetic_version": VERSION,
        "tiny_build_version": BUILD_VERSION,
        "world": WORLD,
        "experiment_sha256": hashlib.sha256(recipe.encode()).hexdigest(),
    }


def read_stamp(path: Path) -> dict | None:
    try:
        return json.loads((path / STAMP).read_text())
    except (OSError, ValueError):
        return None


def figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def stamp_accuracy(path: Path) -> str:
    return figure((read_stamp(path) or {}).get("val_acc"))


def read_metric(run_dir: Path, key: str) -> str:
    return figure(json.loads((run_dir / "metrics.json").read_text()).get(key))


if __name__ == "__main__":
    main()
