"""Fine-tuning: label masking on real tokenizer output, truncation, real Lightning runs, resume, W&B offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mvqa.config import PROJECT_ROOT
from mvqa.data.collators import IGNORE_INDEX, VQACollator, end_of_turn
from mvqa.data.synthetic import read_synthetic
from mvqa.models.load import load_model
from mvqa.models.tiny import tiny_conf
from mvqa.train.recipe import run_training
from mvqa.train.trace_format import TraceFormatter

# A unit-size model on a tiny world: a few seconds per run, every path the real one.
TINY = ["model=tiny_llava", "model.size=unit", "dataset.n_train=16", "dataset.n_val=4", "dataset.n_test=4",
        "dataset.image_size=32", "data.batch_size=4", "data.val_max_new_tokens=8", "data.max_length=768", "data.prompt=direct",
        "trainer.enable_progress_bar=false", "recipe.dropout=0.0"]


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
    cfg = compose("train", [*TINY, "logger=none", "trainer=ddp_cpu", "trainer.max_steps=2", "trainer.log_every_n_steps=1",
                            "trainer.limit_val_batches=0"], tmp_path / "run")
    result = run_training(cfg, tmp_path / "run")
    # Lightning hands rank 0's weights and metrics back to the launching process, which saves the adapter.
    assert "train/loss" in result["metrics"]
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "run" / "checkpoints" / "epoch=0-step=2.ckpt").is_file()


@pytest.mark.slow
def test_multirun_jobs_are_separate_wandb_runs_in_one_group(tmp_path):
    cmd = [sys.executable, str(PROJECT_ROOT / "train.py"), "-m", "recipe.lr=1e-4,3e-4", "trainer.max_steps=2",
           *TINY, f"hydra.sweep.dir={tmp_path}/sweep"]
    subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    jobs = sorted((tmp_path / "sweep").glob("[0-9]"))
    assert len(jobs) == 2 and all(len(list(j.glob("wandb/offline-run-*"))) == 1 for j in jobs)
    infos = [json.loads((j / "wandb_run.json").read_text()) for j in jobs]
    assert infos[0]["id"] != infos[1]["id"]
    assert infos[0]["group"] == infos[1]["group"] == "sweep" and infos[0]["job_type"] == "train"
    names = [i["name"] for i in infos]  # the job's overrides
    assert "recipe.lr=0.0001" in names[0] and "recipe.lr=0.0003" in names[1]
