"""The arms of a data-selection study: each picks N items from the same pool of correct traces.

A pool item carries the difficulty scorer's `p_correct` (lower = harder). Its scale differs by question kind
(mcq/closed: a softmax over options; open: the gold answer's per-token probability), so difficulty is a rank
within the item's kind: `hardness` is the share of the kind's items at least as easy, 1.0 for the hardest.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mvqa.curate.difficulty import check_stratify_by
from mvqa.curate.sample import sample
from mvqa.data.records import VQAItem
from mvqa.data.stats import StageStats

SELECTIONS = ("diverse", "random", "hardest", "all")


def stratum_of(item: VQAItem, stratify_by: str | None) -> tuple[str, str]:
    return item.kind, (str(getattr(item, stratify_by) or "") if stratify_by else "")


def hardness(
    items: list[VQAItem], key: str = "p_correct", stratify_by: str | None = None
) -> dict[str, float]:
    """Per item, its difficulty rank in (0, 1] within its kind (and its value of `stratify_by`): the hardest
    of
    each gets 1.0."""
    missing = [it.id for it in items if not isinstance(it.extra.get(key), (int, float))]
    if missing:
        raise ValueError(
            f"{len(missing)} pool items have no numeric extra[{key!r}] (first: {missing[:3]}); "
            "the pool must run the difficulty score stage"
        )
    if stratify_by:
        check_stratify_by(stratify_by, "study.arms.<arm>.stratify_by")
    out: dict[str, float] = {}
    for group in {stratum_of(it, stratify_by) for it in items}:
        ranked = sorted(
            (it for it in items if stratum_of(it, stratify_by) == group),
            key=lambda it: (-it.extra[key], it.id),
        )
        out.update({it.id: (i + 1) / len(ranked) for i, it in enumerate(ranked)})
    return out


def select_arm(
    pool: list[VQAItem], name: str, arm: Any, n: int, seed: int, sampler_cfg: Any
) -> tuple[list[VQAItem], StageStats]:
    """The arm's set and its funnel (pool -> hard -> selected), every left-out item counted by reason."""
    if arm.select not in SELECTIONS:
        raise ValueError(f"study.arms.{name}.select={arm.select!r}; expected one of {SELECTIONS}")
    stats = StageStats(f"arm:{name}", n_in=len(pool))
    items = list(pool)
    stratify_by = arm.stratify_by
    ranked = arm.hard_fraction is not None or arm.select == "hardest"
    rank = hardness(pool, stratify_by=stratify_by) if ranked else {}
    if arm.hard_fraction is not None:
        if not 0 < arm.hard_fraction <= 1:
            raise ValueError(f"study.arms.{name}.hard_fraction={arm.hard_fraction}; expected (0, 1]")
        keep = set()
        for group in {
            stratum_of(it, stratify_by) for it in items
        }:  # the hardest fraction of each, rounded up
            members = sorted(
                (it for it in items if stratum_of(it, stratify_by) == group),
                key=lambda it: (-rank[it.id], it.id),
            )
            keep.update(it.id for it in members[: math.ceil(arm.hard_fraction * len(members))])
        for it in items:
            if it.id not in keep:
                stats.drop(it.id, "not_hard")
        items = [it for it in items if it.id in keep]
        stats.metrics["after_hard"] = len(items)
    if arm.select == "all":
        chosen = items
    elif len(items) < n:
        raise ValueError(
            f"study arm {name!r}: {len(items)} items left to pick from, fewer than study.n={n}; "
            "lower study.n or the arm's hard_fraction (every arm must train on N items)"
        )
    elif arm.select == "random":
        picks = np.sort(np.random.default_rng(seed).choice(len(items), size=n, replace=False))
        chosen = [items[i] for i in picks]
    elif arm.select == "hardest":
        hardest = {it.id for it in sorted(items, key=lambda it: (-rank[it.id], it.id))[:n]}
        chosen = [it for it in items if it.id in hardest]  # in pool order
    else:
        sampler_cfg = {**dict(sampler_cfg), "n": n, "seed": seed}
        chosen, sampled = sample(items, sampler_cfg)
        stats.metrics["sampler"] = sampled.metrics.get("sampler")
    picked = {it.id for it in chosen}
    for it in items:
        if it.id not in picked:
            stats.drop(it.id, "not_selected")
    stats.n_out = len(chosen)
    stats.metrics.update(
        select=arm.select,
        hard_fraction=arm.hard_fraction,
        stratify_by=stratify_by,
        n=n,
        seed=seed,
        mean_hardness=(float(np.mean([rank[it.id] for it in chosen])) if rank and chosen else None),
    )
    if len(chosen) != (len(items) if arm.select == "all" else n) or len(picked) != len(chosen):
        raise RuntimeError(
            f"study arm {name!r} picked {len(chosen)} items ({len(picked)} distinct) for n={n}"
        )
    return chosen, stats


def funnel_line(stats: StageStats) -> str:
    reasons = ", ".join(f"{r} {c}" for r, c in sorted(stats.drop_reasons.items()))
    return f"{stats.stage}: pool {stats.n_in} -> {stats.n_out}" + (
        f" (left out: {reasons})" if reasons else ""
    )
