"""Question prompts as data, the chat turn wrappers, and reading an answer back.

Template syntax: `{question}`, `{choices_inline}` ("A) x, B) y"), `{choices_lines}` (one "A) x" per line) and
`{letters}` ("A, B, C, or D") are filled from the item. `[[mcq text|free text]]` keeps the left part for a
multiple-choice item and the right part (may be empty, `|` optional) for a closed or open one;
`[[mcq text|closed text|open text]]` gives closed (yes/no) and open questions their own words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mvqa.data.records import LETTERS, MCQ, OPEN, VQAItem

PROMPTS: dict[str, str] = {
    # The prompt the seed gave Med-R1 to make the release traces (for 4 choices exactly the seed's text).
    "med_r1_seed": (
        "{question}[[ {choices_inline}.]] Please reason through the image and question carefully. "
        "[[Eliminate incorrect options one by one, and justify|Justify]] your reasoning with visual or "
        "clinical "
        "clues. Write your thought process in <think> </think> tags, and final answer[[ ({letters})| (yes or "
        "no)|]] "
        "in <answer> </answer>."
    ),
    # Med-R1's own README/evaluation prompt; its OmniMedVQA problems list the options one per line.
    "med_r1": (
        "{question}[[\n{choices_lines}]]\nYour task:\n"
        "1. Think through the question step by step, enclose your reasoning process in <think>...</think> "
        "tags.\n"
        "2. Then provide [[the correct single-letter choice (A, B, C, D,...)|yes or no|the final answer in a "
        "few "
        "words]] inside "
        "<answer>...</answer> tags.\n"
        "3. No extra information or text outside of these tags."
    ),
    # No reasoning: LLaVA's multiple-choice and short-answer instructions.
    "direct": (
        "{question}[[\n{choices_lines}]]\n"
        "[[Answer with the option's letter from the given choices directly.|Answer yes or no.|"
        "Answer the question using a single word or phrase.]]"
    ),
    # No reasoning, the answer as the option's own words (what the demo's tiny base is taught).
    "direct_text": ("{question}[[\n{choices_lines}]]\n"
                    "[[Answer with the text of the correct option.|Answer yes or no.|Answer briefly.]]"),
}

# Chat wrappers for models without a chat template. LLaVA-Med v1.5 (`mistral_instruct`, LLaMA-2 separator
# style with an empty system prompt): `[INST] <image>\n{q} [/INST]`, and `</s>` closes each assistant turn.
CONVERSATIONS: dict[str, dict[str, str]] = {
    "llava_med_mistral": {"user": "[INST] <image>\n{prompt} [/INST]", "assistant": " {response} </s>"},
    "plain": {"user": "{prompt}\n", "assistant": "{response}"},
}

# s1's delimiters, removed from the thinking when an s1-layout output is parsed.
S1_MARKERS = ("<|im_start|>think", "<|im_start|>answer", "<|im_end|>")

_OPTIONAL = re.compile(r"\[\[(.*?)(?:\|(.*?))?(?:\|(.*?))?\]\]", re.DOTALL)
# A PMC-VQA style label prefix left on a choice (" A: CT scan "): the seed showed "A)  A: CT scan".
_LABEL_PREFIX = re.compile(r"^\s*([A-E])\s*:\s*")


def letters_phrase(n: int) -> str:
    """"A, B, C, or D" for n=4; "A or B" for n=2."""
    letters = list(LETTERS[:n])
    return " or ".join(letters) if n <= 2 else ", ".join(letters[:-1]) + ", or " + letters[-1]


def _clean_choice(letter: str, text: str) -> str:
    m = _LABEL_PREFIX.match(text)
    return text[m.end():].strip() if m and m.group(1) == letter else text.strip()


def _kind_part(match: re.Match, kind: str) -> str:
    mcq, free, open_only = match.groups()
    if kind == MCQ:
        return mcq
    if kind == OPEN and open_only is not None:
        return open_only
    return free or ""


def format_question(item: VQAItem, template: str) -> str:
    """The prompt text for one item; `template` is a key of PROMPTS or a template string itself."""
    text = PROMPTS.get(template, template)
    if "{question}" not in text:
        raise ValueError(f"prompt template {template!r} is neither a key of PROMPTS {sorted(PROMPTS)} nor a "
                         "template containing {question}")
    text = _OPTIONAL.sub(lambda m: _kind_part(m, item.kind), text)
    pairs = [(letter, _clean_choice(letter, c)) for letter, c in zip(item.letters, item.choices)]
    fields = {
        "question": item.question.strip(),
        "choices_inline": ", ".join(f"{letter}) {c}" for letter, c in pairs),
        "choices_lines": "\n".join(f"{letter}) {c}" for letter, c in pairs),
        "letters": letters_phrase(len(pairs)),
    }
    try:
        return text.format(**fields)
    except (KeyError, IndexError) as err:
        raise ValueError(f"prompt template {template!r}: unknown placeholder {err}; "
                         f"expected {sorted(fields)}") from err


def format_conversation(prompt: str, response: str | None = None,
                        conversation: str = "llava_med_mistral") -> str:
    """One user turn (and the assistant's reply, closed, when given) in a CONVERSATIONS style."""
    if conversation not in CONVERSATIONS:
        raise ValueError(f"unknown conversation {conversation!r}; expected one of {sorted(CONVERSATIONS)}")
    style = CONVERSATIONS[conversation]
    text = style["user"].format(prompt=prompt)
    return text if response is None else text + style["assistant"].format(response=response)


# ------------------------------------------------------------------------------------------- chat turns
_PROBE = "\x00MVQA-TARGET\x00"


def user_message(text: str, with_image: bool = True) -> dict[str, Any]:
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
    return {"role": "user", "content": content}


def chat_prompt(processor, text: str, with_image: bool = True) -> str:
    """One user turn through the model's chat template, ready for the assistant's reply."""
    return processor.apply_chat_template([user_message(text, with_image)], tokenize=False,
                                         add_generation_prompt=True)


def end_of_turn(processor) -> str:
    """What the chat template writes after an assistant message (`</s>` for Mistral, `<|im_end|>\\n` for
    Qwen)."""
    rendered = processor.apply_chat_template(
        [user_message("q"), {"role": "assistant", "content": [{"type": "text", "text": _PROBE}]}],
        tokenize=False
    )
    return rendered.split(_PROBE, 1)[1]


# ---------------------------------------------------------------------------------------------- parsing
OK, NO_ANSWER, UNPARSEABLE = "ok", "no_answer", "unparseable"

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_S1_ANSWER = re.compile(r"Answer\s*:[ \t]*(.*)")
# "C", "(C)", "C)", "C.", "[C]", and a letter followed by its choice text after a separator ("C: MRI", "C)
# MRI").
_BARE_LETTER = re.compile(r"^[(\[]?\s*([A-Ea-e])\s*[)\].:]?$")
_LETTER_WITH_TEXT = re.compile(r"^[(\[]?\s*([A-Ea-e])\s*[)\].:]\s*\S")


@dataclass(frozen=True)
class ParsedAnswer:
    thinking: str | None
    answer_text: str | None
    letter: str | None
    # ok: a valid letter (a free-text item: a non-empty answer); no_answer: no answer section (e.g. cut by the
    # token budget); unparseable: an answer section that is not one of the item's letters (never guessed).
    status: str

    @property
    def answer(self) -> str | None:
        """What was answered: the letter for a multiple-choice item, the text for a free-text one."""
        return self.letter if self.letter is not None else (self.answer_text if self.status == OK else None)


def answer_letter(answer_text: str, n_choices: int = 4, choices: Sequence[str] | None = None) -> str | None:
    """Normalise an answer section to a letter within the first n_choices, or None."""
    text = answer_text.strip().strip("*").strip()
    m = _BARE_LETTER.match(text) or _LETTER_WITH_TEXT.match(text)
    if m:
        letter = m.group(1).upper()
    elif choices:  # the choice's own text, matched exactly (case-insensitive) to one choice
        hits = [i for i, c in enumerate(choices) if c.strip().lower() == text.lower()]
        letter = LETTERS[hits[0]] if len(hits) == 1 else None
    else:
        letter = None
    return letter if letter is not None and letter in LETTERS[:n_choices] else None


def parse_item_answer(item: VQAItem, text: str) -> ParsedAnswer:
    """parse_answer with the item's own choices (none for a closed or open item)."""
    return parse_answer(text, n_choices=len(item.choices), choices=item.choices)


def _strip_markers(text: str) -> str:
    for marker in S1_MARKERS:
        text = text.replace(marker, "")
    return text.strip()


def _last_nonempty(pattern: re.Pattern, text: str) -> str | None:
    found = [m.strip() for m in pattern.findall(text) if m.strip()]
    return found[-1] if found else None


def parse_answer(text: str, n_choices: int = 4, choices: Sequence[str] | None = None) -> ParsedAnswer:
    """Read a model output: the seed's tag layout (last non-empty <think>/<answer>) or s1's "Answer: X".

    `n_choices=0` reads a free-text (closed or open) answer: any non-empty answer section is ok, as written.
    """
    if not 0 <= n_choices <= len(LETTERS):
        raise ValueError(f"n_choices must be 0 (free text) or 1-{len(LETTERS)}, got {n_choices}")
    thinking = _last_nonempty(_THINK, text)
    answer = _last_nonempty(_ANSWER, text)
    if answer is None:
        # s1 layout: the answer follows the thinking as "Answer: X"; the last one counts.
        tail = text.rsplit("</think>", 1)[-1] if "</think>" in text else text
        found = [m for m in _S1_ANSWER.finditer(tail) if _strip_markers(m.group(1))]
        if found:
            answer = _strip_markers(found[-1].group(1))
            thinking = thinking or _strip_markers(tail[: found[-1].start()]) or None
    if answer is None:
        return ParsedAnswer(thinking, None, None, NO_ANSWER)
    if n_choices == 0:
        return ParsedAnswer(thinking, answer, None, OK)
    letter = answer_letter(answer, n_choices, choices)
    return ParsedAnswer(thinking, answer, letter, OK if letter else UNPARSEABLE)
