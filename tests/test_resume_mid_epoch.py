"""Training killed mid-epoch (a real process, hard exit) and resumed sees exactly the uninterrupted run's
batches. The uninterrupted run and the resume are train.py's recipe run in this process (the uninterrupted
one while the killed process runs); the resume reads the checkpoint the killed process left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from mvqa.config import PROJECT_ROOT
from mvqa.train.module import VQAFineTuner
from mvqa.train.recipe import run_training

# The child: train.py's run_training with every training batch's ids appended to a file, and a hard exit
# (os._exit: no cleanup, like kill -9) at the end of optimizer step `kill_at` (-1: never).
DRIVER = """
import json, os, sys
from hydra import compose, initialize_config_dir
from mvqa.config import CONFIG_DIR, setup
from mvqa.train.module import VQAFineTuner
from mvqa.train.recipe import run_training

out, ids_file, kill_at, *overrides = sys.argv[1:]
setup()
train_step = VQAFineTuner.training_step

def recorded(self, batch, batch_idx):
    with open(ids_file, "a") as f:
        f.write(json.dumps([self.global_step, list(batch["item_ids"])]) + "\\n")
    return train_step(self, batch, batch_idx)

def exit_at(self, outputs, batch, batch_idx):
    if self.global_step == int(kill_at):
        os._exit(9)

VQAFineTuner.training_step = recorded
VQAFineTuner.on_train_batch_end = exit_at
with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="train"):
    cfg = compose(config_name="train", overrides=[f"paths.output_dir={out}", *overrides])
run_training(cfg, out)
"""

# 20 items, batch 4: 5 steps an epoch, 2 epochs. Checkpoints every 3 steps: the last one before the kill at
# step 7 is step 6, one batch into the second epoch.
COMMON = [
    "dataset=synthetic",
    "dataset.n_train=20",
    "dataset.n_val=4",
    "dataset.n_test=4",
    "dataset.image_size=32",
    "model=tiny_llava",
    "model.size=unit",
    "data.batch_size=4",
    "data.max_length=768",
    "data.prompt=direct",
    "trainer.enable_progress_bar=false",
    "recipe.dropout=0.0",
    "logger=csv",
    "recipe.epochs=2",
    "trainer.limit_val_batches=0",
    "trainer.log_every_n_steps=1",
    "checkpoint_every_n_steps=3",
]


def _train(run_dir: Path, ids: Path, kill_at: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(run_dir), str(ids), str(kill_at), *COMMON],
        cwd=run_dir.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _steps(ids: Path) -> list[tuple[int, list[str]]]:
    return [tuple(json.loads(line)) for line in ids.read_text().splitlines()]


def _record_steps(monkeypatch) -> list[tuple[int, list[str]]]:
    """Every training batch's (optimizer step, item ids) of this process's runs, appended to the list
    returned, as the DRIVER records the child's."""
    steps, train_step = [], VQAFineTuner.training_step

    def recorded(self, batch, batch_idx):
        steps.append((self.global_step, list(batch["item_ids"])))
        return train_step(self, batch, batch_idx)

    monkeypatch.setattr(VQAFineTuner, "training_step", recorded)
    return steps


@pytest.mark.slow
def test_kill_mid_epoch_then_resume_sees_the_same_batches_and_ends_at_the_same_adapter(
        tmp_path, compose, monkeypatch, one_torch_thread):
    killed = _train(tmp_path / "run", tmp_path / "run.ids", 7)
    monkeypatch.chdir(tmp_path)
    steps = _record_steps(monkeypatch)
    run_training(compose("train", COMMON, tmp_path / "whole"), tmp_path / "whole")  # while the child runs
    reference = steps[:]
    steps.clear()
    out = killed.communicate(timeout=600)[0]
    assert killed.returncode == 9, out[-3000:]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 6 and ckpt["epoch"] == 1  # mid-epoch: one of five batches of epoch 1 done
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches_done": 1, "seed": 0, "n": 20, "batch_size": 4}
    ]
    before = _steps(tmp_path / "run.ids")
    assert [s for s, _ in before] == list(
        range(7)
    )  # step 7 (the 7th batch) ran past the checkpoint, then exit

    resume = f"resume_from='{tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}'"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_training(compose("train", [*COMMON, resume], tmp_path / "run"), tmp_path / "run")
    # Lightning's warning for a loader that restarts the epoch
    assert not [w for w in caught if "not resumable" in str(w.message)]

    seen = [s for s in before if s[0] < 6] + steps
    assert len(reference) == 10 and seen == reference  # same batches, same order, same optimizer steps
    assert len({i for _, batch in reference[:5] for i in batch}) == 20  # every item once per epoch
    a = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5

    # The killed attempt's metrics stay; the resumed attempt writes its own file.
    first = pd.read_csv(tmp_path / "run" / "csv" / "metrics.csv")
    second = pd.read_csv(tmp_path / "run" / "csv" / "attempt-2" / "metrics.csv")
    assert set(first["step"].dropna().astype(int)) >= set(range(7))
    assert set(second["step"].dropna().astype(int)) >= set(range(7, 10))
