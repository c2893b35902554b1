"""data.max_length counts a LLaVA prompt's image tokens: a max_length they fill alone fails naming the fix."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from mvqa.data.collators import VQACollator
from mvqa.data.records import VQAItem
from mvqa.models.load import load_model
from mvqa.models.tiny import tiny_conf

CORPUS = ["What organ is shown in this CT image? The liver.",
          "Answer with the letter of the correct choice."] * 20


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    # Unit size: 32 px images in 8 px patches, 16 image tokens per prompt.
    cache = tmp_path_factory.mktemp("max-length-models")
    return load_model(tiny_conf("llava", size="unit", cache_dir=str(cache), tokenizer_corpus=CORPUS))


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    root = tmp_path_factory.mktemp("max-length-images")
    Image.linear_gradient("L").convert("RGB").resize((32, 32)).save(root / "ct.png")
    target = {"opening": "<think>", "thinking": " the liver is shown" * 4,
              "closing": "</think><answer>A</answer>"}
    return [VQAItem(id=f"q{i}", image="ct.png", image_root=str(root), question="Which organ is shown?",
                    choices=["Liver", "Lung"], answer_label="A", answer="Liver", extra={"target": target})
            for i in range(2)]


def image_tokens(llava, collator, item) -> int:
    return collator.encode_prompt(item)["input_ids"][0].tolist().count(llava.processor.image_token_id)


def test_image_tokens_filling_max_length_fail_with_a_working_value(llava, items):
    probe = VQACollator(llava.processor, "direct", max_length=100_000)
    n_image = image_tokens(llava, probe, items[0])
    assert n_image == 16
    small = VQACollator(llava.processor, "direct", max_length=12)
    with pytest.raises(ValueError,
                       match=r"data.max_length=12: the 16 image tokens of each prompt fill it alone") as err:
        small(items)
    message = str(err.value)
    assert "['q0', 'q1']" in message and small.stats.too_long == ["q0", "q1"]
    least = int(re.search(r"at least (\d+)", message).group(1))
    suggested = int(re.search(r"e\.g\. data\.max_length=(\d+)", message).group(1))
    full = int(re.search(r"longest thinking \((\d+) tokens\)", message).group(1))
    assert n_image < least < full <= suggested and suggested % 256 == 0
    # The values it names work: the least keeps every example (thinking cut), the suggestion all of it.
    assert len(VQACollator(llava.processor, "direct", max_length=least)(items)["item_ids"]) == 2
    fits = VQACollator(llava.processor, "direct", max_length=suggested)
    batch = fits(items)
    assert fits.stats.truncated == 0 and batch["input_ids"].shape[1] == full
    with pytest.raises(ValueError, match=r"at least " + str(least)):
        VQACollator(llava.processor, "direct", max_length=least - 1)(items)


def test_a_prompt_longer_than_max_length_names_its_image_tokens(llava, items):
    # Room for the image tokens but not for the rest of the prompt and the answer: the message says so, no
    # "alone".
    collator = VQACollator(llava.processor, "direct", max_length=24)
    with pytest.raises(ValueError,
                       match=r"exceeds data.max_length=24 before any thinking \(prompt with 16 image "
                             r"tokens, and the answer\); set data.max_length to at least \d+") as err:
        collator(items)
    assert "alone" not in str(err.value)
