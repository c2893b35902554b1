"""Sweeps: multirun of each entry, Optuna, the submitit local launcher, the SLURM config, run comparison."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml

# The entries run in this process (the `entry` fixture, tests/conftest.py): the same @hydra.main functions
# `python generate.py -m ...` calls, without a new interpreter importing torch and the rest for each test.
RELEASE = ["dataset=mvqa1k_release", "pipeline.stages=[filter,sample,export]", "logger=none"]


@pytest.mark.slow
def test_generate_2x2_multirun_then_compare_names_the_swept_keys(shared_data, entry, tmp_path, capsys):
    import logging
    import os

    from hydra.core.hydra_config import HydraConfig

    before = (HydraConfig.initialized(), list(logging.getLogger().handlers), os.getcwd())
    entry("generate", "-m", "sampler=random,kmeans_seed", "sampler.n=10,20", *RELEASE,
          f"pipeline.cache_dir={tmp_path}/stages", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    # The multirun left nothing in this process that later tests would meet: no job's HydraConfig (W&B
    # would group later runs under this sweep), no log handler writing into a job dir, the same cwd.
    assert (HydraConfig.initialized(), logging.getLogger().handlers, os.getcwd()) == before
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.name.isdigit())
    assert len(jobs) == 4
    sizes = sorted(len(pd.read_csv(j / "final.csv")) for j in jobs)
    assert sizes == [10, 10, 20, 20]
    header, lines = compare_table(tmp_path / "sweep", capsys)
    assert "sampler" in header and "sampler.n" in header
    assert "mean_pairwise_cosine_distance" in "\n".join(lines)


@pytest.mark.slow
def test_optuna_sweep_of_three_trials_returns_a_best_config(shared_data, entry, tmp_path):
    entry("generate", "hparams_search=sampler_optuna", "hydra.sweeper.n_trials=3", "sampler.n=50", *RELEASE,
          f"pipeline.cache_dir={tmp_path}/stages", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    best = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert "best_params" in best and "sampler.question_weight" in best and "best_value" in best
    assert len([p for p in (tmp_path / "sweep").iterdir() if p.name.isdigit()]) == 3


@pytest.mark.slow
def test_submitit_local_runs_two_jobs(shared_data, entry, tmp_path):
    # The launcher runs each job in a process of its own (submitit's), by design; only the entry is here.
    # The two jobs run at once and share their filter stage: the one that meets the other's lock waits for
    # the finished entry (pipeline.lock_wait_s unset: a multirun's jobs wait while the writer runs).
    entry("generate", "-m", "hydra/launcher=submitit_local", "sampler.n=5,6", *RELEASE,
          f"pipeline.cache_dir={tmp_path}/stages",
          f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    summaries = [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").glob("[0-9]/summary.json"))]
    assert [s["n_final"] for s in summaries] == [5, 6]


def test_slurm_launcher_composes_and_fails_clearly_without_slurm(shared_data, entry, tmp_path):
    # The config composed and the launcher was built: only submitit's own check for a cluster failed (a
    # composition error would be a ConfigCompositionException or MissingConfigException, not this).
    no_srun = 'Could not detect "srun", are you indeed on a slurm cluster?'
    with pytest.raises(RuntimeError, match=f"^{re.escape(no_srun)}"):
        entry("generate", "-m", "hydra/launcher=slurm", "sampler.n=5", *RELEASE,
              f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert not list((tmp_path / "sweep").glob("*/summary.json"))  # no job ran anywhere


def test_vllm_engine_without_vllm_or_gpu_says_what_is_missing(compose):
    from hydra.utils import instantiate

    cfg = compose("evaluate", ["engine=vllm"])
    with pytest.raises(Exception, match="engine=hf"):
        instantiate(cfg.engine)


def wandb_jobs(sweep, job_type: str, n: int) -> list[dict]:
    """The sweep's jobs as their W&B offline runs: one each, separate, grouped by the sweep dir's name."""
    from wandb_records import offline_run

    jobs = sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    assert len(jobs) == n
    runs = [offline_run(j) for j in jobs]
    assert len({r["id"] for r in runs}) == n
    for job, r in zip(jobs, runs):
        assert r["group"] == sweep.name and r["job_type"] == job_type
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert r["name"] == ",".join(sorted(overrides))  # Hydra's override_dirname: the job's overrides
        assert json.loads((job / "wandb_run.json").read_text())["id"] == r["id"]
        r["job"] = job
    return runs


def compare_table(sweep, capsys) -> tuple[str, list[str]]:
    from mvqa.compare import main

    capsys.readouterr()
    assert main([str(sweep), "--width", "250"]) == 0
    out = capsys.readouterr().out
    return next(line for line in out.splitlines() if line.strip().startswith("run")), out.splitlines()


@pytest.mark.slow
def test_train_2x2_multirun_is_four_wandb_runs_in_one_group_then_compare(entry, tmp_path, capsys):
    from helpers import UNIT_RUN, WORLD

    # No dataset override: dataset=auto finds no curation run under the launch dir and takes the world.
    entry("train", "-m", "recipe.lr=1e-4,3e-4", "recipe.r=4,8", "trainer.max_steps=2", *WORLD, *UNIT_RUN,
          f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    runs = wandb_jobs(tmp_path / "sweep", "train", 4)
    swept = set()
    for r in runs:
        lr, rank = r["config"]["recipe"]["lr"], r["config"]["recipe"]["r"]
        swept.add((lr, rank))
        assert f"recipe.r={rank}" in r["name"]
        assert r["config"]["dataset"]["name"] == "synthetic"  # auto resolved before W&B saw the config
        assert any("val/acc" in row for row in r["history"])
        metrics = json.loads((r["job"] / "metrics.json").read_text())
        assert metrics["global_step"] == 2 and metrics["dataset"]["name"] == "synthetic"
        assert json.loads((r["job"] / "adapter" / "adapter_config.json").read_text())["r"] == rank
    assert swept == {(1e-4, 4), (1e-4, 8), (3e-4, 4), (3e-4, 8)}
    header, lines = compare_table(tmp_path / "sweep", capsys)
    assert "recipe.lr" in header and "recipe.r" in header and "trainer.max_steps" not in header
    for r in runs:
        row = next(line for line in lines if line.strip().startswith(f"{r['job'].name} "))
        val_acc = json.loads((r["job"] / "metrics.json").read_text())["val_acc"]
        assert "val_acc" in row and f"{val_acc:.3f}" in row and str(r["config"]["recipe"]["r"]) in row


EVAL = ["model=tiny_llava", "model.size=unit", "dataset=synthetic", "dataset.n_train=16", "dataset.n_val=4",
        "dataset.n_test=4", "dataset.image_size=32", "eval.limit=2", "eval.n_bootstrap=20",
        "budget.max_thinking_tokens=[4]", "budget.max_answer_tokens=4", "trainer.enable_progress_bar=false"]


@pytest.mark.slow
def test_evaluate_2x2_multirun_is_four_wandb_runs_in_one_group_then_compare(entry, tmp_path, capsys):
    entry("evaluate", "-m", "eval.prompt=med_r1_seed,direct", "budget.num_waits=[0],[1]", *EVAL,
          f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    runs = wandb_jobs(tmp_path / "sweep", "evaluate", 4)
    assert {(r["config"]["eval"]["prompt"], tuple(r["config"]["budget"]["num_waits"])) for r in runs} == {
        ("med_r1_seed", (0,)), ("med_r1_seed", (1,)), ("direct", (0,)), ("direct", (1,))}
    for r in runs:
        assert any("base/accuracy" in row for row in r["history"])
        preds = (r["job"] / "predictions.jsonl").read_text().splitlines()
        assert len(preds) == 2 and all(json.loads(p)["budget"]["num_waits"]
                                       == r["config"]["budget"]["num_waits"][0]
                                       for p in preds)
    header, lines = compare_table(tmp_path / "sweep", capsys)
    assert "eval.prompt" in header and "budget.num_waits" in header and "budget.wait_string" not in header
    for r in runs:
        best = json.loads((r["job"] / "metrics.json").read_text())["scaling"]["base"]["performance"]
        row = next(line for line in lines if line.strip().startswith(f"{r['job'].name} "))
        assert r["config"]["eval"]["prompt"] in row and f"{best:.3f}" in row


@pytest.mark.slow
def test_evaluate_wait_string_ablation_is_three_grouped_wandb_runs_compared(entry, tmp_path, capsys):
    # s1's ablation: python evaluate.py -m budget.wait_string=Wait,Hmm,Alternatively
    entry("evaluate", "-m", "budget.wait_string=Wait,Hmm,Alternatively", "budget.num_waits=[1]", *EVAL,
          f"hydra.sweep.dir={tmp_path}/ablation", cwd=tmp_path)
    runs = wandb_jobs(tmp_path / "ablation", "evaluate", 3)
    assert [r["config"]["budget"]["wait_string"] for r in runs] == ["Wait", "Hmm", "Alternatively"]
    for r in runs:
        preds = [json.loads(p) for p in (r["job"] / "predictions.jsonl").read_text().splitlines()]
        assert preds and {p["budget"]["wait_string"] for p in preds} == {r["config"]["budget"]["wait_string"]}
        assert all(p["budget_id"].endswith(f"_w1_{r['config']['budget']['wait_string']}") for p in preds)
    header, lines = compare_table(tmp_path / "ablation", capsys)
    assert "budget.wait_string" in header and "budget.num_waits" not in header
    for r in runs:
        row = next(line for line in lines if line.strip().startswith(f"{r['job'].name} "))
        assert r["config"]["budget"]["wait_string"] in row
