"""The three entries: their configs compose, typos fail at compose time, run dirs never collide."""

from __future__ import annotations

import re
import shlex
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


@pytest.mark.parametrize("entry, override, key", [
    ("train", "dataset.nn_train=3", "nn_train"), ("train", "recipe.rr=3", "rr"),
    ("train", "trainer.max_step=3", "max_step"), ("train", "seeed=1", "seeed"),
    ("train", "data.batchsize=8", "batchsize"), ("train", "gradient_checkpoint=true", "gradient_checkpoint"),
    ("train", "data.batch_size=eight", "batch_size"), ("train", "checkpoint_keep=all", "checkpoint_keep"),
    ("generate", "num_shard=3", "num_shard"), ("generate", "shard=first", "shard"),
    ("evaluate", "include_bse=false", "include_bse"), ("evaluate", "adapters=3", "adapters")])
def test_a_misspelt_key_fails_at_compose_time_naming_it(compose, entry, override, key):
    with pytest.raises(ConfigCompositionException, match=key):
        compose(entry, [override])


def test_an_experiment_with_a_misspelt_entry_key_fails(compose):
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="experiment", name="typo_experiment", package="_global_",
                                 node={"data": {"batchsize": 4}})
    with pytest.raises(ConfigCompositionException, match="batchsize"):
        compose("train", ["experiment=typo_experiment"])


def unset_keys(cfg, prefix: str = "") -> list[str]:
    """The keys left at `???`, read without resolving (OmegaConf.missing_keys resolves, and fails on them)."""
    keys = []
    for key in cfg:
        node = cfg._get_node(key)
        if OmegaConf.is_dict(node) and not node._is_none():
            keys += unset_keys(node, f"{prefix}{key}.")
        elif not OmegaConf.is_config(node) and node._value() == "???":
            keys.append(f"{prefix}{key}")
    return keys


EXPERIMENTS = sorted(p.relative_to(PROJECT_ROOT / "conf" / "experiment").with_suffix("").as_posix()
                     for p in (PROJECT_ROOT / "conf" / "experiment").rglob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(compose, name):
    cfg = compose("train", [f"experiment={name}"])
    # What the experiment leaves to the command line (e.g. demo/finetune's dataset.path) gets a placeholder.
    for key in unset_keys(cfg):
        OmegaConf.update(cfg, key, "GIVEN_ON_THE_COMMAND_LINE")
    OmegaConf.to_container(cfg, resolve=True)  # raises on an interpolation that points nowhere
    assert cfg.experiment_name


def readme_commands() -> list[tuple[str, list[str]]]:
    """(entry, argv) of every `python generate.py|train.py|evaluate.py|-m mvqa.train.memory` line in the
    README's bash blocks, continuation lines joined and comments dropped."""
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if len(words) < 2 or words[0] != "python":
                continue
            if words[1] in ("generate.py", "train.py", "evaluate.py"):
                commands.append((words[1].removesuffix(".py"), words[2:]))
            elif words[1:3] == ["-m", "mvqa.train.memory"]:
                commands.append(("train", words[3:]))
    return commands


def first_of_each_sweep(args: list[str]) -> list[str]:
    """A multirun's overrides as one job's: `-m` dropped, each sweep (a,b / range(..)) at its first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides([a for a in args if a not in ("-m", "--multirun")])
    single = []
    for o in overrides:
        if o.is_sweep_override():
            value = next(iter(o.sweep_string_iterator()))
        else:
            value = o.get_value_element_as_str()
        single.append(f"{o.get_key_element()}={value}")
    return single


README_COMMANDS = readme_commands()


def test_the_readme_has_commands_for_every_entry():
    assert {entry for entry, _ in README_COMMANDS} == {"generate", "train", "evaluate"}
    assert len(README_COMMANDS) >= 20, README_COMMANDS


@pytest.mark.parametrize("entry, args", README_COMMANDS,
                         ids=[" ".join([e, *a])[:90] for e, a in README_COMMANDS])
def test_every_readme_command_composes(compose, entry, args):
    cfg = compose(entry, first_of_each_sweep(args))
    for override in first_of_each_sweep(args):
        key = override.split("=", 1)[0]
        is_group = "/" in key or "@" in key or (PROJECT_ROOT / "conf" / key).is_dir()
        if not is_group and not key.startswith("hydra."):
            assert OmegaConf.select(cfg, key) is not None, f"{override} set nothing in the composed config"


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
    """Both entries resolve their run dir as Hydra does (`--cfg hydra --resolve`), started together: the same
    date and second, different uid tokens. No job runs, so this costs two interpreter start-ups."""
    cmd = [sys.executable, str(PROJECT_ROOT / "generate.py"), "--cfg", "hydra", "--package", "hydra.run.dir",
           "--resolve"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    dirs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        dirs.append(out.strip().splitlines()[-1])
    pattern = re.compile(r"outputs/generate/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d_([0-9a-f]+)")
    assert all(pattern.fullmatch(d) for d in dirs), dirs
    assert dirs[0] != dirs[1], dirs
