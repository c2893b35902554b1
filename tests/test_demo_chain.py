"""The whole chain as `make demo` runs it, reduced: the demo's own bootstraps reach their held-out accuracy,
and the rest of the chain (on a slice) leaves artifacts that exist and agree with each other."""

from __future__ import annotations

import collections
import csv
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from mvqa.config import PROJECT_ROOT

# The bootstraps' held-out accuracy (200 val items of all three kinds; chance is about 0.25: a quarter of the
# mcq items, half the closed ones, none of the open ones), as recorded in the shipped checkpoints' stamps when
# `python -m mvqa.demo --retrain --ship` made them. README: the demo, measured.
BOOTSTRAP_ACCURACY = {"base": 0.50, "reasoner": 0.50}


@pytest.mark.slow
def test_reduced_demo_killed_mid_study_resumes_and_leaves_consistent_artifacts(tmp_path, capsys):
    """`make demo`'s chain on a slice, killed (kill -9, the whole process group) mid-study once its evaluation
    has finished and rerun with the same --out: every finished step is skipped, the study resumes at its
    report, and every artifact exists and agrees with the others. (A fine-tune killed in flight is redone:
    tests/test_study.py; a killed score, trace or fine-tune resumes: test_curation_pipeline, test_fault_chain,
    test_resume_mid_epoch.)"""
    out, cache = tmp_path / "demo", tmp_path / "cache"
    command = [sys.executable, "-m", "mvqa.demo", "--reduced", "--out", str(out), "--cache", str(cache),
               "--logger", "wandb"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    study = out / "study"
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        # The study's record that its evaluation finished: kill then, before the report is written.
        evaluated = study / "eval" / "study_adapters.json"
        deadline = time.monotonic() + 1200
        while not evaluated.is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert evaluated.is_file(), (tmp_path / "first.log").read_text()[-3000:]
        os.killpg(first.pid, signal.SIGKILL)  # mid-study: the demo and the study
        first.wait()
    assert "the shipped bootstrap" in (tmp_path / "first.log").read_text()  # a fresh cache takes the repo's
    assert not (study / "study.json").exists()
    done_before = {p: p.stat().st_mtime_ns for p in [*(study / "train").glob("*/metrics.json"),
                                                     study / "eval" / "predictions.jsonl"]}
    assert len(done_before) == 5

    second = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1800,
                            check=False)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    said = second.stdout + second.stderr
    assert "Accuracy per arm and budget" in said and "Selection funnel per arm" in said
    assert "reusing" in said  # the bootstraps the first run copied into the cache
    for step in ("shard0", "shard1"):  # each scored, waited for the other's scores, and traced
        assert f"{step}: finished earlier" in said
    assert "pool: finished earlier" in said and "arm curated: selected earlier, 30 items" in said
    for seed in (0, 1):
        assert f"fine-tunes, seed {seed}: finished earlier: ['curated', 'random']" in said
    assert "evaluation: finished earlier" in said
    assert "train.py" not in said and "evaluate.py" not in said and "generate.py" not in said
    # What had finished was not done again.
    assert {p: p.stat().st_mtime_ns for p in done_before} == done_before
    check_bootstraps(cache)
    check_chain(study)
    check_study_runs(study)
    from mvqa.compare import main as compare

    capsys.readouterr()
    assert compare([str(study)]) == 0
    assert "Paired: each arm against random and the base" in capsys.readouterr().out


def check_bootstraps(cache) -> None:
    # 2. Bootstraps: the shipped checkpoints were made by this world, tiny-model build and recipe,
    # reached their
    # held-out accuracy, and now sit where the demo models look for them.
    from mvqa.demo import SHIPPED, read_stamp, stamp_matches

    for name, least in BOOTSTRAP_ACCURACY.items():
        assert stamp_matches(SHIPPED / name,
                             name), f"bootstraps/{name} is stale: python -m mvqa.demo --retrain --ship"
        assert read_stamp(SHIPPED / name)["val_acc"] >= least, name
        assert stamp_matches(cache / "demo" / name, name)


def test_a_bootstrap_is_reused_only_while_its_stamp_matches(tmp_path):
    from mvqa.demo import STAMP, bootstrap_stamp, read_stamp

    assert read_stamp(tmp_path) is None  # none yet: bootstrap
    (tmp_path / STAMP).write_text("{not json")
    assert read_stamp(tmp_path) is None
    stamp = bootstrap_stamp("base")
    (tmp_path / STAMP).write_text(json.dumps(stamp))
    assert read_stamp(tmp_path) == json.loads(json.dumps(stamp))
    assert bootstrap_stamp("reasoner")["experiment_sha256"] != stamp["experiment_sha256"]
    from mvqa.demo import stamp_matches

    assert not stamp_matches(tmp_path, "base")  # a stamp without a checkpoint beside it
    (tmp_path / "config.json").write_text("{}")
    # the accuracy it recorded rides along
    (tmp_path / STAMP).write_text(json.dumps({**stamp, "val_acc": 0.6}))
    assert stamp_matches(tmp_path, "base") and not stamp_matches(tmp_path, "reasoner")
    (tmp_path / STAMP).write_text(json.dumps({**stamp, "world": ["dataset.n_train=10"]}))
    assert not stamp_matches(tmp_path, "base")
    assert {"synthetic_version", "tiny_build_version", "world"} <= stamp.keys()


def test_parallel_jobs_run_one_thread_each_and_chain_on_success(tmp_path, capsys):
    """run_parallel: jobs side by side with OMP_NUM_THREADS=1, `then` starts only after its job succeeded, and
    a failure names its log after the others finished."""
    from mvqa.demo import run_parallel

    script = tmp_path / "job.py"
    script.write_text("import os, sys, time\n"
                      "time.sleep(float(sys.argv[2]))\n"
                      "open(sys.argv[1], 'w').write(os.environ['OMP_NUM_THREADS'] + ' ' + str(time.time()))\n"
                      "sys.exit(int(sys.argv[3]))\n")
    job = lambda name, delay, code=0: (str(script), [str(tmp_path / name), str(delay), str(code)],
                                       tmp_path / name)
    run_parallel({"slow": job("slow", 1.0), "first": job("first", 0.2)}, tmp_path,
                 then={"first": ("next", job("next", 0))})
    done = {n: (tmp_path / n).read_text().split() for n in ("slow", "first", "next")}
    assert {threads for threads, _ in done.values()} == {"1"}
    assert float(done["first"][1]) <= float(done["next"][1]) < float(done["slow"][1])  # next ran beside slow
    assert "first done" in capsys.readouterr().out and (tmp_path / "next.log").is_file()
    with pytest.raises(SystemExit, match=r"bad \(exit 3; its output is in .*bad.log\)"):
        run_parallel({"bad": job("bad", 0, 3), "ok": job("ok", 0.5)}, tmp_path,
                     then={"bad": ("never", job("never", 0))})
    assert (tmp_path / "ok").is_file() and not (tmp_path / "never").exists()


def check_chain(study) -> None:
    from mvqa.data.grading import grade_output
    from mvqa.data.storage import read_items_jsonl

    # 3. The pool: every stage chained, 200 train items in, correct traces out.
    funnel = json.loads((study / "pool" / "summary.json").read_text())["funnel"]
    # (score and trace ran in two shards side by side before: the pool merges their cached output)
    assert [f["stage"] for f in funnel] == ["load", "score", "merge", "filter", "export"]
    for before, after in itertools.pairwise(funnel):
        assert after["n_in"] == before["n_out"] >= after["n_out"]
    assert funnel[0]["n_out"] == 200

    # The arms: 30 items each, every one a trace that answers its item right, of every kind the pool had.
    for arm in ("curated", "random"):
        items = read_items_jsonl(study / "arms" / arm / "items.jsonl")
        assert len(items) == 30 and len({it.id for it in items}) == 30
        assert all(grade_output(it, it.extra["raw_output"]).correct for it in items)
        with open(study / "arms" / arm / "final.csv", newline="") as f:
            assert len(list(csv.DictReader(f))) == 30
        for seed in (0, 1):  # 4. a fine-tune per arm and seed, on exactly those items
            run = study / "train" / f"{arm}-seed{seed}"
            train = json.loads((run / "metrics.json").read_text())
            assert train["n_train"] + train["n_val"] == 30 and (
                run / "adapter" / "adapter_config.json").is_file()

    # 5. One evaluation on 16 held-out items: the base once as it is used and at the 2 budget points, each of
    # the 4 fine-tunes at the 2 points.
    preds = [json.loads(line) for line in (study / "eval" / "predictions.jsonl").read_text().splitlines()]
    base = [p for p in preds if p["model"] == "base"]
    tuned = [p for p in preds if p["model"] != "base"]
    assert len(base) == 16 * 3 and len(tuned) == 4 * 16 * 2
    assert {p["budget_id"] for p in base} == {p["budget_id"] for p in tuned} | {"unforced"}
    assert all("-test-" in p["item_id"] for p in preds)  # the world's held-out split, never the arms' items
    # The held-out slice asks textbook and perception questions of every kind.
    assert {"diagnosis", "stage", "largest", "location"} <= {p["content_type"] for p in preds}
    assert {p["kind"] for p in preds} == {"mcq", "closed", "open"}
    for p in tuned:
        assert p["thinking_tokens"] <= p["budget"]["max_thinking_tokens"] and p["waits_used"] <= p["budget"][
            "num_waits"]

    # The study's report: both arms and the forced base at every point, curated paired with random and
    # the base.
    report = json.loads((study / "study.json").read_text())
    points = sorted({p["budget_id"] for p in tuned})
    assert sorted((r["arm"], r["budget_id"]) for r in report["metrics"]["rows"]) == sorted(
        (a, b) for a in ("base (forced)", "curated", "random") for b in points)
    for r in report["metrics"]["rows"]:
        assert len(r["seed_accuracies"]) == (0 if r["arm"] == "base (forced)" else 2)
        lo, hi = r["accuracy"]["ci95"]
        assert lo <= r["accuracy"]["mean"] <= hi and r["n_items"] == 16
        assert set(r["by_kind"]) == {"mcq", "closed", "open"}
    assert {(c["arm"], c["against"]) for c in report["metrics"]["comparisons"]} == {
        ("curated", "random"), ("curated", "base (forced)"), ("curated", "base (as used)"),
        ("random", "base (forced)"), ("random", "base (as used)")}
    assert all(0.0 <= c["accuracy"]["wilcoxon_p"] <= 1.0 for c in report["metrics"]["comparisons"])
    assert (study / "study_acc_vs_thinking.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (study / "study_report.md").read_text()
    assert "## Paired comparisons" in markdown and "| curated | random |" in markdown
    used = report["metrics"]["base_as_used"]["by_content_type"]  # the per-type table covers what was asked
    assert {"diagnosis", "stage", "largest"} <= set(used) and sum(t["n"] for t in used.values()) == 16


def check_study_runs(study) -> None:
    """The study's fine-tunes (one Hydra multirun of arms x seeds) and its W&B runs: one group, a job type per
    step."""
    for arm in ("curated", "random"):
        for seed in (0, 1):
            config = (study / "train" / f"{arm}-seed{seed}" / ".hydra" / "config.yaml").read_text()
            # dataset.path is arms/${experiment_name}/final.csv, resolved per job of the multirun
            assert f"experiment_name: {arm}" in config and f"seed: {seed}" in config
            assert "/arms/${experiment_name}/final.csv" in config
    from mvqa.curate.arms import stratum_of
    from mvqa.data.storage import read_items_jsonl

    pool = collections.Counter(stratum_of(it, "content_type")
                               for it in read_items_jsonl(study / "pool" / "items.jsonl"))
    selection = json.loads((study / "arms" / "curated" / "selection.json").read_text())
    # the hardest half of each question type (hard_fraction=0.5, rounded up), then 30 of those, diverse
    hard = sum(math.ceil(n / 2) for n in pool.values())
    assert selection["drop_reasons"] == {"not_hard": sum(pool.values()) - hard, "not_selected": hard - 30}
    assert (study / "wandb_group.txt").read_text().strip() == "study-selection"
    groups = {}
    for run_json in study.rglob("wandb_run.json"):
        info = json.loads(run_json.read_text())
        groups[info["job_type"]] = info["group"]
    assert set(groups) == {"generate", "train", "evaluate", "study"}, groups
    assert set(groups.values()) == {"study-selection"}, groups


def test_a_step_is_finished_earlier_only_with_its_last_write_and_the_same_overrides(tmp_path):
    from mvqa.demo import finished_earlier

    run_dir = tmp_path / "score0"
    (run_dir / ".hydra").mkdir(parents=True)
    overrides = ["dataset.limit=200", "shard=0"]
    job = ("generate.py", [*overrides, "hydra.verbose=true"], run_dir)  # hydra.* is not in Hydra's record
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    assert not finished_earlier(job)  # killed before its summary.json
    (run_dir / "summary.json").write_text("{}")
    assert finished_earlier(job)
    assert not finished_earlier(("generate.py", ["dataset.limit=100", "shard=0"], run_dir))
    assert not finished_earlier(("train.py", overrides, run_dir))  # train.py's last write is metrics.json
