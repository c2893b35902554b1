"""The data-selection study's resume rule. The study end to end (pool, arms of N, fine-tunes per arm and seed
through Hydra's multirun, one evaluation, the report) and its resume after kill -9 are tested through the demo
that runs it: tests/test_demo_chain.py."""

from __future__ import annotations


def test_a_fine_tune_killed_after_its_adapter_but_before_metrics_is_redone(tmp_path):
    from mvqa.study import train_dir, unfinished_fine_tunes

    for arm in ("curated", "random"):
        adapter = train_dir(tmp_path, arm, 0) / "adapter"
        adapter.mkdir(parents=True)
        (adapter / "adapter_config.json").write_text("{}")
    (train_dir(tmp_path, "curated", 0) / "metrics.json").write_text("{}")  # only curated got its last write
    assert unfinished_fine_tunes(tmp_path, ["curated", "random"], 0) == ["random"]
    assert unfinished_fine_tunes(tmp_path, ["curated", "random"], 1) == ["curated", "random"]


def test_unfinished_fine_tunes_launch_as_one_multirun_per_set_of_seeds_lacking_the_same_arms(tmp_path,
                                                                                          monkeypatch):
    from omegaconf import OmegaConf

    from mvqa import study

    launched = []
    monkeypatch.setattr(study, "run_entry", lambda entry, overrides, multirun, threads: launched.append(
        [o for o in overrides if o.startswith(("seed=", "experiment_name="))]))
    cfg = OmegaConf.create({"study": {"seeds": [0, 1, 2], "run": ["curated", "random"], "train": [],
                                      "launcher": [], "name": "s", "train_threads": 1},
                            "logger": {"kind": "none"}})
    study.run_fine_tunes(cfg, tmp_path)  # a fresh study: arms x seeds in one sweep, seed by seed
    assert launched == [["seed=0,1,2", "experiment_name=curated,random"]]
    for arm, seed in (("curated", 0), ("random", 0), ("random", 2)):
        study.train_dir(tmp_path, arm, seed).mkdir(parents=True)
        (study.train_dir(tmp_path, arm, seed) / "metrics.json").write_text("{}")
    launched.clear()
    study.run_fine_tunes(cfg, tmp_path)
    assert launched == [["seed=1", "experiment_name=curated,random"], ["seed=2", "experiment_name=curated"]]
