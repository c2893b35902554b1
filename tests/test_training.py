"""Fine-tuning: label masking on real tokenizer output, truncation, real Lightning runs, resume, W&B
offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import TINY, UNIT_RUN, WORLD
from omegaconf import OmegaConf
from safetensors.torch import load_file

from mvqa.data.collators import IGNORE_INDEX, VQACollator, end_of_turn
from mvqa.data.synthetic import read_synthetic
from mvqa.models.load import load_model
from mvqa.models.tiny import tiny_conf
from mvqa.train.recipe import run_training
from mvqa.train.trace_format import TraceFormatter


@pytest.fixture(scope="module")
def unit_llava(tmp_path_factory):
    return load_model(tiny_conf("llava", size="unit", cache_dir=str(tmp_path_factory.mktemp("models"))))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return read_synthetic(str(root), n_train=8, n_val=4, n_test=4, image_size=32)[0]


def test_labels_are_the_assistant_tokens_only(unit_llava, world):
    items, _ = TraceFormatter(num_waits=1)(world[:3], unit_llava.special_tokens)
    collator = VQACollator(unit_llava.processor, "med_r1_seed", max_length=1024)
    batch = collator(items)
    tok = unit_llava.tokenizer
    image_id = tok.convert_tokens_to_ids(unit_llava.special_tokens.image)
    eot = end_of_turn(unit_llava.processor)
    for row, item in enumerate(items):
        ids, labels, mask = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        supervised = labels != IGNORE_INDEX
        target = item.extra["target"]
        assert tok.decode(ids[supervised]) == tok.decode(tok(target["opening"] + target["thinking"]
                                                             + target["closing"] + eot,
                                                             add_special_tokens=False)["input_ids"])
        assert (labels[supervised] == ids[supervised]).all()
        assert not supervised[ids == image_id].any() and (ids == image_id).sum() == 16
        assert not supervised[mask == 0].any()
        first = int(supervised.nonzero()[0])
        assert tok.decode(ids[:first]).rstrip().endswith("[/INST]")  # everything before is the prompt
    assert batch["attention_mask"][:, 0].all()  # training pads on the right


def test_generation_batches_pad_left(unit_llava, world):
    batch = VQACollator(unit_llava.processor, "direct", mode="generate")(world[:4])
    assert batch["attention_mask"][:, -1].all() and "labels" not in batch


def test_long_sequences_lose_thinking_never_the_answer(unit_llava, world):
    items, _ = TraceFormatter(num_waits=2)(world[:2], unit_llava.special_tokens)
    probe = VQACollator(unit_llava.processor, "direct", max_length=100_000)
    tok = unit_llava.tokenizer
    # Room for the prompt, the delimiters and the answer, plus 5 thinking tokens.
    fixed = max(len(probe.encode_prompt(it)["input_ids"][0]) + len(probe._ids(it.extra["target"]["opening"]))
                + len(probe._ids(it.extra["target"]["closing"] + probe.eot)) for it in items)
    collator = VQACollator(unit_llava.processor, "direct", max_length=fixed + 5)
    batch = collator(items)
    for row, item in enumerate(items):
        kept = tok.decode(batch["input_ids"][row][batch["labels"][row] != IGNORE_INDEX])
        assert kept.replace(" ", "").endswith(f"</think><answer>{item.answer_label}</answer></s>")
        assert int(batch["attention_mask"][row].sum()) <= fixed + 5
    assert collator.stats.truncated == 2
    too_short = VQACollator(unit_llava.processor, "direct", max_length=fixed - 10)
    with pytest.raises(ValueError, match=f"max_length={fixed - 10}"):
        too_short(items)


def _adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


@pytest.mark.slow
def test_lora_run_with_wandb_offline_saves_adapter_config_and_metrics(compose, tmp_path):
    cfg = compose("train", [*TINY, "trainer.max_steps=3", "logger=wandb"], tmp_path / "run")
    from mvqa.tracking import job_run

    with job_run(cfg, "train") as run:
        result = run_training(cfg, tmp_path / "run", run)
    assert result["global_step"] == 3 and 0 <= result["val_acc"] <= 1
    assert 0 < result["trainable_parameters"] < result["total_parameters"]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["val_acc"] == result["val_acc"] and saved["stats"]["format"]["n_out"] == 16
    assert set(_adapter(tmp_path / "run")) and all("lora_" in k for k in _adapter(tmp_path / "run"))
    offline = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    # The offline store (synced later with `wandb sync`) holds the resolved config and the logged metrics.
    blob = next(offline[0].glob("run-*.wandb")).read_bytes()
    assert b"lora_r8" in blob and b"tiny_llava" in blob and b"val/loss" in blob and b"val/acc" in blob


@pytest.mark.slow
def test_token_rows_train_beside_the_adapters(compose, tmp_path):
    """recipe.train_target_rows: the embedding and LM-head rows of exactly the tokens the targets use train
    with the LoRA adapters (and are saved with them); train_delimiter_rows alone: the four delimiters'
    rows."""
    from mvqa.train.recipe import delimiter_ids, split_train_val, trainable_token_rows

    cfg = compose("train", [*TINY, "trainer.max_steps=2", "logger=none", "recipe.train_target_rows=true",
                            "recipe.train_delimiter_rows=true"], tmp_path / "run")
    run_training(cfg, tmp_path / "run")
    bundle = load_model(cfg.model)
    items, _ = TraceFormatter(**{k: v for k, v in cfg.trace_format.items() if k != "_target_"})(
        split_train_val(cfg)[0], bundle.special_tokens)
    used = {i for it in items for i in bundle.tokenizer("".join(it.extra["target"].values()),
                                                      add_special_tokens=False)["input_ids"]}
    delimiters = set(delimiter_ids(bundle))
    assert len(delimiters) == 4 and delimiters <= used and len(used) > 20
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert {k: sorted(v) for k, v in config["trainable_token_indices"].items()} == {
        "embed_tokens": sorted(used), "lm_head": sorted(used)}
    assert any("trainable_tokens" in k for k in _adapter(tmp_path / "run"))
    assert trainable_token_rows(OmegaConf.merge(cfg.recipe, {"train_target_rows": False}), bundle,
                                items) == sorted(delimiters)
    assert trainable_token_rows(
        OmegaConf.merge(cfg.recipe, {"train_target_rows": False, "train_delimiter_rows": False}),
        bundle, items) is None

@pytest.mark.slow
def test_resume_from_checkpoint_equals_uninterrupted_training(compose, tmp_path):
    # 16 items, batch 4: 4 steps an epoch, 3 epochs. The uninterrupted run keeps every epoch's checkpoint; a
    # second run resumes from the first one (as after a kill at step 4) and must end at the same place.
    common = [*TINY, "logger=none", "recipe.epochs=3", "trainer.limit_val_batches=0", "checkpoint_keep=-1"]
    whole = run_training(compose("train", common, tmp_path / "whole"), tmp_path / "whole")
    step4 = tmp_path / "whole" / "checkpoints" / "epoch=0-step=4.ckpt"
    resumed = run_training(compose("train", [*common, f"resume_from='{step4}'"], tmp_path / "resumed"),
                           tmp_path / "resumed")
    assert whole["global_step"] == resumed["global_step"] == 12
    assert resumed["metrics"]["train/loss"] == pytest.approx(whole["metrics"]["train/loss"], rel=1e-5)
    a, b = _adapter(tmp_path / "whole"), _adapter(tmp_path / "resumed")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    ckpt = torch.load(step4, weights_only=False)
    assert ckpt["global_step"] == 4 and ckpt["optimizer_states"] and ckpt["lr_schedulers"]
    assert all("lora_" in k for k in ckpt["state_dict"])  # adapter-only checkpoints


@pytest.mark.slow
def test_two_process_ddp_run_completes(compose, tmp_path):
    cfg = compose("train", [*TINY, "logger=none", "trainer=ddp_cpu", "trainer.max_steps=2",
                            "trainer.log_every_n_steps=1",
                            "trainer.limit_val_batches=0"], tmp_path / "run")
    result = run_training(cfg, tmp_path / "run")
    # Lightning hands rank 0's weights and metrics back to the launching process, which saves the adapter.
    assert "train/loss" in result["metrics"]
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "run" / "checkpoints" / "epoch=0-step=2.ckpt").is_file()


@pytest.mark.slow
def test_gradient_checkpointing_is_active_and_changes_neither_loss_nor_grads(compose, tmp_path, monkeypatch):
    import transformers.modeling_utils

    from mvqa.train.module import VQAFineTuner

    # Every checkpointed block passes through transformers' `checkpoint`: record which block, how, and
    # whether its input carries grads (frozen embeddings under PEFT need enable_input_require_grads).
    calls: list[tuple[str, object, bool]] = []
    real_checkpoint = transformers.modeling_utils.checkpoint

    def counting_checkpoint(function, *args, **kwargs):
        calls.append((type(function.args[0]).__name__, kwargs.get("use_reentrant"),
                      any(a.requires_grad for a in args if torch.is_tensor(a))))
        return real_checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", counting_checkpoint)
    steps: list[dict[str, torch.Tensor]] = []
    layer_flags: list[bool] = []

    def record(self, optimizer):  # the real run's grads, before each optimizer step
        steps.append(
            {n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad})
        layer_flags[:] = [m.gradient_checkpointing for n, m in self.model.named_modules()
                          if n.split(".")[-2:-1] == ["layers"] and "language_model" in n]

    monkeypatch.setattr(VQAFineTuner, "on_before_optimizer_step", record, raising=False)
    runs = {}
    for on in (False, True):
        steps.clear()
        del calls[:]
        out = tmp_path / f"gc_{on}"
        cfg = compose("train", [*TINY, "logger=none", "trainer.max_steps=2", "trainer.limit_val_batches=0",
                                "trainer.log_every_n_steps=1", f"gradient_checkpointing={str(on).lower()}"],
                                out)
        runs[on] = {"result": run_training(cfg, out), "grads": list(steps), "calls": list(calls),
                    "layers": list(layer_flags), "adapter": _adapter(out)}
    off, on = runs[False], runs[True]
    assert off["calls"] == [] and off["layers"] and not any(off["layers"])
    n_layers = len(on["layers"])
    assert n_layers >= 2 and all(on["layers"])
    lm_calls = [c for c in on["calls"] if c[0] == "MistralDecoderLayer"]
    assert len(lm_calls) == 2 * n_layers  # every decoder layer, both steps
    assert all(reentrant is False and grad_input for _, reentrant, grad_input in lm_calls)
    assert on["result"]["global_step"] == off["result"]["global_step"] == 2
    assert on["result"]["metrics"]["train/loss"] == pytest.approx(off["result"]["metrics"]["train/loss"],
                                                                  rel=1e-6)
    assert len(on["grads"]) == len(off["grads"]) == 2
    for g_on, g_off in zip(on["grads"], off["grads"]):
        assert g_on.keys() == g_off.keys() and any(float(g.abs().max()) > 0 for g in g_on.values())
        for name in g_on:
            torch.testing.assert_close(g_on[name], g_off[name], rtol=1e-5, atol=1e-8, msg=name)
    for name in on["adapter"]:
        torch.testing.assert_close(on["adapter"][name], off["adapter"][name], rtol=1e-5, atol=1e-7, msg=name)


def _curation_run(run_dir: Path, world_root: Path, n: int, mtime: float, images: str = "copy",
                  source: str | None = None) -> Path:
    """A generate.py run dir as its export stage leaves it, from a synthetic world of its own (not the one the
    training config describes) whose items carry a reasoner-style output (the world's template trace)."""
    import dataclasses
    import os

    from mvqa.curate.export import export_curated

    items, _ = read_synthetic(str(world_root), n_train=n, n_val=2, n_test=2, image_size=24, seed=7)
    traced = [
        dataclasses.replace(it.with_extra(raw_output=f"<think>{it.extra['trace']}</think><answer>{it.answer}"
                                                    "</answer>"), source=source or it.source) for it in items]
    export_curated(traced, run_dir, "med_r1_seed", images=images)
    os.utime(run_dir / "final.csv", (mtime, mtime))
    return run_dir


@pytest.mark.slow
def test_default_dataset_is_the_newest_synthetic_curation_run_else_the_template_traces(compose, tmp_path,
                                                                                       monkeypatch, caplog):
    import logging
    import shutil
    import time

    from mvqa.data.auto import resolve_dataset
    from mvqa.tracking import job_run

    caplog.set_level(logging.INFO, logger="mvqa.data.auto")
    launch = tmp_path / "launch"
    launch.mkdir()
    monkeypatch.chdir(launch)  # the search roots (outputs/generate, multirun/generate) are relative to it
    short = [*WORLD, *UNIT_RUN, "trainer.max_steps=1", "trainer.limit_val_batches=0"]

    # No curation run yet: the synthetic world the auto node describes, template traces.
    composed = compose("train", [*short, "logger=none"], tmp_path / "plain")
    with pytest.raises(ValueError, match="dataset=auto is not resolved"):
        run_training(composed, tmp_path / "plain")
    result = run_training(resolve_dataset(composed), tmp_path / "plain")
    assert composed.dataset.name == "auto"  # resolving made a new config
    assert result["dataset"]["name"] == "synthetic" and result["dataset"]["n_train"] == 16
    assert result["n_train"] == 16 and result["n_val"] == 4  # the world's own val split
    assert "no curation run of the synthetic world" in caplog.text

    now = time.time()
    world = tmp_path / "other-world"
    older = _curation_run(launch / "outputs/generate/2026-01-01/10-00-00_aaaa", world, 8, now - 300)
    newest = _curation_run(launch / "multirun/generate/2026-01-02/09-00-00_bbbb/1", world, 12, now - 200)
    # Newer, but not candidates: curated from another source, and a synthetic export without its images.
    _curation_run(launch / "outputs/generate/2026-01-03/08-00-00_cccc", world, 4, now - 100, images="none",
                  source="mvqa1k_release")
    _curation_run(launch / "outputs/generate/2026-01-03/09-00-00_dddd", world, 4, now, images="none")
    shutil.rmtree(world)  # images can only come from the run's images/ folder now

    # Explicit choices win over the search.
    cfg = compose("train", [*short, "dataset=synthetic"])
    assert resolve_dataset(cfg) is cfg and cfg.dataset.name == "synthetic"
    cfg = compose("train", [*UNIT_RUN, "dataset=curated", f"dataset.path={older}/final.csv"])
    assert resolve_dataset(cfg) is cfg and cfg.dataset.path == f"{older}/final.csv"

    caplog.clear()
    cfg = resolve_dataset(compose("train", [*short, "logger=wandb"], tmp_path / "curated"))
    with job_run(cfg, "train") as run:  # W&B offline: the curated input cannot be declared, the run goes on
        result = run_training(cfg, tmp_path / "curated", run)
    assert result["dataset"]["name"] == "curated"
    assert result["dataset"]["path"] == str(newest.resolve() / "final.csv")
    assert result["dataset"]["image_root"] == str(newest.resolve() / "images")
    assert result["stats"]["load"]["n_out"] == 12 and result["n_train"] + result["n_val"] == 12
    assert result["stats"]["format"]["n_out"] == result["n_train"] and result["global_step"] == 1
    assert f"curated traces of {newest.resolve() / 'final.csv'}" in caplog.text
    assert "(no exported images/ folder)" in caplog.text
    saved = json.loads((tmp_path / "curated" / "metrics.json").read_text())
    assert saved["dataset"]["path"] == result["dataset"]["path"]


def test_log_artifacts_policy_decides_which_runs_log_the_adapter():
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from mvqa.tracking import wants_model_artifact

    def run(mode):
        return SimpleNamespace(settings=SimpleNamespace(mode=mode))

    wanted = {(policy, mode): wants_model_artifact(run(mode), OmegaConf.create({"log_artifacts": policy}))
              for policy in ("online", "always", "never") for mode in ("online", "offline")}
    assert wanted == {("online", "online"): True, ("online", "offline"): False, ("always", "online"): True,
                      ("always", "offline"): True, ("never", "online"): False, ("never", "offline"): False}
    assert not wants_model_artifact(None, OmegaConf.create({"log_artifacts": "always"}))
    with pytest.raises(ValueError, match=r"online', 'always', 'never'.*'sometimes'"):
        wants_model_artifact(run("online"), OmegaConf.create({"log_artifacts": "sometimes"}))


@pytest.mark.slow
def test_offline_run_holds_the_adapter_artifact_only_with_log_artifacts_always(compose, tmp_path,
                                                                               monkeypatch):
    import base64
    import hashlib

    from wandb_records import offline_run

    from mvqa.tracking import job_run

    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # where W&B stages artifact files
    for policy in ("default", "always"):
        out = tmp_path / policy
        cfg = compose("train", [*TINY, "trainer.max_steps=1", "trainer.limit_val_batches=0", "logger=wandb",
                                *([f"logger.log_artifacts={policy}"] if policy != "default" else [])], out)
        assert cfg.logger.log_artifacts == ("online" if policy == "default" else policy)
        with job_run(cfg, "train") as run:
            run_training(cfg, out, run)
    default, always = offline_run(tmp_path / "default"), offline_run(tmp_path / "always")
    assert default["artifacts"] == []  # the default (online) keeps offline runs free of adapter copies
    (artifact,) = always["artifacts"]
    assert artifact.type == "model" and artifact.name == f"adapter-{always['id']}"
    adapter = tmp_path / "always" / "adapter"
    files = {f"adapter/{p.relative_to(adapter)}": p for p in adapter.rglob("*") if p.is_file()}
    entries = {e.path: e for e in artifact.manifest.contents}
    assert set(entries) == set(files) and "adapter/adapter_model.safetensors" in entries
    for path, entry in entries.items():  # staged copies that `wandb sync` uploads, byte for byte
        data = files[path].read_bytes()
        assert entry.digest == base64.b64encode(hashlib.md5(data).digest()).decode(
            ) and entry.size == len(data)
        assert Path(entry.local_path).is_relative_to(tmp_path / "wandb-data")
        assert Path(entry.local_path).read_bytes() == data


def test_each_logger_kind_logs_somewhere_else(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    from mvqa.train.recipe import _loggers

    assert _loggers("none", tmp_path, None) == []
    (csv,) = _loggers("csv", tmp_path, None)
    assert isinstance(csv, CSVLogger) and Path(csv.log_dir) == tmp_path / "csv"
