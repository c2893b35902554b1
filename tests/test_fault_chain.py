"""The whole curation chain driven through faults: nothing lost, nothing doubled. The runs that are killed or
started together are real generate.py processes; the resumes and the clean reference runs are generate.py's
entry run in this process (the `entry` fixture), reading what the killed processes left on disk.

Faults: two runs started at once on one cache, a kill -9 mid-trace, then a resume; the input holds exact
duplicate rows, a row whose image is missing and one whose image is corrupt. The final set must equal an
uninterrupted run's on a clean cache. Then a kill -9 mid-score and its resume, and the scorer retrained in
place (same path, new weights): its scores are recomputed, never taken stale from the cache.
"""

from __future__ import annotations

import hashlib
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
from mvqa.data.storage import read_items_jsonl
from mvqa.data.synthetic import read_synthetic

TINY = [
    "scorer_model.size=unit",
    "scorer_model.path=null",
    "reasoner.size=unit",
    "reasoner.path=null",
    "pipeline.trace.max_new_tokens=12",
    "pipeline.trace.batch_size=2",
    "pipeline.trace.progress=false",
    "scorer.progress=false",
    "scorer.fraction=1.0",
    "logger=none",
    "sampler=random",
    "sampler.n=100",
    "pipeline.stages=[score,hard,trace,sample,export]",
    "pipeline.export.require_images=true",
]


def _faulty_input(tmp_path: Path) -> tuple[Path, Path]:
    """The tiny world's train CSV plus 3 exact repeats, a row with a missing image and one with a corrupt
    one."""
    read_synthetic(str(tmp_path / "world"), n_train=24, n_val=4, n_test=4, image_size=32)
    world = next((tmp_path / "world").glob("*/train.csv")).parent
    frame = pd.read_csv(world / "train.csv", dtype=str, keep_default_na=False)
    missing, corrupt = frame.iloc[[3]].copy(), frame.iloc[[4]].copy()
    missing[["id", "Figure_path"]] = ["bad-missing", "no-such.png"]
    corrupt[["id", "Figure_path"]] = ["bad-corrupt", "corrupt.png"]
    (world / "images" / "corrupt.png").write_bytes(b"\x89PNG not really")
    pd.concat([frame, frame.iloc[[0, 5, 9]], missing, corrupt]).to_csv(tmp_path / "input.csv", index=False)
    return tmp_path / "input.csv", world / "images"


def _overrides(tmp_path: Path, run: str, cache: str, data: Path, images: Path,
               extra: tuple[str, ...] = ()) -> list[str]:
    return [
        *TINY,
        *extra,
        "dataset=pmc_vqa",
        f"dataset.path={data}",
        f"dataset.image_root={images}",
        "dataset.on_bad_image=skip",
        "dataset.extra_columns=[trace]",
        f"pipeline.cache_dir={tmp_path / cache}",
        f"hydra.run.dir={tmp_path / run}",
    ]


def _generate(tmp_path: Path, *args) -> subprocess.Popen:
    """`python generate.py` with `_overrides(tmp_path, *args)`, on one OpenMP thread like the runs here."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "generate.py"), *_overrides(tmp_path, *args)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _output(proc: subprocess.Popen) -> str:
    return proc.communicate(timeout=600)[0]


# The in-process runs on one thread, like the spawned ones (OMP_NUM_THREADS=1): a resume continues the
# killed run's work, and the bytes must equal a clean run's.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_concurrent_start_kill_mid_trace_and_bad_rows_end_in_the_uninterrupted_set(tmp_path, entry):
    data, images = _faulty_input(tmp_path)
    # 1. Two runs of one curation on one cache, started together: one writes, the other stops naming it.
    # One item a batch, longer outputs: the trace lasts long enough for the other run to meet the lock
    # and for the kill.
    one_by_one = ("pipeline.trace.batch_size=1", "pipeline.trace.max_new_tokens=48")
    first, second = (_generate(tmp_path, run, "stages", data, images, one_by_one) for run in ("a", "b"))
    partial, deadline = None, time.time() + 400
    while time.time() < deadline:
        partial = next((tmp_path / "stages").glob("trace-*/items.partial.jsonl"), None)
        still_running = [p.poll() is None for p in (first, second)]
        if partial and len(partial.read_text().splitlines()) >= 4 and sum(still_running) == 1:
            break  # the writer is mid-trace and the other run has stopped at the lock
        if not any(still_running):
            break
        time.sleep(0.05)
    running = [p for p in (first, second) if p.poll() is None]
    stopped = [p for p in (first, second) if p.poll() is not None]
    assert len(running) == 1 == len(stopped), "both runs were still going, or both ended"
    loser = _output(stopped[0])
    assert stopped[0].returncode != 0
    assert f"is being written by pid {running[0].pid}; wait or use another cache" in loser

    # 2. kill -9 of the writer mid-trace.
    os.kill(running[0].pid, signal.SIGKILL)
    running[0].wait()
    done_before = len(partial.read_text().splitlines())
    assert 4 <= done_before < 24 and not (partial.parent / "items.jsonl").exists()

    # 3. The resume on the same cache, and a clean uninterrupted run on another.
    log_resumed = entry("generate", *_overrides(tmp_path, "resumed", "stages", data, images, one_by_one),
                        cwd=tmp_path).out
    entry("generate", *_overrides(tmp_path, "fresh", "fresh-stages", data, images, one_by_one), cwd=tmp_path)

    # The console tells the story of the bad rows: one line, counts and reasons.
    assert "load: 29 -> 24 (dropped corrupt_image: 1, duplicate_row: 3, missing_image: 1)" in log_resumed
    assert "dropped 3 rows that repeat an earlier row exactly" in log_resumed
    trace_stats = json.loads(next((tmp_path / "resumed" / "stages").glob("*_trace/stats.json")).read_text())
    assert trace_stats["metrics"]["resumed"] >= done_before - 2 and not trace_stats["cached"]

    # Nothing lost, nothing doubled: every good input item once, exactly the clean run's set and bytes.
    final = pd.read_csv(tmp_path / "resumed" / "final.csv", keep_default_na=False)
    items = read_items_jsonl(tmp_path / "resumed" / "items.jsonl")
    source = pd.read_csv(data, dtype=str, keep_default_na=False)
    good = set(source["id"]) - {"bad-missing", "bad-corrupt"}
    assert len(final) == len(items) == 24 == len({it.id for it in items})
    assert {it.id for it in items} == good
    assert len(set(zip(final["figure_path"], final["question"]))) == 24
    for name in ("final.csv", "items.jsonl"):
        assert (
            hashlib.sha256((tmp_path / "resumed" / name).read_bytes()).digest()
            == hashlib.sha256((tmp_path / "fresh" / name).read_bytes()).digest()
        ), name
    assert len(list((tmp_path / "resumed" / "images").rglob("*.png"))) == 24  # require_images held


@pytest.mark.slow
def test_kill_mid_score_then_a_scorer_retrained_at_the_same_path(tmp_path, entry):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from mvqa.curate.pipeline import stage_items
    from mvqa.models.tiny import build_tiny, tiny_conf

    data, images = _faulty_input(tmp_path)
    scorer = tmp_path / "scorer"  # a checkpoint at a path of its own, as a user's trained base would be
    shutil.copytree(build_tiny(tiny_conf("llava", size="unit", cache_dir=str(tmp_path / "built"))), scorer)
    extra = (f"scorer_model.path={scorer}", "pipeline.score.chunk_size=1")

    # 4. kill -9 mid-score: the chunks written whole are kept, the rest scored on resume.
    first = _generate(tmp_path, "s1", "stages", data, images, extra)
    partial, deadline = None, time.time() + 400
    while time.time() < deadline and first.poll() is None:
        partial = next((tmp_path / "stages").glob("score-*/score.shard-0-of-1.partial.jsonl"), None)
        if partial and len(partial.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert first.poll() is None, "the run finished before it could be killed"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    log = entry("generate", *_overrides(tmp_path, "s2", "stages", data, images, extra), cwd=tmp_path).out
    entry("generate", *_overrides(tmp_path, "s3", "clean-stages", data, images, extra), cwd=tmp_path)
    assert "items already scored" in log
    a, b = stage_items(tmp_path / "s2", "score"), stage_items(tmp_path / "s3", "score")
    assert [it.id for it in a] == [it.id for it in b] and len(a) == 24
    assert all(x.extra["p_correct"] == pytest.approx(y.extra["p_correct"], rel=1e-5) for x, y in zip(a, b))

    # 5. The scorer retrained in place: same path, same config, new weights. The score stage runs again.
    weights = scorer / "model.safetensors"
    tensors = load_file(weights)
    save_file({k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in tensors.items()},
              weights)
    entry("generate", *_overrides(tmp_path, "s4", "stages", data, images, extra), cwd=tmp_path)
    score_stats = json.loads(next((tmp_path / "s4" / "stages").glob("*_score/stats.json")).read_text())
    assert not score_stats["cached"]
    c = stage_items(tmp_path / "s4", "score")
    assert [it.id for it in c] == [it.id for it in a]
    assert any(x.extra["p_correct"] != pytest.approx(y.extra["p_correct"], rel=1e-5) for x, y in zip(a, c))
