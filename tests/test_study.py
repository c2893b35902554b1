"""The data-selection study end to end on the synthetic world and unit-size models: pool, arms of N,
fine-tunes
per arm and seed through Hydra's multirun, one evaluation, the report; and a resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from mvqa.config import PROJECT_ROOT

WORLD = ["dataset.n_train=48", "dataset.n_val=4", "dataset.n_test=30", "dataset.image_size=32"]
UNIT = ["model=tiny_llava", "model.size=unit"]


def hydra_list(overrides: list[str]) -> str:
    return "[" + ",".join(f"'{o}'" for o in overrides) + "]"


def study_command(study_dir: Path) -> list[str]:
    # The world's template traces are the pool's traces (no trace stage): every one is correct, so the arms
    # pick from all 48 items; unit-size random models keep each fine-tune to a few seconds.
    return [
        sys.executable,
        "-m",
        "mvqa.study",
        f"hydra.run.dir={study_dir}",
        "study.n=8",
        "study.seeds=[0,1]",
        "study.run=[curated,random]",
        "study.pool_stages=[score,filter,export]",
        "logger=wandb",
        "study.generate="
        + hydra_list([*WORLD, "scorer_model.size=unit", "scorer_model.path=null", "scorer.progress=false"]),
        "study.train="
        + hydra_list(
            [
                *UNIT,
                "data.batch_size=4",
                "data.val_max_new_tokens=8",
                "data.max_length=768",
                "trainer.max_steps=2",
                "trainer.enable_progress_bar=false",
            ]
        ),
        "study.evaluate="
        + hydra_list(
            [
                *WORLD,
                *UNIT,
                "budget.max_thinking_tokens=[4,8]",
                "budget.num_waits=[0]",
                "eval.n_bootstrap=50",
                "trainer.enable_progress_bar=false",
            ]
        ),
    ]


@pytest.mark.slow
def test_a_killed_study_resumes_and_reports_every_arm(tmp_path):
    study = tmp_path / "study"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(
        study_command(study),
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    finished = study / "train" / "curated-seed0" / "metrics.json"  # the fine-tune's last write
    deadline = time.monotonic() + 900
    while not finished.is_file() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert finished.is_file(), (tmp_path / "first.log").read_text()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)  # mid-study: the first fine-tune is done, the others are not
    first.wait()
    stamp = finished.stat().st_mtime_ns
    assert not (study / "study.json").exists()

    second = subprocess.run(
        study_command(study),
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-4000:]
    assert "pool: finished earlier" in out and "arm curated: selected earlier, 8 items" in out
    assert "fine-tunes, seed 0: finished earlier: ['curated']" in out
    assert finished.stat().st_mtime_ns == stamp  # the finished arm was not trained again

    # Both arms trained on N items each, from one pool, with the same selection seed.
    for arm in ("curated", "random"):
        final = pd.read_csv(study / "arms" / arm / "final.csv", keep_default_na=False)
        assert len(final) == 8 and final["figure_path"].is_unique
        for seed in (0, 1):
            run = study / "train" / f"{arm}-seed{seed}"
            assert (run / "adapter" / "adapter_config.json").is_file()
            config = (run / ".hydra" / "config.yaml").read_text()
            # dataset.path is arms/${experiment_name}/final.csv, resolved per job of the multirun
            assert f"experiment_name: {arm}" in config and f"seed: {seed}" in config
            assert "/arms/${experiment_name}/final.csv" in config
            metrics = json.loads((run / "metrics.json").read_text())
            assert metrics["n_train"] + metrics["n_val"] == 8, metrics
    selection = json.loads((study / "arms" / "curated" / "selection.json").read_text())
    assert selection["drop_reasons"] == {"not_hard": 24, "not_selected": 16}  # hard half of 48, then 8 of 24

    report = json.loads((study / "study.json").read_text())
    rows = report["metrics"]["rows"]
    assert {(r["arm"], r["budget_id"]) for r in rows} == {
        (a, b)
        for a in ("base (forced)", "curated", "random")
        for b in ("max4_min0_w0_Wait", "max8_min0_w0_Wait")
    }
    for r in rows:
        lo, hi = r["accuracy"]["ci95"]
        assert lo <= r["accuracy"]["mean"] <= hi and r["n_items"] == 30
        assert len(r["seed_accuracies"]) == (0 if r["arm"] == "base (forced)" else 2)
        assert set(r["by_kind"]) == {"mcq", "closed", "open"}
    pairs = {(c["arm"], c["against"]) for c in report["metrics"]["comparisons"]}
    assert pairs == {
        ("curated", "random"),
        ("curated", "base (forced)"),
        ("curated", "base (as used)"),
        ("random", "base (forced)"),
        ("random", "base (as used)"),
    }
    assert all(0.0 <= c["accuracy"]["wilcoxon_p"] <= 1.0 for c in report["metrics"]["comparisons"])
    as_used = report["metrics"]["base_as_used"]  # the base unforced, on the same 30 items
    assert as_used["accuracy"]["n"] == 30 and set(as_used["by_kind"]) == {"mcq", "closed", "open"}
    assert (study / "study_acc_vs_thinking.png").stat().st_size > 10_000
    markdown = (study / "study_report.md").read_text()
    assert "## Paired comparisons" in markdown and "| curated | random |" in markdown
    # One W&B group for the whole study, a job type per step.
    assert (study / "wandb_group.txt").read_text().strip() == "study-selection"
    groups = {}
    for run_json in study.rglob("wandb_run.json"):
        info = json.loads(run_json.read_text())
        groups[info["job_type"]] = info["group"]
    assert set(groups) == {"generate", "train", "evaluate", "study"}, groups
    assert set(groups.values()) == {"study-selection"}, groups

    compare = subprocess.run(
        [sys.executable, "-m", "mvqa.compare", str(study)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "Paired: each arm against random and the base" in compare.stdout and "curated" in compare.stdout


def test_a_fine_tune_killed_after_its_adapter_but_before_metrics_is_redone(tmp_path):
    from mvqa.study import train_dir, unfinished_fine_tunes

    for arm in ("curated", "random"):
        adapter = train_dir(tmp_path, arm, 0) / "adapter"
        adapter.mkdir(parents=True)
        (adapter / "adapter_config.json").write_text("{}")
    (train_dir(tmp_path, "curated", 0) / "metrics.json").write_text("{}")  # only curated got its last write
    assert unfinished_fine_tunes(tmp_path, ["curated", "random"], 0) == ["random"]
    assert unfinished_fine_tunes(tmp_path, ["curated", "random"], 1) == ["curated", "random"]
