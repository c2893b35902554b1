"""The selection study's arms on a hand-made pool: what each picks, and the funnel it records."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from mvqa.curate.arms import hardness, select_arm
from mvqa.data.records import VQAItem


def pool() -> list[VQAItem]:
    """8 mcq items (p_correct 0.1 .. 0.8) and 4 open ones (0.05 .. 0.2, another scale)."""
    mcq = [
        VQAItem(
            id=f"m{i}",
            image=f"m{i}.png",
            question=f"Which organ {i}?",
            choices=["a", "b"],
            answer_label="A",
            answer="a",
            content_type="organ" if i < 4 else "size",
            extra={"p_correct": (i + 1) / 10},
        )
        for i in range(8)
    ]
    opn = [
        VQAItem(
            id=f"o{i}",
            image=f"o{i}.png",
            question=f"What lesion {i}?",
            choices=[],
            answer_label=None,
            answer="mass",
            extra={"p_correct": (i + 1) / 20},
        )
        for i in range(4)
    ]
    return mcq + opn


def arm(**fields):
    return OmegaConf.create({"select": "random", "hard_fraction": None, "stratify_by": None, **fields})


def test_hardness_ranks_within_each_kind():
    rank = hardness(pool())
    assert rank["m0"] == rank["o0"] == 1.0  # the hardest of each kind, whatever the scale
    assert rank["m7"] == 1 / 8 and rank["o3"] == 1 / 4
    by_type = hardness(pool(), stratify_by="content_type")
    assert by_type["m0"] == by_type["m4"] == 1.0


def test_each_selection_picks_n_and_names_what_it_left_out():
    items = pool()
    hard, stats = select_arm(items, "hard_only", arm(select="hardest"), 6, 0, {})
    # the 6 highest hardness ranks: m0 and o0 (1.0), m1 (0.875), o1 (0.75), m2 (0.75), m3 (0.625)
    assert [it.id for it in hard] == ["m0", "m1", "m2", "m3", "o0", "o1"]  # in pool order
    assert stats.drop_reasons == {"not_selected": 6} and stats.n_out == 6
    curated, stats = select_arm(items, "curated", arm(select="random", hard_fraction=0.5), 4, 0, {})
    assert {it.id for it in curated} <= {"m0", "m1", "m2", "m3", "o0", "o1"}  # the hardest half of each kind
    assert stats.drop_reasons == {"not_hard": 6, "not_selected": 2} and stats.metrics["after_hard"] == 6
    random_a, _ = select_arm(items, "random", arm(), 5, 7, {})
    assert (
        random_a
        == select_arm(items, "random", arm(), 5, 7, {})[0]
        != select_arm(items, "random", arm(), 5, 8, {})[0]
    )
    everything, stats = select_arm(items, "all", arm(select="all"), 3, 0, {})
    assert everything == items and stats.dropped == []


def test_an_arm_that_cannot_reach_n_says_so():
    with pytest.raises(ValueError, match="6 items left to pick from, fewer than study.n=8"):
        select_arm(pool(), "curated", arm(hard_fraction=0.5), 8, 0, {})
    with pytest.raises(ValueError, match="select='best'"):
        select_arm(pool(), "x", arm(select="best"), 2, 0, {})
