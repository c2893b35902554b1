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
