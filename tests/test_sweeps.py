"""Sweeps: multirun of each entry, Optuna, the submitit local launcher, the SLURM config, run comparison."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from mvqa.config import PROJECT_ROOT

RELEASE = ["dataset=mvqa1k_release", "pipeline.stages=[filter,sample,export]", "logger=none"]


def entry(name: str, *overrides: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT_ROOT / f"{name}.py"), *overrides], cwd=cwd,
                          capture_output=True, text=True, check=False)


@pytest.mark.slow
def test_generate_2x2_multirun_then_compare_names_the_swept_keys(tmp_path):
    done = entry("generate", "-m", "sampler=random,kmeans_seed", "sampler.n=10,20", *RELEASE,
                 f"pipeline.cache_dir={tmp_path}/stages", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.name.isdigit())
    assert len(jobs) == 4
    sizes = sorted(len(pd.read_csv(j / "final.csv")) for j in jobs)
    assert sizes == [10, 10, 20, 20]
    table = subprocess.run([sys.executable, "-m", "mvqa.compare", str(tmp_path / "sweep")], cwd=PROJECT_ROOT,
                           capture_output=True, text=True, check=True).stdout
    assert "sampler" in table and "sampler.n" in table and "mean_pairwise_cosine_distance" in table


@pytest.mark.slow
def test_optuna_sweep_of_three_trials_returns_a_best_config(tmp_path):
    done = entry("generate", "hparams_search=sampler_optuna", "hydra.sweeper.n_trials=3", "sampler.n=50", *RELEASE,
                 f"pipeline.cache_dir={tmp_path}/stages", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    best = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert "best_params" in best and "sampler.question_weight" in best and "best_value" in best
    assert len([p for p in (tmp_path / "sweep").iterdir() if p.name.isdigit()]) == 3


@pytest.mark.slow
def test_submitit_local_runs_two_jobs(tmp_path):
    done = entry("generate", "-m", "hydra/launcher=submitit_local", "sampler.n=5,6", *RELEASE,
                 f"pipeline.cache_dir={tmp_path}/stages", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    summaries = [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").glob("[0-9]/summary.json"))]
    assert [s["n_final"] for s in summaries] == [5, 6]


def test_slurm_launcher_composes_and_fails_clearly_without_slurm(tmp_path):
    done = entry("generate", "-m", "hydra/launcher=slurm", "sampler.n=5", *RELEASE,
                 f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert done.returncode != 0
    assert "srun" in done.stderr or "sbatch" in done.stderr or "slurm" in done.stderr.lower()


def test_vllm_engine_without_vllm_or_gpu_says_what_is_missing(compose):
    from hydra.utils import instantiate

    cfg = compose("evaluate", ["engine=vllm"])
    with pytest.raises(Exception, match="engine=hf"):
        instantiate(cfg.engine)
