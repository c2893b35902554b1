"""A training run's adapter merged into its base as a standalone Hugging Face checkpoint, with a model card.

The output holds safetensors weights, config, processor, tokenizer and chat template, loads with the family's
`from_pretrained` (and in vLLM or an external harness as a plain model), and its README.md records the run's
config, the data it was trained on (with the curation run behind a curated set), its evaluation numbers and
the commands that made it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def run_config(run_dir: Path) -> DictConfig:
    """The composed config Hydra saved for a train.py run (RUN_DIR/.hydra/config.yaml)."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a train.py run dir: expected its config at {path}")
    from mvqa.config import setup

    setup()  # the resolvers the saved config's interpolations use
    return OmegaConf.load(path)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def data_lineage(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The dataset node the run trained on and, for a curated set, the curation run's funnel and stages."""
    dataset = (metrics or {}).get("dataset") or {}
    lineage: dict[str, Any] = {"dataset": dataset}
    if metrics:
        lineage.update(n_train=metrics.get("n_train"), n_val=metrics.get("n_val"))
    if dataset.get("name") == "curated" and dataset.get("path"):
        curation = Path(dataset["path"]).parent
        summary, manifest = _read_json(curation / "summary.json"), _read_json(curation / "manifest.json")
        lineage["curation_run"] = str(curation)
        if summary:
            lineage["curation_funnel"] = summary.get("funnel")
        if manifest:
            cfg = manifest.get("config", {})
            lineage["curation"] = {k: cfg.get(k) for k in ("dataset", "scorer", "sampler") if k in cfg}
            lineage["curation_models"] = {
                k: (cfg.get(k) or {}).get("path") or (cfg.get(k) or {}).get("name")
                for k in ("scorer_model", "reasoner")
                if k in cfg
            }
    return lineage


def model_card(
    run_dir: Path, cfg: DictConfig, metrics: dict[str, Any] | None, evals: list[Path], command: str
) -> str:
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    train_cmd = "python train.py " + " ".join(shlex.quote(o) for o in overrides or [])
    lines = [
        f"# {cfg.model.name} + LoRA ({cfg.recipe.name}), merged",
        "",
        (
            f"Merged from the adapter of the training run `{run_dir}` onto its base `{cfg.model.name}` "
            f"(path: `{cfg.model.get('path')}`). A standalone Hugging Face checkpoint: load it with the "
            f"`{cfg.model.family}` family's `from_pretrained`; no PEFT needed."
        ),
        "",
        "## Commands",
        "",
        "```bash",
        train_cmd.strip(),
        command,
        "```",
        "",
    ]
    lines += ["## Evaluation", ""]
    if metrics:
        numbers = {k: metrics.get(k) for k in ("val_acc", "val_acc_last", "weights", "global_step")}
        lines += [
            (
                "Validation during training (`val_acc`: the best checkpoint's, what was exported "
                "unless `weights` says last):"
            ),
            "",
            "```json",
            json.dumps(numbers, indent=1),
            "```",
            "",
        ]
    for ev in evals:
        ev_metrics = _read_json(ev / "metrics.json")
        if ev_metrics is None:
            raise FileNotFoundError(f"--eval {ev}: expected an evaluate.py run dir with metrics.json")
        report = ev / "report.md"
        lines += [f"Evaluation run `{ev}`:", ""]
        lines += (
            [report.read_text(), ""]
            if report.is_file()
            else ["```json", json.dumps(ev_metrics, indent=1)[:20000], "```", ""]
        )
    if not metrics and not evals:
        lines += ["No evaluation numbers were found for this run.", ""]
    lines += [
        "## Data lineage",
        "",
        "```json",
        json.dumps(data_lineage(metrics), indent=1, default=str),
        "```",
        "",
    ]
    lines += ["## The run's config", "", "```yaml", OmegaConf.to_yaml(cfg).strip(), "```", ""]
    return "\n".join(lines)


def export_run(
    run_dir: str | Path, out_dir: str | Path, evals: list[str | Path] = (), command: str | None = None
) -> Path:
    """Merge RUN_DIR/adapter into the run's base model and write the checkpoint and its card to out_dir."""
    from mvqa.models.load import load_model
    from mvqa.models.lora import load_adapter, merge_and_export

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cfg = run_config(run_dir)
    adapter = run_dir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        full = run_dir / "model"
        hint = (
            f" ({full} is a full fine-tune: it is already a standalone checkpoint)" if full.is_dir() else ""
        )
        raise FileNotFoundError(f"no adapter to merge at {adapter}{hint}")
    base_conf = OmegaConf.create({**OmegaConf.to_container(cfg.model, resolve=True), "adapter": None})
    bundle = load_model(base_conf)  # the base as training loaded it (its added think/answer tokens included)
    model = load_adapter(bundle.model, adapter)
    metrics = _read_json(run_dir / "metrics.json")
    command = command or "python -m mvqa.export " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    card = model_card(run_dir, cfg, metrics, [Path(e) for e in evals], command)
    bundle.processor.chat_template = bundle.processor.tokenizer.chat_template = bundle.chat_template
    path = merge_and_export(model, bundle.processor, out_dir)
    (path / "README.md").write_text(card, encoding="utf-8")
    (path / "mvqa_export.json").write_text(
        json.dumps(
            {
                "run_dir": str(run_dir.resolve()),
                "family": cfg.model.family,
                "base": cfg.model.name,
                "special_tokens": dataclasses.asdict(bundle.special_tokens),
            },
            indent=1,
            default=str,
        )
    )
    log.info("merged %s onto %s: %s", adapter, cfg.model.name, path)
    return path
