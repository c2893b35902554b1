"""Schema of the `budget/` group: s1-style budget forcing; `budget_points` expands the grid."""

from __future__ import annotations

from dataclasses import dataclass, field

GROUP = "budget"


@dataclass
class BudgetConf:
    # The grid is max_thinking_tokens x num_waits. Empty max_thinking_tokens: no budget forcing (`none`).
    max_thinking_tokens: list[int] = field(default_factory=list)
    num_waits: list[int] = field(default_factory=lambda: [0])
    min_thinking_tokens: int = 0
    wait_string: str = "Wait"  # s1's ablation also tried "Hmm" and "Alternatively"
    # Appended after the answer opener when the end of thinking is forced (s1 appends "Final Answer:").
    final_answer_string: str = ""
    max_answer_tokens: int = 32
    # Put the think opener at the end of the prompt (s1 and m1 force it) so thinking starts at once.
    force_think_start: bool = True


SCHEMAS = {"schema_budget": BudgetConf}
