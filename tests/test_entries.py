"""The three entries: their configs compose, typos fail at compose time, run dirs never collide."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from mvqa.config import PROJECT_ROOT


@pytest.mark.parametrize("entry", ["generate", "train", "evaluate"])
def test_each_entry_composes_and_resolves(compose, entry):
    cfg = compose(entry)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["seed"] == 0 and resolved["logger"]["kind"] == "wandb"


@pytest.mark.parametrize("override, key", [("dataset.nn_train=3", "nn_train"), ("recipe.rr=3", "rr"),
                                           ("trainer.max_step=3", "max_step"), ("seeed=1", "seeed")])
def test_a_misspelt_key_fails_at_compose_time_naming_it(compose, override, key):
    with pytest.raises(ConfigCompositionException, match=key):
        compose("train", [override])


def test_a_typo_inside_a_group_yaml_fails(compose, tmp_path, monkeypatch):
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="recipe", name="typo_recipe", node={"defaults": ["schema_recipe"],
                                                                          "lrr": 0.1})
    with pytest.raises(ConfigCompositionException):
        compose("train", ["recipe=typo_recipe"])


def test_unknown_group_option_lists_the_options(compose):
    with pytest.raises(ConfigCompositionException, match="tiny_llava"):
        compose("train", ["model=llava_med_v9"])


@pytest.mark.parametrize("name", ["base", "reasoner", "finetune"])
def test_demo_experiments_compose(compose, name):
    cfg = compose("train", [f"experiment=demo/{name}"])
    assert cfg.experiment_name == f"demo_{name}" and cfg.trace_format.answer_format == "text"


def test_two_jobs_started_in_the_same_second_get_their_own_run_dirs(tmp_path):
    cmd = [sys.executable, str(PROJECT_ROOT / "generate.py"), "dataset=mvqa1k_release", "dataset.limit=5",
           "pipeline.stages=[filter]", "logger=none", f"pipeline.cache_dir={tmp_path}/stages"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(2)]
    for p in procs:
        assert p.wait() == 0, p.stderr.read().decode()
    runs = list((tmp_path / "outputs" / "generate").glob("*/*"))
    assert len(runs) == 2 and all((r / "summary.json").is_file() for r in runs)
