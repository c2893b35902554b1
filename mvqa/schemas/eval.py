"""Schema of the `eval/` group: what `evaluate.py` runs the models on and how it reports."""

from __future__ import annotations

from dataclasses import dataclass, field

GROUP = "eval"


@dataclass
class EvalConf:
    # The split to evaluate; null: the dataset's own test split (dataset.test_split), else all its items.
    split: str | None = None
    # A curated set (final.csv or items.jsonl) whose questions must not be evaluated on (held-out only).
    exclude: str | None = None
    limit: int | None = None
    # Question kinds to evaluate (mcq, closed, open); empty: every kind the dataset has, each scored its way.
    kinds: list[str] = field(default_factory=list)
    prompt: str = "med_r1_seed"  # a key of mvqa.data.prompts.PROMPTS
    # How the bare base is asked. same: over the budget grid like every model (s1's protocol), with
    # base_prompt. A base never taught to think (LLaVA-Med) is also worth judging as it is used: unforced runs
    # it once with its own prompt (base_prompt; null: `prompt`), paired with every budget point of the other
    # models; both does the two (the grid with `prompt`, the plain run with base_prompt).
    base_prompt: str | None = None
    base_budget: str = "same"  # same | unforced | both
    batch_size: int = 16
    n_bootstrap: int = 1000
    wandb_table_rows: int = 200


SCHEMAS = {"schema_eval": EvalConf}
