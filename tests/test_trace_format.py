"""Wait-token trace formatting (step 5) on the real release traces and on edge cases."""

from __future__ import annotations

import pytest

from mvqa.data.prompts import parse_answer
from mvqa.data.readers import read_pmc_vqa
from mvqa.models.bundle import SpecialTokens
from mvqa.train.trace_format import TraceFormatter, split_segments

TOKENS = SpecialTokens()
RELEASE_EXTRA = ("generated_reasoning", "generated_answer", "raw_output")


@pytest.fixture(scope="module")
def release(shared_data):
    items, _ = read_pmc_vqa(shared_data / "mvqa1k" / "sampled_final.csv", extra_columns=RELEASE_EXTRA)
    return items


@pytest.mark.parametrize("position", ["random", "end", "spread"])
def test_waits_inserted_in_every_real_release_trace(release, position):
    fmt = TraceFormatter(style="med_r1", num_waits=2, position=position, seed=0)
    out, stats = fmt(release, TOKENS)
    assert stats.n_in == stats.n_out == 1000 and not stats.dropped
    assert stats.metrics["waits_inserted"] == 2000
    for before, after in zip(release, out):
        target = after.extra["target"]
        original = parse_answer(before.extra["raw_output"]).thinking
        assert target["thinking"].count("Wait,") == original.count("Wait,") + 2
        assert target["opening"] == "<think>"
        assert target["closing"] == f"</think><answer>{before.answer_label}</answer>"
        # Every original sentence survives, in order, so only continuations were added.
        pos = 0
        for segment in split_segments(original):
            pos = target["thinking"].index(segment, pos)
        assert parse_answer(target["opening"] + target["thinking"]
                            + target["closing"]).letter == before.answer_label


def test_end_position_puts_the_recheck_last(release):
    out, _ = TraceFormatter(num_waits=1, position="end", wait_string="Hmm")(release[:20], TOKENS)
    for before, after in zip(release[:20], out):
        last = split_segments(parse_answer(before.extra["raw_output"]).thinking)[-1]
        assert after.extra["target"]["thinking"].endswith(f"Hmm, let me re-check that. {last}")


def test_s1_layout_and_direct_style(release):
    s1, _ = TraceFormatter(style="s1", num_waits=1)(release[:5], TOKENS)
    for it in s1:
        text = "".join(it.extra["target"].values())
        assert it.extra["target"]["closing"] == f"</think>Answer: {it.answer_label}"
        assert parse_answer(text).letter == it.answer_label
    direct, stats = TraceFormatter(style="direct", num_waits=0)(release[:5], TOKENS)
    assert [it.extra["target"] for it in direct] == [
        {"opening": "", "thinking": "", "closing": f"<answer>{it.answer_label}</answer>"}
        for it in release[:5]]
    assert stats.metrics["waits_inserted"] == 0


def test_same_seed_same_targets_other_seed_moves_waits(release):
    a, _ = TraceFormatter(num_waits=1, seed=1)(release[:200], TOKENS)
    b, _ = TraceFormatter(num_waits=1, seed=1)(release[:200], TOKENS)
    c, _ = TraceFormatter(num_waits=1, seed=2)(release[:200], TOKENS)
    assert [x.extra["target"] for x in a] == [x.extra["target"] for x in b]
    assert [x.extra["target"] for x in a] != [x.extra["target"] for x in c]


def test_bad_traces_are_rejected_with_counted_reasons(release):
    good = release[0]
    wrong = "B" if good.answer_label != "B" else "C"
    items = [
        good,
        good.replace(id="no-answer", extra={"raw_output": "<think>I looked.</think>"}),
        good.replace(id="mismatch", extra={"raw_output": f"<think>Looked.</think><answer>{wrong}</answer>"}),
        good.replace(id="no-trace", extra={}),
    ]
    out, stats = TraceFormatter()(items, TOKENS)
    assert [it.id for it in out] == [good.id]
    assert stats.drop_reasons == {"unparseable_answer": 1, "answer_disagrees_with_label": 1, "no_trace": 1}


def test_step_boundaries_and_no_self_check():
    fmt = TraceFormatter(boundary="step", num_waits=1, position="spread", self_check=False)
    thinking, n = fmt.insert_waits("Step one.\nStep two.\nStep three.", rng=None)
    assert n == 1 and thinking.splitlines()[0] == "Step one."
    assert "Wait" in thinking
    with pytest.raises(ValueError, match="boundary"):
        TraceFormatter(boundary="paragraph").insert_waits("a. b.", rng=None)
    with pytest.raises(ValueError, match="style"):
        TraceFormatter(style="cot")
