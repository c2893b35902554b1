"""Schema of the `trace_format/` group: how a reasoning trace becomes the assistant's training target."""

from __future__ import annotations

from dataclasses import dataclass, field

GROUP = "trace_format"


@dataclass
class TraceFormatConf:
    _target_: str = "mvqa.train.trace_format.TraceFormatter"
    # med_r1: <think>…</think><answer>X</answer>; s1: <think>…</think> then "Answer: X"; direct: the answer
    # only.
    style: str = "med_r1"
    # Where the reasoning comes from, first field present wins; raw outputs are parsed like the seed does.
    trace_fields: list[str] = field(default_factory=lambda: ["raw_output", "trace", "generated_reasoning"])
    wait_string: str = "Wait"
    num_waits: int = 1
    # Where Waits go among reasoning-segment boundaries: random | end | spread.
    position: str = "random"
    # What a segment is: sentence | step (line).
    boundary: str = "sentence"
    # After each Wait, re-state the segment before it as a self-check (the behaviour budget forcing relies
    # on).
    self_check: bool = True
    self_check_template: str = "{wait}, let me re-check that. {previous}"
    # letter: <answer>C</answer> as Med-R1 writes; text: the choice's text (<answer>MRI</answer>), which a
    # small model learns far sooner (no letter-to-option lookup); the parser maps it back to the letter.
    answer_format: str = "letter"
    # A trace whose parsed answer disagrees with the label would teach the wrong answer: reject it.
    require_label_match: bool = True
    seed: int = "${seed}"  # type: ignore[assignment]


SCHEMAS = {"schema_trace_format": TraceFormatConf}
