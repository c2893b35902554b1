"""Jinja chat templates by name, set on the processor so `apply_chat_template` renders each model's format.

Messages use the processor convention: `content` is a string or a list of `{"type": "image"}` and
`{"type": "text", "text": ...}` parts. Templates write `bos_token` themselves, so render with `tokenize=False`
and tokenize with `add_special_tokens=False`.
"""

from __future__ import annotations

# LLaVA's `conv_mistral_instruct` (sep style LLAMA_2, empty system): "[INST] <image>\n{q} [/INST] {a} </s>".
# The image placeholder goes first, then a newline, as LLaVA puts DEFAULT_IMAGE_TOKEN + "\n" before the text.
MISTRAL_INSTRUCT = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set text = message['content'] %}{% set images = 0 %}"
    "{% else %}{% set text = message['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('\n') %}"
    "{% set images = message['content'] | selectattr('type', 'equalto', 'image') | list | length %}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}[INST] {{ '<image>\n' * images }}{{ text }} [/INST]"
    "{% elif message['role'] == 'assistant' %} {{ text }} {{ eos_token }}"
    "{% else %}{{ raise_exception('mistral_instruct has no ' + message['role'] + ' role') }}{% endif %}"
    "{% endfor %}"
)

# Qwen2-VL-Instruct's own template, images only (Med-R1 was trained on it).
QWEN2_VL = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TEMPLATES: dict[str, str] = {"mistral_instruct": MISTRAL_INSTRUCT, "qwen2_vl": QWEN2_VL}


def get_chat_template(name: str) -> str:
    if name not in TEMPLATES:
        raise ValueError(f"unknown chat template {name!r}; expected one of {sorted(TEMPLATES)}")
    return TEMPLATES[name]
