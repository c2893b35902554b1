"""What a stage did to the items: counts in and out, and every dropped row with its reason.

Nothing is dropped silently: a stage that removes an item records it here, and the stats are written next to
the stage's output.
"""

from __future__ import annotations

import collections
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StageStats:
    stage: str
    n_in: int = 0
    n_out: int = 0
    dropped: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def drop(self, item_id: str, reason: str, **detail: Any) -> None:
        self.dropped.append({"id": item_id, "reason": reason, **detail})

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    @property
    def drop_reasons(self) -> dict[str, int]:
        return dict(collections.Counter(d["reason"] for d in self.dropped))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop_reasons": self.drop_reasons}

    def summary(self) -> str:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.drop_reasons.items()))
        return f"{self.stage}: {self.n_in} -> {self.n_out}" + (f" (dropped {reasons})" if reasons else "")
