"""Prompt templates, the LLaVA-Med conversation wrapper, and answer parsing (incl. the real release
outputs)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mvqa.data.prompts import (
    NO_ANSWER,
    OK,
    PROMPTS,
    UNPARSEABLE,
    format_conversation,
    format_question,
    parse_answer,
)
from mvqa.data.readers import RELEASE_TRACE_COLUMNS, read_pmc_vqa
from mvqa.data.records import LETTERS, VQAItem

SEED_PROMPT = (  # the text of the seed's Med-R1 prompt, for four choices
    "{question} A) {A}, B) {B}, C) {C}, D) {D}. Please reason through the image and question carefully. "
    "Eliminate incorrect options one by one, and justify your reasoning with visual or clinical clues. Write "
    "your "
    "thought process in <think> </think> tags, and final answer (A, B, C, or D) in <answer> </answer>."
)


def item(choices, label="A", question="What is shown? "):
    return VQAItem(id="x", image="x.png", question=question, choices=list(choices), answer_label=label,
                   answer=choices[LETTERS.index(label)] if choices else "a mass")


@pytest.fixture(scope="module")
def release(shared_data):
    items, _ = read_pmc_vqa(shared_data / "mvqa1k" / "sampled_final.csv", name="mvqa1k",
                            columns={"image": "figure_path", "question": "question"},
                            extra_columns=RELEASE_TRACE_COLUMNS)
    return items


def test_seed_prompt_is_the_seeds_text():
    it = item(["CT scan", "X-Ray", "MRI", "Ultrasound"], "C")
    expected = SEED_PROMPT.format(question="What is shown?", A="CT scan", B="X-Ray", C="MRI", D="Ultrasound")
    assert format_question(it, "med_r1_seed") == expected
    assert format_question(it, PROMPTS["med_r1_seed"]) == expected  # the template text itself works too


def test_release_choices_are_not_labelled_twice(release):
    assert len(release) == 1000
    for it in release:
        text = format_question(it, "med_r1_seed")
        assert "A: " not in text.split("A) ", 1)[1][:3]
        assert all(f"{L}) {c.strip()}" in text for L, c in it.choice_map().items())
    # a choice that still carries its own PMC-VQA label is cleaned rather than shown as "A)  A: CT scan"
    raw = item([" A: CT scan ", " B: MRI ", " C: X-Ray ", " D: PET "], "B")
    assert "A) CT scan, B) MRI, C) X-Ray, D) PET." in format_question(raw, "med_r1_seed")


@pytest.mark.parametrize("n", [2, 3, 5])
def test_any_number_of_choices(n):
    choices = [f"option {i}" for i in range(n)]
    seed = format_question(item(choices), "med_r1_seed")
    letters = {2: "(A or B)", 3: "(A, B, or C)", 5: "(A, B, C, D, or E)"}[n]
    assert f"final answer {letters} in <answer>" in seed
    lines = format_question(item(choices), "med_r1").splitlines()
    assert lines[: n + 1] == ["What is shown?", *(f"{LETTERS[i]}) option {i}" for i in range(n))]
    assert lines[n + 1] == "Your task:"
    direct = format_question(item(choices), "direct")
    assert direct.endswith(
        f"{LETTERS[n - 1]}) option {n - 1}\nAnswer with the option's letter from the given "
        "choices directly.")


def test_open_items_get_no_options_or_letters():
    open_item = VQAItem(id="o", image="o.png", question="Which organ is enlarged?", choices=[],
                        answer_label=None,
                        answer="liver")
    for name in PROMPTS:
        text = format_question(open_item, name)
        assert "A)" not in text and "(A" not in text and "[[" not in text
        assert text.startswith("Which organ is enlarged?")
    assert "Justify your reasoning" in format_question(open_item, "med_r1_seed")
    assert "provide the final answer in a few words inside <answer>" in format_question(open_item, "med_r1")
    assert format_question(open_item, "direct").endswith("single word or phrase.")
    closed_item = open_item.replace(question="Is the liver enlarged?", answer="Yes")
    assert closed_item.kind == "closed"
    assert format_question(closed_item, "direct").endswith("Answer yes or no.")
    assert "final answer (yes or no) in <answer>" in format_question(closed_item, "med_r1_seed")
    assert "provide yes or no inside <answer>" in format_question(closed_item, "med_r1")


def test_bad_templates_are_named():
    with pytest.raises(ValueError, match="med_r1_seed"):
        format_question(item(["a", "b"]), "med-r1")
    with pytest.raises(ValueError, match="nope"):
        format_question(item(["a", "b"]), "{question} {nope}")


def test_llava_med_mistral_conversation():
    assert format_conversation("Q?") == "[INST] <image>\nQ? [/INST]"
    assert format_conversation("Q?", "B") == "[INST] <image>\nQ? [/INST] B </s>"
    assert format_conversation("Q?", "B", "plain") == "Q?\nB"
    with pytest.raises(ValueError, match="llava_med_mistral"):
        format_conversation("Q?", conversation="vicuna")


@pytest.mark.parametrize("answer", ["C", "C)", "C: MRI", " c ", "(C)", "C.", "c) mri", "**C**", "[C]"])
def test_answer_forms_normalise_to_the_letter(answer):
    parsed = parse_answer(f"<think>It is MRI.</think>\n<answer>{answer}</answer>")
    assert (parsed.letter, parsed.status, parsed.thinking) == ("C", OK, "It is MRI.")


@pytest.mark.parametrize("answer", ["MRI", "I think C", "a lesion", "CD", "E", "option 3"])
def test_unreadable_answers_are_not_guessed(answer):
    parsed = parse_answer(f"<answer>{answer}</answer>", n_choices=4)
    assert parsed.letter is None and parsed.status == UNPARSEABLE and parsed.answer_text == answer


def test_last_non_empty_match_wins_and_choice_text_can_be_matched():
    text = ("<think>first</think><answer>A</answer> <think>second</think><answer>B</answer>"
            "<think> </think><answer></answer>")
    parsed = parse_answer(text)
    assert (parsed.thinking, parsed.letter) == ("second", "B")
    assert parse_answer("<answer>mri</answer>", choices=["CT", "MRI", "PET", "US"]).letter == "B"
    assert parse_answer("<think>no answer yet, cut by the budget").status == NO_ANSWER


def test_s1_layout():
    s1 = "<|im_start|>think\nThe lesion is upper left.\nWait, yes.<|im_start|>answer\nAnswer: B<|im_end|>"
    parsed = parse_answer(s1)
    assert (parsed.letter, parsed.status) == ("B", OK)
    assert parsed.thinking == "The lesion is upper left.\nWait, yes."
    tagged = parse_answer("<think>Answer: A looks wrong. Wait.</think>\nAnswer: (D)")
    assert (tagged.thinking, tagged.letter) == ("Answer: A looks wrong. Wait.", "D")
    assert parse_answer("<think>x</think>Answer: E", n_choices=4).status == UNPARSEABLE


def test_release_raw_outputs_parse_to_the_generated_answer(release):
    for it in release:
        parsed = parse_answer(it.extra["raw_output"], n_choices=len(it.choices))
        assert parsed.status == OK and parsed.letter == it.extra["generated_answer"] == it.answer_label, it.id
        assert parsed.thinking == it.extra["generated_reasoning"].strip(), it.id


# ------------------------------------------------------------------------------------------ properties
thinking_text = st.text(st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), max_size=80)
letter_forms = st.sampled_from(
    ["{L}", "{L})", "({L})", "{l}", " {l} ", "{L}: {text}", "{L}. {text}", "[{L}]"])


@given(thinking_text, st.integers(2, 5), st.data(), letter_forms, st.sampled_from(["tags", "s1"]))
def test_round_trip(thinking, n, data, form, layout):
    letter = data.draw(st.sampled_from(LETTERS[:n]))
    answer = form.format(L=letter, l=letter.lower(), text="some finding")
    text = (f"<think>{thinking}</think><answer>{answer}</answer>" if layout == "tags"
            else f"<|im_start|>think\n{thinking}<|im_start|>answer\nAnswer: {answer}")
    parsed = parse_answer(text, n_choices=n)
    assert (parsed.letter, parsed.status) == (letter, OK)
    if "Answer:" not in thinking:
        assert parsed.thinking == (thinking.strip() or None)


@given(st.text(max_size=200), st.integers(1, 5))
def test_never_a_letter_out_of_range(text, n):
    parsed = parse_answer(text, n_choices=n)
    assert parsed.letter is None or parsed.letter in LETTERS[:n]
    assert (parsed.letter is not None) == (parsed.status == OK)


@given(st.text(max_size=200), st.sampled_from(LETTERS), st.integers(1, 5))
def test_tagged_letter_beyond_the_choices_is_unparseable(noise, letter, n):
    parsed = parse_answer(f"{noise.replace('<', '')}<answer>{letter}</answer>", n_choices=n)
    assert parsed.letter == (letter if LETTERS.index(letter) < n else None)


@given(st.text(st.characters(blacklist_characters="<"), max_size=200))
def test_garbage_is_unparseable(text):
    parsed = parse_answer(text.replace("Answer", "answr"), n_choices=4)
    assert parsed.letter is None and parsed.status == NO_ANSWER
