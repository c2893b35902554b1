"""s1-style budget forcing of the thinking section, for any causal LM and any delimiters.

One set of rules, run two ways whose greedy outputs are token-identical:
- `BudgetForcer` (single pass): a logits processor plus stopping criterion with per-row state, so a
  left-padded batch runs in ONE `generate` call with no re-prefill per Wait. Exact for greedy decoding only:
  it decides on the argmax, which is not the token a sampler would draw.
- `multipass_budget_forcing` (s1's loop): generate until a stop id, then append a Wait and re-prefill. It is
  the greedy reference and the faithful path for sampling (the stop is the token actually drawn).

The rules (all counts in tokens):
- Thinking starts after the think opener (put at the end of the prompt by the engine when
  `force_think_start`) and ends with `SpecialTokens.think_end`, matched as a token sequence because real
  checkpoints write it as several tokens. Thinking tokens include inserted Waits and exclude the delimiter.
- An end attempt is the model choosing the FIRST token of the end delimiter, or an end-of-sequence token,
  while thinking (s1 stops on the first token of its delimiter the same way).
- Below `min_thinking_tokens` end attempts are banned. Otherwise, while Waits are left and the wait string
  fits under the cap, the attempt is replaced by the wait string. Otherwise the end goes through, except an
  end-of-sequence, which is replaced by a forced end: the model stopped without closing its thinking.
- At `max_thinking_tokens` the end is forced: the rest of the delimiter (if the model had begun writing it),
  then the answer opener and `final_answer_string`. Such a generation is marked forced.
- After the delimiter the answer gets at most `max_answer_tokens` tokens (a forced opener included).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LogitsProcessor, StoppingCriteria

from mvqa.models.bundle import SpecialTokens


@dataclass(frozen=True)
class BudgetPoint:
    """One point of a thinking-budget grid."""

    max_thinking_tokens: int
    num_waits: int = 0
    min_thinking_tokens: int = 0
    wait_string: str = "Wait"
    final_answer_string: str = ""
    max_answer_tokens: int = 32
    force_think_start: bool = True

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"budget: {key}={getattr(self, key)!r}, expected {expected}")

        need(self.max_thinking_tokens >= 1, "max_thinking_tokens", ">= 1")
        need(self.num_waits >= 0, "num_waits", ">= 0")
        need(0 <= self.min_thinking_tokens <= self.max_thinking_tokens, "min_thinking_tokens",
             f"between 0 and max_thinking_tokens={self.max_thinking_tokens}")
        need(bool(self.wait_string), "wait_string", "a non-empty string")
        need(self.max_answer_tokens >= 1, "max_answer_tokens", ">= 1")

    @property
    def id(self) -> str:
        """The point's one name, in predictions, metrics, reports and W&B alike (`budget_id`)."""
        return (f"max{self.max_thinking_tokens}_min{self.min_thinking_tokens}_w{self.num_waits}_"
                f"{self.wait_string}")


def budget_points(cfg: Any) -> list[BudgetPoint | None]:
    """Expand the `budget/` config's grid (max thinking x waits) into points.

    An empty `max_thinking_tokens` (the `none` option) gives `[None]`: one run without budget forcing.
    """
    if not cfg.max_thinking_tokens:
        return [None]
    points = [
        BudgetPoint(
            max_thinking_tokens=int(m), num_waits=int(w), min_thinking_tokens=cfg.min_thinking_tokens,
            wait_string=cfg.wait_string, final_answer_string=cfg.final_answer_string,
            max_answer_tokens=cfg.max_answer_tokens, force_think_start=cfg.force_think_start,
        )
        for m in cfg.max_thinking_tokens
        for w in (cfg.num_waits or [0])
    ]
    return list(dict.fromkeys(points))  # a grid listing a value twice runs it once


@dataclass(frozen=True)
class ForcingIds:
    """The token sequences the rules insert or watch for, for one tokenizer."""

    end: tuple[int, ...]  # think_end
    wait: tuple[int, ...]
    answer: tuple[int, ...]  # answer opener + final answer string, forced after a forced end
    eos: frozenset[int]

    @property
    def attempts(self) -> list[int]:
        return sorted({self.end[0], *self.eos})


def forcing_ids(tokenizer: Any, special: SpecialTokens, point: BudgetPoint,
                eos_ids: Iterable[int]) -> ForcingIds:
    def encode(key: str, text: str) -> tuple[int, ...]:
        ids = tuple(tokenizer.encode(text, add_special_tokens=False)) if text else ()
        if text and not ids:
            raise ValueError(f"budget forcing: {key} {text!r} tokenizes to no tokens")
        return ids

    end = encode("special_tokens.think_end", special.think_end)
    if not end:
        raise ValueError("budget forcing needs special_tokens.think_end; it is empty")
    answer = encode("special_tokens.answer_start", special.answer_start) + encode(
        "final_answer_string", point.final_answer_string)
    if point.max_answer_tokens <= len(answer):
        raise ValueError(f"budget: max_answer_tokens={point.max_answer_tokens} leaves no room after the "
                         f"{len(answer)} forced answer-opener tokens")
    eos = frozenset(int(i) for i in eos_ids)
    if not eos:
        raise ValueError("budget forcing needs the tokenizer's or model's end-of-sequence id; none is set")
    return ForcingIds(end=end, wait=encode("wait_string", point.wait_string), answer=answer, eos=eos)


@dataclass
class RowTrace:
    """What forcing did to one generation."""

    tokens: list[int] = field(default_factory=list)  # the completion (thinking, delimiter, answer; no eos)
    thinking_tokens: int | None = None  # None while still thinking
    waits_used: int = 0
    forced_end: bool = False
    answer_tokens: int = 0
    finished: bool = False  # eos in the answer, or the answer cap
    ended_by_eos: bool = False


class _Rules:
    """The per-row rules of the module docstring, shared by both implementations."""

    def __init__(self, ids: ForcingIds, point: BudgetPoint):
        self.ids, self.point = ids, point

    def observe(self, row: RowTrace, token: int) -> None:
        """Record one emitted token."""
        if row.finished:
            return
        if row.thinking_tokens is not None:  # answering
            if token in self.ids.eos:
                row.finished = row.ended_by_eos = True
                return
            row.tokens.append(token)
            row.answer_tokens += 1
            row.finished = row.answer_tokens >= self.point.max_answer_tokens
            return
        row.tokens.append(token)
        end = self.ids.end
        if len(row.tokens) >= len(end) and tuple(row.tokens[-len(end):]) == end:
            row.thinking_tokens = len(row.tokens) - len(end)

    def started_end(self, row: RowTrace) -> int:
        """How many tokens of the end delimiter the thinking already ends with (a proper prefix)."""
        end, thinking = self.ids.end, row.tokens
        for k in range(min(len(end) - 1, len(thinking)), 0, -1):
            if tuple(thinking[-k:]) == end[:k]:
                return k
        return 0

    def forced_end(self, row: RowTrace) -> list[int]:
        row.forced_end = True
        return [*self.ids.end[self.started_end(row):], *self.ids.answer]

    def on_attempt(self, row: RowTrace, token: int) -> list[int]:
        """Tokens to emit instead of an end attempt at or above the minimum ([token] lets it through)."""
        fits = len(row.tokens) + len(self.ids.wait) <= self.point.max_thinking_tokens
        if row.waits_used < self.point.num_waits and fits:
            row.waits_used += 1
            return list(self.ids.wait)
        return self.forced_end(row) if token in self.ids.eos else [token]


class BudgetForcer(LogitsProcessor):
    """Single-pass budget forcing for one left-padded batch: pass it to `generate` as a logits processor and
    `forcer.stopping` as a stopping criterion (it stops rows whose answer reached its cap).

    `max_new_tokens` for the call should be `total_new_tokens(point, ids)`. Greedy decoding only.
    """

    def __init__(self, batch_size: int, ids: ForcingIds, point: BudgetPoint):
        self.rules = _Rules(ids, point)
        self.rows = [RowTrace() for _ in range(batch_size)]
        self.queues: list[deque[int]] = [deque() for _ in range(batch_size)]
        self.attempt_ids = torch.tensor(ids.attempts)
        self.prompt_len: int | None = None
        self.seen = 0
        self.stopping = _FinishedRows(self)

    def observe(self, input_ids: torch.LongTensor) -> None:
        """Catch up with the tokens emitted since the last call (idempotent per length)."""
        if self.prompt_len is None:
            self.prompt_len = input_ids.shape[1]
        new = input_ids[:, self.prompt_len + self.seen:].tolist()
        self.seen = input_ids.shape[1] - self.prompt_len
        for row, tokens in zip(self.rows, new):
            for t in tokens:
                self.rules.observe(row, t)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.observe(input_ids)
        point, rules = self.rules.point, self.rules
        force_rows, force_tokens, ban_rows, tops = [], [], [], None
        for i, (row, queue) in enumerate(zip(self.rows, self.queues)):
            if row.finished:
                continue
            if not queue and row.thinking_tokens is None:
                if len(row.tokens) >= point.max_thinking_tokens:
                    queue.extend(rules.forced_end(row))
                elif len(row.tokens) < point.min_thinking_tokens:
                    ban_rows.append(i)
                else:
                    tops = scores.argmax(-1).tolist() if tops is None else tops
                    if tops[i] in rules.ids.eos or tops[i] == rules.ids.end[0]:
                        instead = rules.on_attempt(row, tops[i])
                        if instead != [tops[i]]:
                            queue.extend(instead)
            if queue:
                force_rows.append(i)
                force_tokens.append(queue.popleft())
        device = scores.device
        if ban_rows:
            scores[torch.tensor(ban_rows, device=device)[:, None],
                   self.attempt_ids.to(device)] = -float("inf")
        if force_rows:
            rows = torch.tensor(force_rows, device=device)
            scores[rows] = -float("inf")
            scores[rows, torch.tensor(force_tokens, device=device)] = 0.0
        return scores


class _FinishedRows(StoppingCriteria):
    def __init__(self, forcer: BudgetForcer):
        self.forcer = forcer

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs) -> torch.BoolTensor:
        self.forcer.observe(input_ids)
        return torch.tensor([r.finished for r in self.forcer.rows], device=input_ids.device)


def total_new_tokens(point: BudgetPoint, ids: ForcingIds) -> int:
    """Enough new tokens for any row: thinking, the delimiter, the answer."""
    return point.max_thinking_tokens + len(ids.end) + point.max_answer_tokens


# One generation pass of the multi-pass loop, supplied by the engine:
# run_pass(sequences, max_new, min_new, stop_ids) -> [(new tokens without the stop, stop id or None)] per row,
# where a sequence is prompt + completion so far, row i gets at most max_new[i] tokens (0: it sits this pass
# out), the stop ids are banned for its first min_new[i] tokens, and emitting one ends its pass.
PassFn = Callable[[list[list[int]], list[int], list[int], list[int]], list[tuple[list[int], int | None]]]


def multipass_budget_forcing(run_pass: PassFn, prompts: Sequence[Sequence[int]], ids: ForcingIds,
                             point: BudgetPoint) -> list[RowTrace]:
    """s1's loop: one pass per Wait (re-prefilling prompt + thinking so far), then one answer pass."""
    rules = _Rules(ids, point)
    rows = [RowTrace() for _ in prompts]

    def emit(row: RowTrace, tokens: Iterable[int]) -> None:
        for t in tokens:
            rules.observe(row, t)

    def sequences() -> list[list[int]]:
        return [[*p, *row.tokens] for p, row in zip(prompts, rows)]

    while True:
        for row in rows:
            if row.thinking_tokens is None and len(row.tokens) >= point.max_thinking_tokens:
                emit(row, rules.forced_end(row))
        if all(row.thinking_tokens is not None for row in rows):
            break
        thinking = [row.thinking_tokens is None for row in rows]
        outputs = run_pass(
            sequences(),
            [point.max_thinking_tokens - len(row.tokens) if t else 0 for row, t in zip(rows, thinking)],
            [max(0, point.min_thinking_tokens - len(row.tokens)) if t else 0 for row,
             t in zip(rows, thinking)],
            ids.attempts,
        )
        for row, active, (new, stop) in zip(rows, thinking, outputs):
            if not active:
                continue
            for t in new:
                if row.thinking_tokens is not None:  # a multi-token delimiter completed mid-pass: the rest
                    break  # is answer, generated again by the answer pass
                rules.observe(row, t)
            if stop is not None and row.thinking_tokens is None:
                emit(row, rules.on_attempt(row, stop))

    outputs = run_pass(sequences(), [0 if row.finished else point.max_answer_tokens - row.answer_tokens
                                     for row in rows], [0] * len(rows), sorted(ids.eos))
    for row, (new, stop) in zip(rows, outputs):
        emit(row, [*new, *([stop] if stop is not None else [])])
    return rows
