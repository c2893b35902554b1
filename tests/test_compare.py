"""`python -m mvqa.compare` on run dirs: fabricated ones, and a real Hydra multirun of a tiny app."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from PIL import Image

from mvqa.compare import DIVERSITY_METRIC, differing_keys, load_runs, main
from mvqa.eval import compute_metrics, write_report


def predictions(skill: float, seed: int, n: int = 40) -> list[dict]:
    """Synthetic evaluate predictions: base and a tuned model over 2 caps x 2 wait counts."""
    rng = random.Random(seed)
    out = []
    for model, bonus in (("base", 0.0), ("base+adapter:lora_r8", 0.15)):
        for cap in (16, 32):
            for waits in (0, 2):
                budget = {"max_thinking_tokens": cap, "min_thinking_tokens": 0, "num_waits": waits,
                          "wait_string": "Wait"}
                for i in range(n):
                    tokens = rng.randint(cap // 2, cap)
                    out.append({"model": model, "budget_id": f"max{cap}_min0_w{waits}_Wait", "budget": budget,
                                "item_id": f"q{i}", "modality": "CT", "content_type": "closed",
                                "answer_label": "A",
                                "raw_output": "", "thinking": "", "parsed_answer": "A", "parse_status": "ok",
                                "correct": rng.random() < skill + bonus + cap / 400,
                                "thinking_tokens": tokens,
                                "waits_used": waits, "forced_end": tokens == cap})
    return out


def fake_run(run_dir: Path, config: dict, overrides: list[str], choices: dict, metrics: dict | None = None,
             summary: dict | None = None) -> Path:
    """A run dir as Hydra leaves it: .hydra/{config,overrides,hydra}.yaml, plus the run's scores."""
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    hydra_cfg = {
        "hydra": {"mode": "MULTIRUN", "job": {"name": "evaluate", "override_dirname": ",".join(overrides)},
                  "runtime": {"output_dir": str(run_dir),
                              "choices": {**choices, "hydra/launcher": "basic", "hydra/sweeper": "basic"}}}}
    (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump(hydra_cfg))
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def eval_config(wait: str, dataset: str) -> dict:
    return {"seed": 0, "paths": {"output_dir": "${hydra:runtime.output_dir}"},
            "model": {"path": "/cache/tiny_llava", "dtype": "float32"},
            "dataset": {"_target_": f"mvqa.data.readers.{dataset}", "path": f"/data/{dataset}",
                        "split": "test"},
            "budget": {"max_thinking_tokens": [16, 32], "num_waits": [0, 2], "wait_string": wait},
            "logger": {"kind": "csv"}}


@pytest.fixture
def eval_multirun(tmp_path) -> tuple[Path, list[dict]]:
    """multirun/<time>/{0,1,2}: wait_string Wait/Hmm on synthetic, and Wait on slake; metrics by
    write_report."""
    root = tmp_path / "multirun" / "12-00-00"
    all_metrics = []
    for job, (wait, dataset, skill) in enumerate((("Wait", "synthetic", 0.3), ("Hmm", "synthetic", 0.5),
                                                   ("Wait", "slake", 0.4))):
        run_dir = root / str(job)
        metrics = compute_metrics(predictions(skill, job), n_bootstrap=100)
        fake_run(run_dir, eval_config(wait, dataset), [f"budget.wait_string={wait}", f"dataset={dataset}"],
                 {"dataset": dataset, "budget": "s1", "model": "tiny_llava", "logger": "csv"})
        write_report(metrics, run_dir, plots=False)
        all_metrics.append(metrics)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root, all_metrics


def test_multirun_dir_table_names_swept_keys_and_scores(eval_multirun, tmp_path, capsys):
    root, all_metrics = eval_multirun
    plot = tmp_path / "cmp.png"
    assert main([str(root), "--plot", str(plot), "--width", "220"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.strip().startswith("run"))
    assert "budget.wait_string" in header and "dataset" in header
    # constant keys and keys inside a changed group (dataset.path) are not columns
    for hidden in ("model.path", "seed", "dataset.path", "budget.num_waits", "hydra/launcher"):
        assert hidden not in header
    for job, metrics in enumerate(all_metrics):
        for model in ("base", "base+adapter:lora_r8"):
            s = metrics["scaling"][model]
            row = next(line for line in out.splitlines() if f" {s['performance']:.3f} " in line
                       and model in line)
            assert s["best_budget_id"] in row
    assert "Hmm" in out and "slake" in out
    assert "Accuracy per budget point" in out and "max32_min0_w2_Wait" in out
    with Image.open(plot) as img:
        assert img.format == "PNG" and img.size[0] > 400


def test_glob_and_explicit_dirs_give_the_same_runs(eval_multirun):
    root, _ = eval_multirun
    by_glob = load_runs([str(root / "*")])
    by_dir = load_runs([str(root / "0"), str(root / "1"), str(root / "2")])
    assert [r.dir for r in by_glob] == [r.dir for r in by_dir] == [root / "0", root / "1", root / "2"]
    assert [r.label for r in by_glob] == ["0", "1", "2"]
    assert differing_keys(by_glob) == ["dataset", "budget.wait_string"]


def test_train_and_generate_runs_show_their_scores(tmp_path, capsys):
    for job, (r, acc) in enumerate(((8, 0.61), (16, 0.725))):
        fake_run(tmp_path / "train" / str(job),
                 {"seed": 0, "lora": {"r": r, "alpha": 2 * r}, "trainer": {"lr": 2e-4}},
                 [f"lora.r={r}", f"lora.alpha={2 * r}"], {"lora": "default"},
                 metrics={"val_acc": acc, "epoch": 1})
    for job, (w, div, cov) in enumerate(((0.5, 0.8123, 0.3011), (0.8, 0.8457, 0.2877))):
        output = {"mean_pairwise_cosine_distance": div, "coverage": cov, "outliers": 7 + job, "distinct": 10}
        fake_run(tmp_path / "generate" / str(job),
                 {"sampler": {"question_weight": w}, "optimized_metric": None},
                 [f"sampler.question_weight={w}"], {"sampler": "fast"},
                 summary={"n_final": 10, "diversity": {"output": output}})
    assert main([str(tmp_path / "train"), "--width", "200"]) == 0
    out = capsys.readouterr().out
    assert "lora.r" in out and "lora.alpha" in out and "trainer.lr" not in out
    assert "val_acc" in out and "0.610" in out and "0.725" in out
    assert main([str(tmp_path / "generate"), "--width", "200"]) == 0
    out = capsys.readouterr().out
    assert "sampler.question_weight" in out and "diversity.output.mean_pairwise_cosine_distance" in out
    assert "0.8123" in out and "0.8457" in out and "distinct" not in out
    # spread, coverage and outliers ride along with whatever metric the run optimised
    assert "diversity.output.coverage" in out and "0.3011" in out and "0.2877" in out
    assert "diversity.output.outliers" in out and " 8 " in out


def test_the_default_diversity_metric_is_one_curation_writes():
    from sklearn.feature_extraction.text import TfidfVectorizer

    from mvqa.curate.diversity import set_figures
    from mvqa.schemas.entries import GenerateConf

    assert DIVERSITY_METRIC == GenerateConf.optimized_metric == "mean_pairwise_cosine_distance"
    assert DIVERSITY_METRIC in set_figures([], TfidfVectorizer())  # the key the diversity report writes


def test_dir_without_metrics_is_a_clear_error(eval_multirun, tmp_path, capsys):
    root, _ = eval_multirun
    (root / "1" / "metrics.json").unlink()
    with pytest.raises(SystemExit) as exc:
        main([str(root)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"{root / '1'}: no metrics.json" in err and "did the job finish?" in err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nothing-*")])
    assert "matches no directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(SystemExit):
        main([str(empty)])
    assert "not a run dir" in capsys.readouterr().err


def test_plot_needs_an_evaluate_run(tmp_path, capsys):
    fake_run(tmp_path / "t", {"lora": {"r": 8}}, [], {}, metrics={"val_acc": 0.5})
    with pytest.raises(SystemExit):
        main([str(tmp_path / "t"), "--plot", str(tmp_path / "p.png")])
    assert "none of these runs is an evaluate run" in capsys.readouterr().err
    (tmp_path / "t" / "metrics.json").write_text(json.dumps({"loss": 1.0}))
    with pytest.raises(SystemExit):
        main([str(tmp_path / "t")])
    assert "no scores found" in capsys.readouterr().err


APP = '''
import random
import hydra
from hydra.core.hydra_config import HydraConfig
from mvqa.eval import compute_metrics, write_report

@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    rng = random.Random(cfg.seed)
    skill = {"Wait": 0.3, "Hmm": 0.6}[cfg.budget.wait_string] + (0.1 if cfg.dataset.name == "slake" else 0.0)
    preds = []
    for cap in cfg.budget.max_thinking_tokens:
        budget = {"max_thinking_tokens": cap, "min_thinking_tokens": 0, "num_waits": 1,
                  "wait_string": cfg.budget.wait_string}
        for i in range(30):
            preds.append({"model": "base", "budget_id": f"max{cap}", "budget": budget, "item_id": i,
                          "modality": "CT", "content_type": "closed", "answer_label": "A", "raw_output": "",
                          "thinking": "", "parsed_answer": "A", "parse_status": "ok",
                          "correct": rng.random() < skill, "thinking_tokens": cap - 2, "waits_used": 1,
                          "forced_end": False})
    write_report(compute_metrics(preds, n_bootstrap=50), HydraConfig.get().runtime.output_dir, plots=False)

main()
'''


@pytest.mark.slow
def test_real_hydra_multirun(tmp_path, capsys):
    app = tmp_path / "app"
    (app / "dataset").mkdir(parents=True)
    (app / "app.py").write_text(APP)
    (app / "config.yaml").write_text(textwrap.dedent("""
        defaults: [{dataset: synthetic}, _self_]
        seed: 0
        model: {path: /cache/tiny_llava}
        budget: {max_thinking_tokens: [16, 32], wait_string: Wait}
    """))
    for name in ("synthetic", "slake"):
        (app / "dataset" / f"{name}.yaml").write_text(f"name: {name}\npath: /data/{name}\n")
    sweep = tmp_path / "multirun"
    subprocess.run(
        [sys.executable, str(app / "app.py"), "-m", "budget.wait_string=Wait,Hmm", "dataset=synthetic,slake",
         f"hydra.sweep.dir={sweep}"], check=True, cwd=tmp_path, capture_output=True)
    assert main([str(sweep), "--width", "200"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.strip().startswith("run"))
    assert "dataset" in header and "budget.wait_string" in header and "dataset.path" not in header
    for job in range(4):
        metrics = json.loads((sweep / str(job) / "metrics.json").read_text())
        overrides = yaml.safe_load((sweep / str(job) / ".hydra" / "overrides.yaml").read_text())
        wait, dataset = (o.split("=")[1] for o in overrides)
        row = next(line for line in out.splitlines() if line.strip().startswith(f"{job} "))
        assert wait in row and dataset in row and f"{metrics['scaling']['base']['performance']:.3f}" in row
