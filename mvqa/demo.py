"""`make demo`: the whole chain on the embedded default, offline, as the commands a user would type.

synthetic world -> bootstrap the tiny base and reasoner -> curate -> LoRA fine-tune the base on the curated
traces with Waits -> evaluate base vs fine-tuned across thinking budgets -> print the report.

Each step runs its entry (`train.py`, `generate.py`, `evaluate.py`) in a subprocess with its run dir under
`outputs/demo/<time>/` (the two bootstraps side by side, one thread each); bootstrapped checkpoints are kept in
the cache and reused by later demos while their stamp (world and tiny-build versions, world size, experiment
config) still matches.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from mvqa.config import PROJECT_ROOT

# 2,000 train / 200 val / 300 test items: what the bootstraps need to reach their held-out accuracy.
WORLD = ["dataset.n_train=2000", "dataset.n_val=200", "dataset.n_test=300"]
SIZES = {
    "full": {
        "curate": ["sampler.n=450", "scorer.fraction=0.5", "pipeline.trace.max_new_tokens=128"],
        "finetune": [],
        "evaluate": ["budget.max_thinking_tokens=[64,128]", "budget.num_waits=[0,1]", "eval.limit=200"],
    },
    # CI's integration test: the same world and bootstraps (their accuracy is part of what it checks), the
    # rest of the chain on a slice: 200 items curated, a short fine-tune, 24 held-out items evaluated.
    "reduced": {
        "curate": ["dataset.limit=200", "sampler.n=40", "scorer.fraction=0.5", "pipeline.trace.max_new_tokens=128"],
        "finetune": ["trainer.max_steps=40"],
        "evaluate": ["budget.max_thinking_tokens=[64,128]", "budget.num_waits=[0,1]", "eval.limit=24",
                     "eval.n_bootstrap=200"],
    },
}
# Tiny models generate on CPU where each decoding step's fixed cost dominates: 32 rows a step instead of the
# default 8 (sized for 7B models on a GPU) makes budget-forced evaluation 1.7x faster, same outputs.
GENERATE_BATCH = ["engine.batch_size=32"]
# The demo models answer with the option text: the base scores difficulty with the prompt and answer form it
# was taught, and the normalised filter maps the reasoner's text answers to letters. The base is judged both
# ways: over the budget grid like the fine-tune (s1's protocol) and once as it is used (its direct prompt,
# unforced).
CURATE = ["scorer.prompt=direct_text", "scorer.continuation=tagged_text", "scorer.stratify_by=content_type",
           "pipeline.filter.mode=normalised", *GENERATE_BATCH, "pipeline.trace.batch_size=64"]
EVALUATE = ["eval.base_prompt=direct_text", "eval.base_budget=both", *GENERATE_BATCH, "eval.batch_size=64"]


def command(entry: str, overrides: list[str], run_dir: Path) -> list[str]:
    print(f"\n$ python {entry} {' '.join(shlex.quote(o) for o in overrides)}", flush=True)
    return [sys.executable, str(PROJECT_ROOT / entry), *overrides, f"hydra.run.dir={run_dir}"]


def run(entry: str, overrides: list[str], run_dir: Path, log: Path) -> None:
    start = time.perf_counter()
    with open(log, "a") as f:
        done = subprocess.run(command(entry, overrides, run_dir), check=False, cwd=PROJECT_ROOT, stdout=f,
                              stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"{entry} failed (exit {done.returncode}); its output is in {log}")
    print(f"  done in {time.perf_counter() - start:.0f} s -> {run_dir}", flush=True)


Job = tuple[str, list[str], Path]  # entry, overrides, run dir


def run_parallel(jobs: dict[str, Job], out: Path, then: dict[str, tuple[str, Job]] | None = None) -> None:
    """Run entries side by side, one torch thread each, each logging to out/<name>.log; `then[name]` is a job
    that starts once `name` has succeeded.

    On the demo's 2 cores two one-thread runs finish sooner than the same two in turn on two threads each
    (small matrices gain little from a second thread), and one thread per run makes their numbers the same on
    any machine: the bootstraps' accuracy moved with torch's thread count."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    then, clock, failed, running = dict(then or {}), time.perf_counter(), [], {}
    with contextlib.ExitStack() as stack:
        def launch(name: str, job: Job) -> None:
            entry, overrides, run_dir = job
            log = stack.enter_context(open(out / f"{name}.log", "a"))
            running[name] = subprocess.Popen(command(entry, overrides, run_dir), cwd=PROJECT_ROOT, stdout=log,
                                             stderr=subprocess.STDOUT, env=env), log.name, run_dir

        for name, job in jobs.items():
            launch(name, job)
        while running:
            time.sleep(0.5)
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
    parser.add_argument("--cache", default=None, help="paths.cache for every step (bootstraps are kept there)")
    parser.add_argument("--logger", default="wandb", help="wandb (offline unless WANDB_MODE says so) | csv | none")
    parser.add_argument("--reduced", action="store_true",
                        help="CI: the same world and bootstraps, the rest of the chain on a slice")
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
        if (path / "config.json").is_file() and read_stamp(path) == bootstrap_stamp(name):
            print(f"  reusing {path} (delete it to bootstrap again)")
        else:
            if (path / "config.json").is_file():
                print(f"  {path} was bootstrapped for another world, tiny-model build or recipe: bootstrapping again")
            jobs[f"bootstrap_{name}"] = ("train.py", [f"experiment=demo/{name}", *common, *WORLD, f"export_dir={path}"],
                                         out / f"bootstrap_{name}")
    # Difficulty needs only the base: it is scored (one thread, into the stage cache that step 3 reads) while
    # the reasoner is still training, or beside it when the base is reused.
    curate = [*common, *WORLD, *CURATE, *sizes["curate"], f"scorer_model.path={base}", f"reasoner.path={reasoner}",
              f"pipeline.cache_dir={out}/stages"]
    score: tuple[str, Job] = ("score", ("generate.py", [*curate, "pipeline.stages=[score,hard]"], out / "score"))
    if "bootstrap_base" in jobs:
        run_parallel(jobs, out, then={"bootstrap_base": score})
    else:
        run_parallel({**jobs, score[0]: score[1]}, out)
    for job in jobs:
        name = job.removeprefix("bootstrap_")
        (cache / "demo" / name / STAMP).write_text(json.dumps(bootstrap_stamp(name), indent=2))
        print(f"  {name}: held-out accuracy {read_metric(out / job, 'val_acc')}")

    print("\n== 3. curate: difficulty under the base (scored above), traces from the reasoner, correct only, diverse sample")
    run("generate.py", curate, out / "curate", log)
    summary = json.loads((out / "curate" / "summary.json").read_text())
    print("  funnel: " + " -> ".join(f"{f['stage']} {f['n_out']}" for f in summary["funnel"]))

    print("\n== 4. LoRA fine-tune the base on the curated traces, formatted with Waits")
    run("train.py", [*common, "dataset=curated", f"dataset.path={out}/curate/final.csv", "model=demo_base",
                     f"model.path={base}", "experiment=demo/finetune", *sizes["finetune"]],
        out / "finetune", log)

    print("\n== 5. evaluate base vs fine-tuned on held-out synthetic items across thinking budgets")
    run("evaluate.py", [*common, *WORLD, "model=demo_base", f"model.path={base}",
                        f"adapters=[{out}/finetune/adapter]", f"eval.exclude={out}/curate/final.csv",
                        *EVALUATE, *sizes["evaluate"]], out / "evaluate", log)
    report = out / "evaluate" / "report.md"
    print("\n" + report.read_text())
    print(f"report: {report}\nplot:   {out / 'evaluate' / 'acc_vs_thinking.png'}\nlog:    {log}")
    return out


def show_world(cache: Path, world: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from mvqa.config import CONFIG_DIR
    from mvqa.data.loading import load_dataset

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("generate", [f"paths.cache={cache}", "paths.output_dir=.", *world])
    for split in ("train", "val", "test"):
        items, stats = load_dataset(cfg.dataset, split=split)
        meta = stats.metrics.get("synthetic_split", {})
        print(f"  {split}: {len(items)} items; " + "; ".join(f"{k}: {v}" for k, v in meta.items()
                                                          if isinstance(v, dict)))
    print(f"  world dir: {stats.metrics.get('synthetic_world')}")


STAMP = "demo_bootstrap.json"


def bootstrap_stamp(name: str) -> dict:
    """What a reusable bootstrap must have been made from: the world and tiny-build versions, the world's size
    and the experiment's config text."""
    from mvqa.config import CONFIG_DIR
    from mvqa.data.synthetic import VERSION
    from mvqa.models.tiny import BUILD_VERSION

    recipe = (CONFIG_DIR / "experiment" / "demo" / f"{name}.yaml").read_text()
    return {"synthetic_version": VERSION, "tiny_build_version": BUILD_VERSION, "world": WORLD,
            "experiment_sha256": hashlib.sha256(recipe.encode()).hexdigest()}


def read_stamp(path: Path) -> dict | None:
    try:
        return json.loads((path / STAMP).read_text())
    except (OSError, ValueError):
        return None


def read_metric(run_dir: Path, key: str) -> str:
    value = json.loads((run_dir / "metrics.json").read_text()).get(key)
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
