"""Checkpoints from the `callbacks` group, on real tiny Lightning runs: ranked by a monitored metric, the
best N
kept besides last.ckpt, the best weights saved as the run's adapter, early stopping, validation on a slice."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from helpers import TINY
from safetensors.torch import load_file

from mvqa.train.recipe import run_training

# 16 train items at batch 4: 4 steps an epoch; 4 val items, generated with 8 new tokens.
EPOCHS = [*TINY, "logger=csv", "recipe.lr=3e-3"]


def _validations(run_dir: Path) -> list[dict[str, float]]:
    """The rows of Lightning's CSVLogger that carry validation metrics, in order."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/loss")]
    return [{k: float(v) for k, v in r.items() if v != ""} for r in rows]


def _checkpoint_adapter(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if "lora_" in k}


def _same_weights(saved: dict[str, torch.Tensor], checkpoint: dict[str, torch.Tensor]) -> bool:
    """PEFT saves `base_model.model...lora_A.weight` where the module holds
    `model.base_model...lora_A.default`."""
    by_suffix = {k.removeprefix("model.").replace(".default", ""): v for k, v in checkpoint.items()}
    assert set(by_suffix) == set(saved), (sorted(saved)[:2], sorted(by_suffix)[:2])
    return all(torch.equal(saved[k], by_suffix[k]) for k in saved)


@pytest.mark.slow
def test_best_two_by_val_loss_are_kept_and_the_best_is_the_saved_adapter(compose, tmp_path):
    out = tmp_path / "run"
    cfg = compose(
        "train",
        [*EPOCHS, "recipe.epochs=4", "checkpoint_keep=2", "callbacks.monitor=val/loss", "callbacks.mode=min"],
        out,
    )
    result = run_training(cfg, out)
    losses = [v["val/loss"] for v in _validations(out)]
    assert len(losses) == 4 and len(set(losses)) == 4
    ranked = sorted(range(4), key=losses.__getitem__)[:2]  # the epochs of the two lowest validation losses
    kept = sorted(p.name for p in (out / "checkpoints").glob("*.ckpt"))
    assert kept == sorted(
        ["last.ckpt", *(f"epoch={e}-step={4 * (e + 1)}-val_loss={losses[e]:.4f}.ckpt" for e in ranked)]
    )
    best = (
        out
        / "checkpoints"
        / f"epoch={ranked[0]}-step={4 * (ranked[0] + 1)}-val_loss={losses[ranked[0]]:.4f}.ckpt"
    )
    assert result["best_checkpoint"] == str(best)
    saved = load_file(out / "adapter" / "adapter_model.safetensors")
    assert result["weights"] == ("last" if ranked[0] == 3 else "best")
    assert _same_weights(saved, _checkpoint_adapter(best))
    if ranked[0] != 3:  # the best is not the last epoch: the saved adapter is not the last weights
        assert not _same_weights(saved, _checkpoint_adapter(out / "checkpoints" / "last.ckpt"))


@pytest.mark.slow
def test_val_acc_is_the_best_seen_and_weights_last_saves_the_final_adapter(compose, tmp_path):
    out = tmp_path / "run"
    cfg = compose("train", [*EPOCHS, "recipe.epochs=3", "callbacks.weights=last"], out)
    result = run_training(cfg, out)
    accs = [v["val/acc"] for v in _validations(out)]
    assert len(accs) == 3
    assert result["val_acc"] == pytest.approx(max(accs)) and result["val_acc_last"] == pytest.approx(accs[-1])
    (best,) = [p for p in (out / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    assert best.name.startswith(f"epoch={accs.index(max(accs))}-") and f"val_acc={max(accs):.4f}" in best.name
    assert result["weights"] == "last"
    saved = load_file(out / "adapter" / "adapter_model.safetensors")
    assert _same_weights(saved, _checkpoint_adapter(out / "checkpoints" / "last.ckpt"))


@pytest.mark.slow
def test_early_stopping_ends_the_run_once_val_loss_stops_improving(compose, tmp_path):
    out = tmp_path / "run"
    # An improvement must lower the loss by min_delta. A loss that falls for all 8 epochs (the trajectory
    # moves with the thread count and with what ran before in the process) would never stop a run with
    # min_delta 0, so min_delta is set above any cross-entropy here (ln of the vocabulary is below 10): the
    # first validation sets the best, the second cannot improve on it, and patience 1 stops the run there.
    cfg = compose(
        "train",
        [
            *EPOCHS,
            "recipe.epochs=8",
            "callbacks=early_stopping",
            "callbacks.monitor=val/loss",
            "callbacks.mode=min",
            "callbacks.patience=1",
            "callbacks.min_delta=100.0",
        ],
        out,
    )
    result = run_training(cfg, out)
    losses = [v["val/loss"] for v in _validations(out)]
    assert all(0 < loss < 100 for loss in losses)
    assert len(losses) == 2 and result["global_step"] == 4 * len(losses)  # 2 of the 8 epochs, 4 steps each


@pytest.mark.slow
def test_without_validation_keep_n_keeps_the_newest_n(compose, tmp_path):
    out = tmp_path / "run"
    cfg = compose(
        "train",
        [*TINY, "logger=none", "recipe.epochs=3", "trainer.limit_val_batches=0", "checkpoint_keep=2"],
        out,
    )
    result = run_training(cfg, out)
    kept = sorted(p.name for p in (out / "checkpoints").glob("*.ckpt"))
    assert kept == ["epoch=1-step=8.ckpt", "epoch=2-step=12.ckpt", "last.ckpt"]
    assert result["weights"] == "last" and result["val_acc"] is None


def test_generated_accuracy_uses_a_fixed_slice_the_loss_every_val_item(tmp_path):
    from mvqa.data.datamodule import VQADataModule
    from mvqa.data.synthetic import read_synthetic

    items = read_synthetic(str(tmp_path), n_train=4, n_val=6, n_test=2, image_size=16)[0]

    def ids(batch):
        return batch

    dm = VQADataModule(items[:2], items, ids, ids, batch_size=2, eval_batch_size=4, val_generate_limit=3)
    loss_loader, generate_loader = dm.val_dataloader()
    assert [it.id for b in loss_loader for it in b] == [it.id for it in items]
    assert [it.id for b in generate_loader for it in b] == [it.id for it in items[:3]]
    assert [it.id for b in generate_loader for it in b] == [
        it.id for b in generate_loader for it in b
    ]  # fixed


def test_callbacks_config_errors_name_the_key(compose, tmp_path):
    from mvqa.train.callbacks import build_callbacks

    with pytest.raises(ValueError, match="callbacks.weights must be 'best' or 'last', got 'newest'"):
        build_callbacks(compose("train", ["callbacks.weights=newest"]).callbacks, tmp_path, True)
    with pytest.raises(ValueError, match="callbacks.early_stopping needs validation"):
        build_callbacks(compose("train", ["callbacks=early_stopping"]).callbacks, tmp_path, False)
