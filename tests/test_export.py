"""`python -m mvqa.export` (its main(), run in this process): a real tiny training run's adapter merged into a
standalone HF checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY
from omegaconf import OmegaConf

from mvqa.config import PROJECT_ROOT
from mvqa.data.images import load_image
from mvqa.data.prompts import chat_prompt, format_question
from mvqa.data.synthetic import read_synthetic
from mvqa.export import main as export_main
from mvqa.models.load import family_of, load_model
from mvqa.train.recipe import run_training


@pytest.mark.slow
def test_merged_export_loads_back_with_the_logits_of_base_plus_adapter(compose, tmp_path, monkeypatch,
                                                                       capsys):
    run = tmp_path / "run"
    overrides = [*TINY, "trainer.max_steps=4", "trainer.limit_val_batches=0", "logger=none", "recipe.lr=1e-2"]
    cfg = compose("train", overrides, run)
    run_training(cfg, run)
    (run / ".hydra").mkdir()  # what Hydra leaves in a train.py run dir
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))

    out = tmp_path / "merged"
    # `python -m mvqa.export RUN OUT`, in this process: its main() reads sys.argv (the card quotes it).
    monkeypatch.setattr(sys, "argv", [str(PROJECT_ROOT / "mvqa" / "export.py"), str(run), str(out)])
    export_main()
    assert Path(capsys.readouterr().out.splitlines()[-1]).resolve() == out.resolve()  # it prints where
    assert sorted(p.name for p in out.glob("*.safetensors")) and not list(out.glob("adapter_*"))
    family = family_of(cfg.model)
    merged = family.model_class.from_pretrained(out).eval()
    processor = family.processor_class.from_pretrained(out)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    base_plus_adapter = load_model(OmegaConf.create({**model, "adapter": str(run / "adapter")}))
    bare = load_model(cfg.model)
    assert processor.chat_template == base_plus_adapter.chat_template
    assert processor.tokenizer.get_vocab() == base_plus_adapter.tokenizer.get_vocab()

    item = read_synthetic(str(tmp_path / "world"), n_train=2, n_val=1, n_test=1, image_size=32)[0][0]
    prompt = chat_prompt(processor, format_question(item, "direct"))
    enc = processor(text=[prompt], images=[load_image(item)], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        got = merged(**enc).logits
        want = base_plus_adapter.model(**enc).logits
        base = bare.model(**enc).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert float((want - base).abs().max()) > 1e-3  # the adapter trained: merging it changed the model

    card = (out / "README.md").read_text()
    assert (
        "python train.py" in card and "trainer.max_steps=4" in card and f"python -m mvqa.export {run}" in card
    )
    assert '"name": "synthetic"' in card and "recipe:" in card and "lora_r8" in card
    assert json.loads((out / "mvqa_export.json").read_text())["run_dir"] == str(run.resolve())


def test_export_of_a_dir_without_an_adapter_says_what_it_expected(tmp_path):
    from mvqa.models.export import export_run

    with pytest.raises(FileNotFoundError, match="not a train.py run dir: expected its config at"):
        export_run(tmp_path, tmp_path / "out")
