"""Schema of the `eval/` group: what `evaluate.py` runs the models on and how it reports."""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "eval"


@dataclass
class EvalConf:
    # The split to evaluate; null: the dataset's own test split (dataset.test_split), else all its items.
    split: str | None = None
    # A curated set (final.csv or items.jsonl) whose questions must not be evaluated on (held-out only).
    exclude: str | None = None
    limit: int | None = None
    prompt: str = "med_r1_seed"  # a key of mvqa.prompts.PROMPTS
    # How the bare base is asked. A base that was never taught to think (LLaVA-Med) is fairest judged as it is
    # used: its own prompt (null: `prompt`) and, with base_budget=unforced, one plain run that every budget
    # point of the fine-tuned models is paired against. base_budget=same runs it over the grid like the rest.
    base_prompt: str | None = None
    base_budget: str = "same"
    batch_size: int = 16
    n_bootstrap: int = 1000
    wandb_table_rows: int = 200


SCHEMAS = {"schema_eval": EvalConf}
