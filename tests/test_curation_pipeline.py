"""The curation pipeline (generate.py): acceptance commands, caching, resume after a kill, shards, bad
input."""

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
import torch

from mvqa.config import PROJECT_ROOT
from mvqa.curate.export import SEED_COLUMNS
from mvqa.curate.pipeline import run_curation, stage_items
from mvqa.data.storage import read_items_jsonl

RELEASE = ["dataset=mvqa1k_release", "pipeline.stages=[filter,sample,export]", "logger=none"]
# A tiny world and unit-size random models: fast, and every reader/model path is the real one.
TINY = ["dataset.n_train=24", "dataset.n_val=4", "dataset.n_test=4", "dataset.image_size=32",
        "scorer_model.size=unit", "scorer_model.path=null", "reasoner.size=unit", "reasoner.path=null",
        "pipeline.trace.max_new_tokens=12", "pipeline.trace.batch_size=4", "pipeline.trace.progress=false",
        "scorer.progress=false", "logger=none"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_release_filter_sample_export_is_the_seed_layout_and_reruns_identically(shared_data, compose,
                                                                                tmp_path):
    overrides = [*RELEASE, "sampler=kmeans_seed", "sampler.n=200", f"pipeline.cache_dir={tmp_path}/stages"]
    first = run_curation(compose("generate", overrides, tmp_path / "a"), tmp_path / "a")
    frame = pd.read_csv(tmp_path / "a" / "final.csv", keep_default_na=False)
    assert list(frame.columns) == SEED_COLUMNS and len(frame) == 200
    assert (frame["generated_answer"] == frame["Answer_label"]).all()
    assert not frame["Choice A"].str.match(r"\s*A:").any()
    assert [f["n_out"] for f in first["funnel"]] == [1000, 1000, 200, 200]
    for name in ("items.jsonl", "traces_partial.csv", "llava_conversations.json", "diversity.json",
                 "diversity.md", "manifest.json"):
        assert (tmp_path / "a" / name).is_file(), name
    # The rerun takes filter and sample from the stage cache and writes the same 200 rows.
    run_curation(compose("generate", overrides, tmp_path / "b"), tmp_path / "b")
    manifest = pd.read_json(tmp_path / "b" / "manifest.json", typ="series")
    assert [s.get("cached") for s in manifest["stages"][1:]] == [True, True, False]
    assert sha(tmp_path / "a" / "final.csv") == sha(tmp_path / "b" / "final.csv")
    assert (tmp_path / "b" / "diversity.json").is_file()  # reports come back with cached stages too


@pytest.mark.slow
def test_another_seed_changes_a_random_sample_only_through_the_seed(shared_data, compose, tmp_path):
    def final(seed: int, out: str) -> str:
        cfg = compose("generate", [*RELEASE, "sampler=random", "sampler.n=50", f"sampler.seed={seed}",
                                   f"pipeline.cache_dir={tmp_path}/stages"], tmp_path / out)
        run_curation(cfg, tmp_path / out)
        return sha(tmp_path / out / "final.csv")

    assert final(1, "a") == final(1, "b") != final(2, "c")


def test_more_samples_than_items_takes_all_with_a_warning(shared_data, compose, tmp_path):
    cfg = compose("generate", [*RELEASE, "dataset.limit=30", "sampler=kmeans_seed", "sampler.n=100",
                               f"pipeline.cache_dir={tmp_path}/stages"], tmp_path / "run")
    run_curation(cfg, tmp_path / "run")
    stats = pd.read_json(next((tmp_path / "run" / "stages").glob("*_sample/stats.json")), typ="series")
    assert stats["n_out"] == 30 and any("100" in w for w in stats["warnings"])


def test_a_stage_that_empties_the_set_names_itself_and_the_counts(compose, tmp_path):
    cfg = compose("generate", [*TINY, "pipeline.stages=[score,hard,trace,filter]",
                               f"pipeline.cache_dir={tmp_path}/stages"], tmp_path / "run")
    # Random tiny models answer nothing parseable, so the filter has nothing left. The hard stage passes it
    # 5 items: the hardest 15% (the scorer's default) of each kind, rounded up, of 18 mcq, 3 closed and 3
    # open items: 3 + 1 + 1.
    with pytest.raises(RuntimeError, match=r"stage 'filter' emptied the set: 5 in, 0 out"):
        run_curation(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "final.csv").exists()


def test_unknown_stage_is_refused(shared_data, compose, tmp_path):
    cfg = compose("generate", [*RELEASE, "pipeline.stages=[filter,smaple]"], tmp_path / "run")
    with pytest.raises(ValueError, match="smaple"):
        run_curation(cfg, tmp_path / "run")


@pytest.mark.slow
def test_likelihood_scores_every_item_and_keeps_the_hardest(compose, tmp_path):
    cfg = compose("generate", [*TINY, "pipeline.stages=[score,hard]", "scorer.fraction=0.25",
                               f"pipeline.cache_dir={tmp_path}/stages"], tmp_path / "run")
    run_curation(cfg, tmp_path / "run")
    scored = stage_items(tmp_path / "run", "score")
    hard = read_items_jsonl(next((tmp_path / "run" / "stages").glob("*_hard/items.jsonl")))
    # The hardest quarter of each kind, rounded up (scores are on different scales by kind): of the tiny
    # world's 18 mcq, 3 closed and 3 open items (24 items over 9 question types: the 6 perception types get 2
    # items each, all mcq; the 3 textbook types 4 each, one closed and one open), 5 + 1 + 1.
    assert len(scored) == 24 and len(hard) == 7
    assert {k: sum(it.kind == k for it in hard) for k in ("mcq", "closed", "open")} == {"mcq": 5, "closed": 1,
                                                                                     "open": 1}
    # The run dir references the score stage's items in the cache; the last stage's items are copied in.
    score_stats = json.loads(next((tmp_path / "run" / "stages").glob("*_score/stats.json")).read_text())
    assert Path(score_stats["items"]).is_relative_to(tmp_path / "stages")
    assert not list((tmp_path / "run" / "stages").glob("*_score/items.jsonl"))
    assert not list((tmp_path / "run" / "stages").glob("*_load/items.jsonl"))
    candidates = {"mcq": 4, "closed": 2, "open": 1}  # the options; yes and no; the gold answer alone
    for it in scored:
        assert len(it.extra["choice_logprobs"]) == candidates[it.kind] and 0 < it.extra["p_correct"] <= 1
    for kind in candidates:
        kept = [it.extra["p_correct"] for it in hard if it.kind == kind]
        rest = [it.extra["p_correct"] for it in scored if it.kind == kind
                and it.id not in {h.id for h in hard}]
        assert max(kept) <= min(rest), kind


def _traces(run_dir: Path) -> list:
    return [(it.id, it.extra["raw_output"]) for it in
            read_items_jsonl(next(run_dir.glob("stages/*_trace/items.jsonl")))]


def _spawn_generate(cwd: Path, *overrides: str) -> subprocess.Popen:
    """`python generate.py` to be killed: one OpenMP thread, as the resumes and reference runs here get (the
    `one_thread` fixture), so the work it leaves is what they would have computed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen([sys.executable, str(PROJECT_ROOT / "generate.py"), *overrides], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_trace_resumes_after_kill_9_with_no_gaps_or_duplicates(tmp_path, entry, one_thread):
    """A real `kill -9` of generate.py mid-trace, then a rerun (generate.py's entry, in this process), equals
    an uninterrupted run."""
    common = [*TINY, "scorer.fraction=1.0", "pipeline.stages=[score,hard,trace]",
              "pipeline.trace.batch_size=2", f"pipeline.cache_dir={tmp_path}/stages"]
    proc = _spawn_generate(tmp_path, *common, f"hydra.run.dir={tmp_path}/killed")
    partial = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        partial = next((tmp_path / "stages").glob("trace-*/items.partial.jsonl"), None)
        if partial and len(partial.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "generate.py finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(partial.read_text().splitlines())
    assert 4 <= done_before < 24 and not (partial.parent / "items.jsonl").exists()
    entry("generate", *common, f"hydra.run.dir={tmp_path}/resumed", cwd=tmp_path)
    fresh = [f"pipeline.cache_dir={tmp_path}/fresh-stages", f"hydra.run.dir={tmp_path}/fresh"]
    entry("generate", *common, *fresh, cwd=tmp_path)
    resumed, fresh = _traces(tmp_path / "resumed"), _traces(tmp_path / "fresh")
    assert len(resumed) == 24 == len({i for i, _ in resumed})
    assert resumed == fresh
    stats = pd.read_json(next((tmp_path / "resumed" / "stages").glob("*_trace/stats.json")), typ="series")
    assert stats["metrics"]["resumed"] >= done_before - 2  # at most the batch in flight was lost


@pytest.mark.slow
def test_three_shards_and_merge_equal_one_unsharded_run(compose, tmp_path):
    base = [*TINY, "scorer.fraction=1.0", f"pipeline.cache_dir={tmp_path}/stages"]
    # The README's array jobs: score shards, then trace shards (hard ranks over every score), then the merge.
    for stages in ("[score]", "[score,hard,trace]"):
        for i in range(3):
            cfg = compose("generate", [*base, f"pipeline.stages={stages}", f"shard={i}", "num_shards=3"],
                          tmp_path / f"shard{i}")
            summary = run_curation(cfg, tmp_path / f"shard{i}")
            assert summary["stopped_for_merge"] == (stages == "[score,hard,trace]" or i < 2)
    cfg = compose("generate", [*base, "pipeline.stages=[score,hard,merge]", "num_shards=3"],
                  tmp_path / "merged")
    run_curation(cfg, tmp_path / "merged")
    merged = read_items_jsonl(next((tmp_path / "merged" / "stages").glob("*_merge/items.jsonl")))
    cfg = compose("generate", [*base, "pipeline.stages=[score,hard,trace]",
                               f"pipeline.cache_dir={tmp_path}/other"], tmp_path / "whole")
    run_curation(cfg, tmp_path / "whole")
    assert [(it.id, it.extra["raw_output"]) for it in merged] == _traces(tmp_path / "whole")


@pytest.mark.slow
def test_score_shards_score_only_their_slice_and_join_to_the_unsharded_scores(compose, tmp_path):
    from mvqa.curate.scoring import read_chunks

    base = [*TINY, "pipeline.stages=[score]", "pipeline.score.chunk_size=3"]
    assert stage_items(tmp_path / "whole", "score") is None  # no run yet
    run_curation(
        compose("generate", [*base, f"pipeline.cache_dir={tmp_path}/whole-stages"], tmp_path / "whole"),
        tmp_path / "whole")
    whole = stage_items(tmp_path / "whole", "score")
    for i in (2, 0, 1):  # any order; the last to finish joins
        summary = run_curation(
            compose("generate", [*base, f"pipeline.cache_dir={tmp_path}/stages", f"shard={i}",
                                 "num_shards=3"], tmp_path / f"s{i}"), tmp_path / f"s{i}")
        assert summary["stopped_for_merge"] == (i != 1)
        (shard_file,) = (tmp_path / "stages").glob(f"score-*/score.shard-{i}-of-3.jsonl")
        chunks = read_chunks(shard_file)
        assert [x for c in chunks for x in c["input_ids"]] == [it.id for it in whole[i::3]]
        assert [len(c["input_ids"]) for c in chunks] == [3, 3, 2]  # 8 items a shard, chunks of 3
    joined = stage_items(tmp_path / "s1", "score")
    assert [it.id for it in joined] == [it.id for it in whole] and len(whole) == 24
    for a, b in zip(joined, whole):
        assert a.extra["p_correct"] == pytest.approx(b.extra["p_correct"], rel=1e-5)
    stats = json.loads(next((tmp_path / "s1" / "stages").glob("*_score/stats.json")).read_text())
    assert stats["n_in"] == stats["n_out"] == 24 and stats["metrics"]["num_shards"] == 3
    ranked = [it for it in whole if it.extra["scorer_pred"] is not None]  # mcq and yes/no items: 18 + 3
    assert stats["metrics"]["ranked"] == len(ranked) == 21 and stats["metrics"]["gold_likelihood_only"] == 3
    assert stats["metrics"]["scorer_accuracy"] == pytest.approx(
        sum(it.extra["scorer_pred_correct"] for it in ranked) / len(ranked))


@pytest.mark.slow
def test_a_shard_told_to_wait_traces_once_its_peer_has_scored_and_names_a_peer_that_never_came(compose,
                                                                                                tmp_path):
    import threading

    shard = lambda k, wait: compose("generate", [
        *TINY, "pipeline.stages=[score,trace]", f"pipeline.cache_dir={tmp_path}/stages", f"shard={k}",
        "num_shards=2", f"pipeline.score.wait_for_shards_s={wait}"], tmp_path / f"s{k}")
    with pytest.raises(TimeoutError, match=r"wait_for_shards_s=0.5 s for shard\(s\) \[1\]"):
        run_curation(shard(0, 0.5), tmp_path / "s0")
    assert not (tmp_path / "s0" / "summary.json").exists()  # nothing looks finished
    # Shard 0 (its scores kept from the failed run) waits in a thread while shard 1 scores, then both trace.
    summaries, first = {}, shard(0, 60)
    waiting = threading.Thread(target=lambda: summaries.update({0: run_curation(first, tmp_path / "s0")}))
    waiting.start()
    summaries[1] = run_curation(shard(1, 60), tmp_path / "s1")
    waiting.join(timeout=120)
    for k in (0, 1):
        assert [f["stage"] for f in summaries[k]["funnel"]] == ["load", "score", "trace"]
        assert next((tmp_path / "stages").glob(f"trace-*/items.shard-{k}-of-2.jsonl")).is_file()


@pytest.mark.slow
def test_score_resumes_after_kill_9_losing_at_most_the_chunk_in_flight(tmp_path, entry, one_thread):
    common = [*TINY, "dataset.n_train=160", "pipeline.stages=[score]", "pipeline.score.chunk_size=1",
              f"pipeline.cache_dir={tmp_path}/stages"]
    proc = _spawn_generate(tmp_path, *common, f"hydra.run.dir={tmp_path}/killed")
    partial = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        partial = next((tmp_path / "stages").glob("score-*/score.shard-0-of-1.partial.jsonl"), None)
        if partial and len(partial.read_text().splitlines()) >= 5:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "generate.py finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lines = partial.read_text().splitlines()
    complete = 0
    for line in lines:
        try:
            json.loads(line)
            complete += 1
        except json.JSONDecodeError:  # the chunk in flight, cut by the kill: only the last line may be
            assert line is lines[-1]
    assert 5 <= complete < 160 and not (partial.parent / "items.jsonl").exists()
    resumed = entry("generate", *common, f"hydra.run.dir={tmp_path}/resumed", cwd=tmp_path)
    fresh = [f"pipeline.cache_dir={tmp_path}/fresh-stages", f"hydra.run.dir={tmp_path}/fresh"]
    entry("generate", *common, *fresh, cwd=tmp_path)
    # Every chunk written whole before the kill was kept: only the chunk in flight (a torn line) is redone.
    assert f"resuming, {complete} of 160 items already scored" in resumed.out + resumed.err
    a, b = stage_items(tmp_path / "resumed", "score"), stage_items(tmp_path / "fresh", "score")
    assert [it.id for it in a] == [it.id for it in b] and len(a) == 160
    assert all(x.extra["p_correct"] == pytest.approx(y.extra["p_correct"], rel=1e-5) for x, y in zip(a, b))


@pytest.mark.slow
def test_merge_names_the_missing_shard(compose, tmp_path):
    base = [*TINY, "scorer.fraction=1.0", f"pipeline.cache_dir={tmp_path}/stages", "num_shards=2"]
    run_curation(
        compose("generate", [*base, "pipeline.stages=[score,hard,trace]", "shard=1"], tmp_path / "s1"),
        tmp_path / "s1")
    with pytest.raises(FileNotFoundError, match=r"shard\(s\) \[0\] of num_shards=2"):
        run_curation(compose("generate", [*base, "pipeline.stages=[score,hard,merge]"], tmp_path / "m"),
                     tmp_path / "m")


@pytest.mark.slow
def test_similarity_scorer_asks_the_scorer_vlm_then_applies_the_seed_rules(compose, tmp_path):
    tiny = [o for o in TINY if not o.startswith("scorer.")]
    cfg = compose("generate", [*tiny, "scorer=similarity", "scorer.max_new_tokens=8", "dataset.n_train=8",
                               "pipeline.stages=[score]", f"pipeline.cache_dir={tmp_path}/stages"],
                               tmp_path / "run")
    run_curation(cfg, tmp_path / "run")
    scored = stage_items(tmp_path / "run", "score")
    assert len(scored) == 8
    for it in scored:
        assert isinstance(it.extra["scorer_output"], str) and it.extra["scorer_model"]
        assert -1 <= it.extra["sim_to_answer"] <= 1 and -1 <= it.extra["max_choice_sim"] <= 1


@pytest.mark.slow
def test_wandb_offline_run_gets_the_funnel_diversity_and_dataset_artifact(shared_data, compose, tmp_path):
    from mvqa.tracking import job_run

    cfg = compose("generate",
                  ["dataset=mvqa1k_release", "pipeline.stages=[filter,sample,export]", "sampler.n=20",
                               "logger=wandb", f"pipeline.cache_dir={tmp_path}/stages"], tmp_path / "run")
    with job_run(cfg, "generate") as run:
        run_curation(cfg, tmp_path / "run", run)
    info = json.loads((tmp_path / "run" / "wandb_run.json").read_text())
    assert info["job_type"] == "generate" and info["mode"] == "offline"
    blob = next((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")).read_bytes()
    for key in (b"funnel", b"diversity/mean_pairwise_cosine_distance", b"curated-run", b"dataset"):
        assert key in blob, key


def test_correctness_filter_strict_like_the_seed_or_normalised(shared_data):
    from mvqa.curate.correctness import filter_correct
    from mvqa.data.readers import read_pmc_vqa

    items, _ = read_pmc_vqa(shared_data / "mvqa1k" / "sampled_final.csv",
                            extra_columns=("generated_reasoning", "generated_answer", "raw_output"))
    for mode in ("strict", "normalised"):
        kept, stats = filter_correct(items, mode)
        assert len(kept) == 1000 and stats.metrics["correct"] == 1000
    it = items[0]
    other = next(c for c in it.letters if c != it.answer_label)
    variants = [it.replace(id="a", extra={"generated_answer": f"{it.answer_label}) {it.answer}"}),
                it.replace(id="b", extra={"generated_answer": it.answer}),
                it.replace(id="c", extra={"generated_answer": other}),
                it.replace(id="d", extra={"generated_answer": "no idea"})]
    kept, stats = filter_correct(variants, "normalised")
    assert [k.id for k in kept] == ["a", "b"] and stats.drop_reasons == {"wrong": 1, "unparseable": 1}
    kept, stats = filter_correct(variants, "strict")
    assert kept == [] and stats.drop_reasons == {"wrong": 1, "unparseable": 3}


def test_likelihood_continuations_match_how_the_scorer_was_taught_to_answer():
    from types import SimpleNamespace

    from mvqa.curate.likelihood import LikelihoodScorer
    from mvqa.data.records import VQAItem
    from mvqa.models.bundle import SpecialTokens

    item = VQAItem(id="q", image="i.png", question="Which?", choices=["CT", "MRI"], answer_label="B",
                   answer="MRI")
    bundle = SimpleNamespace(special_tokens=SpecialTokens())
    assert [LikelihoodScorer(continuation=c).continuations(item, bundle)
            for c in ("letter", "text", "tagged_text")] == [
        ["<answer>A</answer>", "<answer>B</answer>"], ["CT", "MRI"],
        ["<answer>CT</answer>", "<answer>MRI</answer>"]]
    with pytest.raises(ValueError,
                       match="scorer.continuation must be 'letter', 'text' or 'tagged_text', got 'txt'"):
        LikelihoodScorer(continuation="txt")


@pytest.mark.slow
def test_likelihood_batched_equals_one_item_at_a_time(tmp_path):
    """Items of different prompt lengths share one right-padded batch; each choice still counts only
    itself."""
    from types import SimpleNamespace

    from mvqa.curate.likelihood import LikelihoodScorer
    from mvqa.data.synthetic import read_synthetic
    from mvqa.models.load import load_model
    from mvqa.models.tiny import tiny_conf

    bundle = load_model(tiny_conf("llava", size="unit", cache_dir=str(tmp_path / "models")))
    items = read_synthetic(str(tmp_path / "world"), n_train=7, n_val=0, n_test=0, image_size=32)[0]
    ctx = SimpleNamespace(model=lambda key: bundle)
    scored = {
        b: LikelihoodScorer(continuation="tagged_text", batch_size=b, progress=False).score(items, ctx)[0]
        for b in (1, 3, 7)}
    assert len({len(it.question) for it in items}) > 1  # prompts of several lengths padded together
    for it1, it3, it7 in zip(*scored.values()):
        assert it1.extra["choice_logprobs"] == pytest.approx(it3.extra["choice_logprobs"], abs=1e-4)
        assert it1.extra["choice_logprobs"] == pytest.approx(it7.extra["choice_logprobs"], abs=1e-4)
        assert it1.extra["scorer_pred"] == it7.extra["scorer_pred"] and all(
            x < 0 for x in it1.extra["choice_logprobs"])
    with pytest.raises(ValueError, match="scorer.batch_size=0"):
        LikelihoodScorer(batch_size=0)


def test_stage_keys_follow_the_models_they_run(compose, tmp_path):
    """A new scorer or reasoner checkpoint (same config otherwise) must not reuse cached scores or traces."""
    from mvqa.curate.pipeline import _stages, stage_key

    deps = {name: keys for name, (_, keys) in _stages().items()}
    keys = []
    for path in ("/ckpt/base-a", "/ckpt/base-b"):
        cfg = compose("generate", [*TINY, f"scorer_model.path={path}", f"reasoner.path={path}-r"],
                      tmp_path / "run")
        keys.append({s: stage_key(s, cfg, deps[s], "items") for s in ("score", "hard", "trace", "filter")})
    assert keys[0]["score"] != keys[1]["score"] and keys[0]["trace"] != keys[1]["trace"]
    assert keys[0]["hard"] == keys[1]["hard"] and keys[0]["filter"] == keys[1]["filter"]  # same input: reused


def test_stage_keys_follow_the_weights_bytes_and_the_stage_code(compose, tmp_path, monkeypatch):
    """A checkpoint rewritten at the same path, or a new version of a stage's code, gets a new cache entry;
    an unchanged checkpoint is hashed once (its digest is stored)."""
    from safetensors.torch import save_file

    from mvqa.curate import cache
    from mvqa.curate.pipeline import _stages, stage_key

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_file({"w": torch.zeros(4)}, ckpt / "model.safetensors")
    hashed = []
    real_fingerprint = cache.file_fingerprint
    monkeypatch.setattr(cache, "file_fingerprint", lambda p: hashed.append(p) or real_fingerprint(p))
    deps = {name: keys for name, (_, keys) in _stages().items()}
    cfg = compose("generate", [*TINY, f"scorer_model.path={ckpt}", f"pipeline.cache_dir={tmp_path}/stages"])

    def keys():
        return {s: stage_key(s, cfg, deps[s], "items") for s in ("score", "hard", "trace")}

    first = keys()
    assert keys() == first and len(hashed) == 1  # the second key reads the stored digest
    save_file({"w": torch.ones(4)}, ckpt / "model.safetensors")  # retrained in place, same size
    retrained = keys()
    assert retrained["score"] != first["score"] and len(hashed) == 2
    assert retrained["hard"] == first["hard"] and retrained["trace"] == first["trace"]  # they run no scorer
    monkeypatch.setitem(cache.CODE_VERSIONS, "trace", cache.CODE_VERSIONS["trace"] + 1)
    bumped = keys()
    assert bumped["trace"] != retrained["trace"] and bumped["score"] == retrained["score"]
