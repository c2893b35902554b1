"""Builders and readers shared by several test modules (tests import this, never each other).

Tiny random models with a BPE tokenizer trained here (engine, budget forcing, CUDA checks), the unit-size
training overrides, and a reader for the markdown tables the reports write.
"""

from __future__ import annotations

import itertools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip import CLIPImageProcessorPil

from mvqa.generation import GenerationParams, GenerationRequest, HFEngine
from mvqa.generation.budget import BudgetPoint
from mvqa.models.bundle import ModelBundle, SpecialTokens

END = SpecialTokens().think_end

# A unit-size model on a tiny world: a few seconds per run, every path the real one.
WORLD = ["dataset.n_train=16", "dataset.n_val=4", "dataset.n_test=4", "dataset.image_size=32"]
UNIT_RUN = ["model=tiny_llava", "model.size=unit", "data.batch_size=4", "data.val_max_new_tokens=8",
            "data.max_length=768", "data.prompt=direct", "trainer.enable_progress_bar=false",
            "recipe.dropout=0.0"]
# dataset=synthetic: train.py's default (dataset=auto) would take a curation run found under the launch dir.
TINY = ["dataset=synthetic", *WORLD, *UNIT_RUN]


CORPUS = [
    ("<think>The image shows a chest CT scan. The lesion is in the left lung, so the answer is B.</think>"
    "<answer>B</answer>"),
    "Question: Which organ is shown? Choices: A. liver B. lung C. heart D. kidney",
    ("Wait, the opacity could also be an effusion. Hmm, let me check the margins again. "
     "Alternatively it is C."),
] * 4
DELIMITERS = ["<image>", "<think>", "</think>", "<answer>", "</answer>"]
PROMPTS = ["Question: Which organ", "The image shows a chest", "Hmm", "Wait, the opacity could also be",
           "Choices: A. liver B. lung", "CT scan"]


def tiny_tokenizer(single_token_delimiters: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level BPE; the delimiters are single added tokens, or (like Med-R1's `<think>`) plain text."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>"] + (DELIMITERS if single_token_delimiters else [])
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def text_config(tokenizer, hidden: int = 64, layers: int = 2) -> LlamaConfig:
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def with_logit_bias(head: torch.nn.Linear, bias: dict[int, float]) -> torch.nn.Linear:
    """The same output head plus a bias: +b makes a token likelier at every step, -b rules it out."""
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        for token, b in bias.items():
            biased.bias[token] = b
    return biased


def tiny_llama(tokenizer, seed: int = 0, bias: dict[int, float] | None = None) -> LlamaForCausalLM:
    """Random-init Llama (hidden 64, 2 layers), optionally with a logit bias on some tokens."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(text_config(tokenizer)).eval()
    if bias:
        model.lm_head = with_logit_bias(model.lm_head, bias)
    return model


def bundle_of(model, processor) -> ModelBundle:
    return ModelBundle(model=model, processor=processor, chat_template="", name="tiny")


def requests(prompts=PROMPTS) -> list[GenerationRequest]:
    return [GenerationRequest(prompt=p, id=f"q{i}") for i, p in enumerate(prompts)]


def tiny_llava(tokenizer, seed: int = 0) -> ModelBundle:
    """CLIP vision (hidden 32, image 32, patch 8) + Llama: the processor expands `<image>` to 16 tokens."""
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32},
                                              crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>")
    torch.manual_seed(seed)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=32, patch_size=8),
        text_config=text_config(tokenizer), image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default")
    model = LlavaForConditionalGeneration(config).eval()
    # make it try to close its thinking now and then, so Waits get used
    model.lm_head = with_logit_bias(model.lm_head, {tokenizer.convert_tokens_to_ids("</think>"): 0.3})
    return bundle_of(model, processor)


def closing_llama(tokenizer, end_bias: float = 0.3):
    """A tiny Llama that starts the end delimiter now and then and, when it is several tokens, finishes it.

    Each later delimiter token gets an output row along its predecessor's input embedding (embeddings scaled
    up to carry through the residual stream) and a negative bias: it wins right after its predecessor only.
    """
    end = tokenizer.encode(END, add_special_tokens=False)
    model = tiny_llama(tokenizer, bias={end[0]: end_bias, **{t: -4.0 for t in end[1:]}})
    with torch.no_grad():
        embeddings = model.model.embed_tokens.weight
        embeddings *= 2
        for prev, nxt in itertools.pairwise(end):
            model.lm_head.weight[nxt] += embeddings[prev] / embeddings[prev].norm()
    return bundle_of(model, tokenizer)


def engine(batch_size: int = 4, **defaults) -> HFEngine:
    # 6 prompts: a full and a partial batch
    return HFEngine(batch_size=batch_size, progress=False, **defaults)


def forced(bundle, point: BudgetPoint, **params):
    return engine().generate(bundle, requests(), GenerationParams(budget=point, **params))


def ids_of(bundle, text: str) -> list[int]:
    return bundle.tokenizer.encode(text, add_special_tokens=False)


def count_runs(seq: list[int], sub: list[int]) -> int:
    return sum(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def summary(gens) -> list[tuple]:
    return [(g.token_ids, g.thinking_tokens, g.waits_used, g.forced_end, g.finish_reason) for g in gens]



def markdown_table(text: str, heading: str) -> list[dict[str, str]]:
    """The rows (header -> cell) of the first markdown table after `## heading` in `text`."""
    section = text.split(f"## {heading}", 1)
    if len(section) < 2:
        raise AssertionError(f"no '## {heading}' section in:\n{text}")
    lines = [line.strip() for line in section[1].splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip("|").split("|")]

    header, rule, *rows = table
    assert set(rule.replace("|", "").replace(" ", "")) <= set("-:"), f"not a markdown table rule: {rule}"
    return [dict(zip(cells(header), cells(row), strict=True)) for row in rows]
