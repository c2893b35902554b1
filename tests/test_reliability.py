"""Faults a careful user hits: a second writer, a doubled cache entry, the seed, duplicate and undecodable
rows,
images missing or linked out of their root, an adapter on another base. Each test reproduces the fault."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from mvqa.config import PROJECT_ROOT
from mvqa.curate.pipeline import CurationContext, _run_cached, lock_wait_s, run_curation
from mvqa.data.images import BadImageError, load_image
from mvqa.data.readers import read_csv_dataset, read_pmc_vqa
from mvqa.data.records import VQAItem
from mvqa.data.stats import StageStats
from mvqa.data.storage import BusyError, exclusive_lock, read_items_jsonl, write_items_jsonl

RELEASE = ["dataset=mvqa1k_release", "pipeline.stages=[filter,sample,export]", "logger=none"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------- 1. one writer
def hold_lock(lock: Path, seconds: float) -> subprocess.Popen:
    """Another process holding `lock` for `seconds`; returns once it holds it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import time; from mvqa.data.storage import exclusive_lock\n"
            f"with exclusive_lock({str(lock)!r}, 'x'):\n"
            f"    print('locked', flush=True); time.sleep({seconds})")],
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_process_on_a_locked_stage_stops_naming_the_writer_then_gets_it_once_freed(tmp_path):
    lock = tmp_path / "trace-abc" / ".lock"
    holder = hold_lock(lock, seconds=3)
    busy = rf"stage trace-abc is being written by pid {holder.pid}; wait or use"
    with pytest.raises(BusyError, match=busy), exclusive_lock(lock, "stage trace-abc"):
        pass
    start = time.monotonic()
    with exclusive_lock(lock, "stage trace-abc", wait_s=60):  # waits for the holder to let go (3 s)
        waited = time.monotonic() - start
    assert 1.5 < waited < 30
    assert holder.wait() == 0


def test_a_multirun_job_waits_while_the_writer_lives_and_says_so(tmp_path, caplog):
    # lock_wait_s=null (the default) is math.inf inside a Hydra multirun: wait as long as the writer holds
    # the lock, saying once on the console who it waits for.
    lock = tmp_path / "filter-abc" / ".lock"
    holder = hold_lock(lock, seconds=2)
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger="mvqa.data.storage"), \
            exclusive_lock(lock, "stage filter-abc", wait_s=math.inf):
        waited = time.monotonic() - start
    assert waited > 1.0 and holder.wait() == 0  # it got the lock once the writer let go, 2 s after taking it
    waits = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    said = f"stage filter-abc is being written by pid {holder.pid}: waiting while it runs (lock: {lock})"
    assert waits == [said]


@pytest.mark.parametrize(("mode", "setting", "expected"), [
    (None, None, 0.0),  # a run by hand, outside Hydra's multirun: stop at once, naming the writer
    ("RUN", None, 0.0),
    ("MULTIRUN", None, math.inf),  # a sweep's jobs share their upstream stages
    ("MULTIRUN", 0, 0.0),
    ("RUN", 30, 30.0),
])
def test_lock_wait_follows_the_setting_else_the_hydra_mode(mode, setting, expected):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"pipeline": {"lock_wait_s": setting}})
    hydra = HydraConfig.instance()
    saved = hydra.cfg
    try:
        hydra.cfg = None if mode is None else OmegaConf.create({"hydra": {"mode": RunMode[mode]}})
        assert lock_wait_s(cfg) == expected
    finally:
        hydra.cfg = saved


def test_a_stage_output_with_a_doubled_id_is_an_error_never_a_cache_entry(compose, tmp_path):
    cfg = compose("generate", [*RELEASE, f"pipeline.cache_dir={tmp_path}/stages"], tmp_path / "run")
    item = VQAItem(id="q1", image="a.png", question="?", choices=["x", "y"], answer_label="A", answer="x")
    ctx = CurationContext(cfg=cfg, output_dir=tmp_path / "run", stage_dir=tmp_path / "stages" / "trace-k")

    def doubling(items, _ctx):  # what two writers appending to one partial file produced
        return [*items, items[0]], StageStats("trace", n_in=1, n_out=2)

    with pytest.raises(ValueError, match=r"1 ids occur more than once \('q1' x2\); nothing is cached"):
        _run_cached("trace", doubling, [item], ctx)
    assert not (ctx.stage_dir / "items.jsonl").exists()
    # An entry doubled before entries were checked is refused on reading, naming what to delete.
    run_curation(cfg, tmp_path / "run")
    cached = next((tmp_path / "stages").glob("filter-*/items.jsonl"))
    items = read_items_jsonl(cached)
    write_items_jsonl([*items, items[3]], cached)
    with pytest.raises(ValueError, match=rf"cached .*{cached.parent.name}.*{items[3].id!r} x2"):
        run_curation(cfg, tmp_path / "again")


# ---------------------------------------------------------------------------------------- 3. one seed
def test_the_top_level_seed_reaches_every_component_and_changes_the_random_sample(compose, tmp_path):
    def final(seed: int | None, out: str) -> str:
        cfg = compose(
            "generate",
            [
                *RELEASE,
                "sampler=random",
                "sampler.n=50",
                "pipeline.export.images=none",
                f"pipeline.cache_dir={tmp_path}/stages",
                *([f"seed={seed}"] if seed is not None else []),
            ],
            tmp_path / out,
        )
        if seed is not None:
            assert cfg.sampler.seed == cfg.engine.seed == seed
        run_curation(cfg, tmp_path / out)
        return sha(tmp_path / out / "final.csv")

    assert final(None, "a") == final(None, "b") == final(0, "c")  # left alone: nothing changes
    assert final(1, "d") != final(2, "e") != final(0, "c")
    world = compose("generate", ["seed=7"], tmp_path / "w")
    assert world.dataset.seed == world.sampler.seed == world.engine.seed == 7
    train = compose("train", ["seed=7", "dataset=slake", "dataset.path=x"], tmp_path / "t")
    assert train.dataset.seed == 7
    # An explicit component seed still wins.
    assert compose("generate", ["seed=7", "sampler.seed=42"], tmp_path / "o").sampler.seed == 42


# ---------------------------------------------------------------------------------------- 4. duplicates
def _csv(tmp_path: Path, rows: list[list[str]], name: str = "data.csv") -> Path:
    frame = pd.DataFrame(rows, columns=["image", "question", "answer"])
    frame.to_csv(tmp_path / name, index=False)
    return tmp_path / name


COLUMNS = {"image": "image", "question": "question", "answer": "answer"}


def test_exact_duplicate_rows_are_dropped_loudly_kept_or_refused(tmp_path, caplog):
    rows = [
        ["a.png", "What is shown?", "liver"],
        ["b.png", "What is shown?", "lung"],
        ["a.png", "What is shown?", "liver"],
        ["a.png", "What is shown?", "liver"],
        ["a.png", "What is shown?", "heart"],
    ]
    path = _csv(tmp_path, rows)
    with caplog.at_level(logging.WARNING):
        items, stats = read_csv_dataset(path, COLUMNS)
    assert [it.id for it in items] == ["csv:0", "csv:1", "csv:4"]
    assert stats.drop_reasons == {"duplicate_row": 2} and stats.dropped[0]["duplicate_of"] == "csv:0"
    assert "dropped 2 rows that repeat an earlier row exactly (csv:2 = csv:0, csv:3 = csv:0)" in caplog.text
    assert "load: 5 -> 3 (dropped duplicate_row: 2)" == stats.summary()
    kept, stats = read_csv_dataset(path, COLUMNS, on_duplicate="keep")
    assert len(kept) == 5 and stats.warning_reasons == {"duplicate_row_kept": 1}
    with pytest.raises(ValueError, match=r"2 rows repeat an earlier row exactly \(csv:2 = csv:0"):
        read_csv_dataset(path, COLUMNS, on_duplicate="error")


def test_a_repeated_row_with_its_id_is_a_duplicate_row_a_reused_id_with_other_content_an_error(tmp_path):
    frame = pd.DataFrame(
        [["q1", "a.png", "Q?", "x"], ["q2", "b.png", "Q?", "y"], ["q1", "a.png", "Q?", "x"]],
        columns=["id", "image", "question", "answer"],
    )
    frame.to_csv(tmp_path / "d.csv", index=False)
    items, stats = read_csv_dataset(tmp_path / "d.csv", COLUMNS)
    assert [it.id for it in items] == ["q1", "q2"] and stats.drop_reasons == {"duplicate_row": 1}
    frame.iloc[2, 3] = "z"
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(ValueError, match=r"duplicate id 'q1' at rows 0 and 2"):
        read_csv_dataset(tmp_path / "d.csv", COLUMNS)


# ---------------------------------------------------------------------------------------- 5/6. bad input
def test_a_non_utf8_byte_names_line_and_offset_without_dumping_the_file(tmp_path):
    long_cell = "x" * 5000
    body = f"image,question,answer\na.png,{long_cell},liver\nb.png,Where?,lung\nc.png,Caf\xe9?,heart\n"
    (tmp_path / "d.csv").write_bytes(body.encode("latin-1"))
    with pytest.raises(ValueError) as err:
        read_csv_dataset(tmp_path / "d.csv", COLUMNS)
    message = str(err.value)
    offset = body.encode("latin-1").index(b"\xe9")
    assert "line 4 (data row 2" in message and f"byte offset {offset}" in message and "0xe9" in message
    assert long_cell not in message and len(message) < 400 and "dataset.encoding" in message
    items, _ = read_csv_dataset(tmp_path / "d.csv", COLUMNS, encoding="latin-1")
    assert items[2].question == "Café?"


def test_on_bad_image_skip_checks_images_at_load_without_check_images(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "c.png").write_bytes(b"not a png")
    path = _csv(tmp_path, [["a.png", "Q1?", "x"], ["b.png", "Q2?", "y"], ["c.png", "Q3?", "z"]])
    items, stats = read_csv_dataset(path, COLUMNS, on_bad_image="skip")
    assert [it.id for it in items] == ["csv:0"]
    assert stats.drop_reasons == {"missing_image": 1, "corrupt_image": 1}
    assert stats.summary() == "load: 3 -> 1 (dropped corrupt_image: 1, missing_image: 1)"


def test_a_symlink_out_of_the_image_root_is_refused_at_load_and_never_exported(compose, tmp_path):
    root, outside = tmp_path / "images", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    Image.new("RGB", (8, 8)).save(root / "a.png")
    Image.new("RGB", (8, 8)).save(outside / "s.png")
    (root / "b.png").symlink_to(outside / "s.png")
    item = VQAItem(
        id="q2", image="b.png", question="?", choices=[], answer_label=None, answer="x", image_root=str(root)
    )
    with pytest.raises(BadImageError, match=r"resolves to .*secret/s.png, outside the image root") as err:
        load_image(item)
    assert err.value.reason == "image_outside_root"
    csv = pd.DataFrame(
        {
            "Figure_path": ["a.png", "b.png"],
            "Question": ["Q1?", "Q2?"],
            "Answer": ["x", "y"],
            "Choice A": ["x", "x"],
            "Choice B": ["y", "y"],
            "Choice C": ["", ""],
            "Choice D": ["", ""],
            "Answer_label": ["A", "B"],
        }
    )
    csv.to_csv(root / "d.csv", index=False)
    items, stats = read_pmc_vqa(root / "d.csv", on_bad_image="skip")
    assert [it.image for it in items] == ["a.png"] and stats.drop_reasons == {"image_outside_root": 1}
    # Export (which does not open images) copies what resolves inside the root only, says so, and can fail.
    base = [
        "dataset=pmc_vqa",
        f"dataset.path={root / 'd.csv'}",
        "pipeline.stages=[export]",
        "logger=none",
        f"pipeline.cache_dir={tmp_path}/stages",
    ]
    run_curation(compose("generate", base, tmp_path / "run"), tmp_path / "run")
    assert (tmp_path / "run" / "images" / "a.png").is_file() and not (
        tmp_path / "run" / "images" / "b.png"
    ).exists()
    export = pd.read_json(tmp_path / "run" / "export_stats.json", typ="series")
    assert export["warning_reasons"] == {"image_outside_root": 1, "images_not_exported": 1}
    with pytest.raises(RuntimeError, match=r"export: 1 of 2 images were not exported"):
        run_curation(
            compose("generate", [*base, "pipeline.export.require_images=true"], tmp_path / "r2"),
            tmp_path / "r2",
        )


def test_every_stage_line_gives_counts_drops_and_warnings_and_export_says_it_wrote_no_images(
    compose, tmp_path, caplog
):
    cfg = compose(
        "generate",
        [
            *RELEASE,
            "dataset.limit=30",
            "sampler=random",
            "sampler.n=100",
            f"pipeline.cache_dir={tmp_path}/stages",
        ],
        tmp_path / "run",
    )
    with caplog.at_level(logging.INFO, logger="mvqa.curate.pipeline"):
        run_curation(cfg, tmp_path / "run")
    lines = [r.getMessage() for r in caplog.records if r.name == "mvqa.curate.pipeline"]
    assert any(line.startswith("load: 30 -> 30") for line in lines)
    assert any(
        line.startswith("sample: 30 -> 30 (warned n_exceeds_pool: 1; first: sampler random: n=100 > 30")
        for line in lines
    )
    export = next(line for line in lines if line.startswith("export:"))
    assert export.startswith(
        "export: 30 -> 30 (warned images_not_exported: 1, missing_image: 30; first: image"
    )
    cfg = compose(
        "generate",
        [
            *RELEASE,
            "dataset.limit=30",
            "sampler=random",
            "sampler.n=100",
            "pipeline.export.require_images=true",
            f"pipeline.cache_dir={tmp_path}/stages",
        ],
        tmp_path / "strict",
    )
    with pytest.raises(RuntimeError, match=r"export: 30 of 30 images were not exported"):
        run_curation(cfg, tmp_path / "strict")
    assert not (tmp_path / "strict" / "final.csv").exists()  # final.csv marks a finished export


# ---------------------------------------------------------------------------------------- 6. adapter base
def test_an_adapter_on_a_base_with_other_weights_warns_or_fails_under_strict(tmp_path):
    from mvqa.models.load import load_model
    from mvqa.models.lora import attach_lora, base_fingerprint, load_adapter, save_adapter
    from mvqa.models.tiny import tiny_conf
    from mvqa.schemas.recipe import RecipeConf

    def base(seed: int):
        return load_model(
            tiny_conf("llava", size="unit", cache_dir=str(tmp_path / "models"), seed=seed)
        ).model

    trained = attach_lora(base(0), RecipeConf())
    path = save_adapter(trained, tmp_path / "adapter")
    assert base_fingerprint(trained) == base_fingerprint(base(0)) != base_fingerprint(base(1))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        load_adapter(base(0), path)  # its own base: no fingerprint warning
    assert not [w for w in seen if "fingerprint" in str(w.message)]
    with pytest.warns(UserWarning, match=r"trained on base weights with fingerprint \w+ .* other weights"):
        load_adapter(base(1), path)
    with pytest.raises(ValueError, match=r"other weights \(model.adapter_base_check=error\)"):
        load_adapter(base(1), path, base_check="error")
