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

    # reason -> how many warnings of it, so the console line can count them like drops
    warning_reasons: dict[str, int] = field(default_factory=dict)

    def warn(self, message: str, reason: str = "warning") -> None:
        self.warnings.append(message)
        self.warning_reasons[reason] = self.warning_reasons.get(reason, 0) + 1

    @property
    def drop_reasons(self) -> dict[str, int]:
        return dict(collections.Counter(d["reason"] for d in self.dropped))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop_reasons": self.drop_reasons}

    def summary(self) -> str:
        """One console line: in -> out, every drop by reason, every warning by reason (with the first one)."""
        parts = []
        if self.dropped:
            parts.append("dropped " + ", ".join(f"{r}: {n}" for r, n in sorted(self.drop_reasons.items())))
        if self.warnings:
            # Warnings recorded before reasons existed (an old cached stats.json) count as plain "warning".
            reasons = self.warning_reasons or {"warning": len(self.warnings)}
            parts.append("warned " + ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items()))
                         + f"; first: {self.warnings[0]}")
        return f"{self.stage}: {self.n_in} -> {self.n_out}" + (f" ({'; '.join(parts)})" if parts else "")
