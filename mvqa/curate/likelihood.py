"""The `likelihood` difficulty scorer: rank each item's choices by their log-likelihood under a model.

Each choice's continuation (the answer tag with its letter, the choice text, or the tag with the text) is scored after the
chat-templated question with the image; a softmax over the choices' summed log-probabilities gives the
probability of the correct one, `extra["p_correct"]` (lower = harder), which `hard` ranks.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from mvqa.curate.difficulty import keep_hardest
from mvqa.data.collators import chat_prompt
from mvqa.data.images import load_image
from mvqa.data.records import VQAItem
from mvqa.data.stats import StageStats
from mvqa.models.bundle import ModelBundle
from mvqa.prompts import format_question


class LikelihoodScorer:
    def __init__(self, model_key: str = "scorer_model", prompt: str = "direct", continuation: str = "letter",
                 fraction: float | None = 0.15, threshold: float | None = None, progress: bool = True,
                 name: str = "likelihood") -> None:
        if continuation not in ("letter", "text", "tagged_text"):
            raise ValueError(f"scorer.continuation must be 'letter', 'text' or 'tagged_text', got {continuation!r}")
        self.model_key, self.prompt, self.continuation = model_key, prompt, continuation
        self.fraction, self.threshold, self.progress, self.name = fraction, threshold, progress, name

    def continuations(self, item: VQAItem, bundle: ModelBundle) -> list[str]:
        t = bundle.special_tokens
        if self.continuation == "letter":
            return [f"{t.answer_start}{letter}{t.answer_end}" for letter in item.letters]
        if self.continuation == "tagged_text":  # a model taught to answer <answer>option text</answer>
            return [f"{t.answer_start}{choice}{t.answer_end}" for choice in item.choices]
        return list(item.choices)

    @torch.inference_mode()
    def choice_logprobs(self, item: VQAItem, bundle: ModelBundle) -> list[float]:
        """Summed log-probability of each choice's continuation, one batch of len(choices) sequences."""
        prompt = chat_prompt(bundle.processor, format_question(item, self.prompt))
        image = load_image(item)
        conts = self.continuations(item, bundle)
        enc = bundle.processor(text=[prompt + c for c in conts], images=[image] * len(conts), padding=True,
                               return_tensors="pt", add_special_tokens=False)
        n_prompt = bundle.processor(text=[prompt], images=[image], return_tensors="pt",
                                    add_special_tokens=False)["input_ids"].shape[1]
        enc = {k: v.to(bundle.model.device) for k, v in enc.items()}
        logits = bundle.model(**enc).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = enc["input_ids"][:, 1:]
        token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        mask = enc["attention_mask"][:, 1:].clone()
        # Right padding: the prompt occupies the first n_prompt positions of every row.
        mask[:, : n_prompt - 1] = 0
        return (token_logp * mask).sum(-1).tolist()

    def score(self, items: list[VQAItem], ctx) -> tuple[list[VQAItem], StageStats]:
        bundle = ctx.model(self.model_key)
        side, bundle.tokenizer.padding_side = bundle.tokenizer.padding_side, "right"
        out = []
        try:
            for item in tqdm(items, desc="score", unit="item", disable=not self.progress, dynamic_ncols=True):
                if item.is_open:
                    raise ValueError(f"item {item.id!r} is open-ended: the likelihood scorer ranks choices")
                lp = torch.tensor(self.choice_logprobs(item, bundle))
                probs = torch.softmax(lp, 0)
                out.append(item.with_extra(choice_logprobs=lp.tolist(), p_correct=float(probs[item.answer_index]),
                                           scorer_pred=item.letters[int(lp.argmax())]))
        finally:
            bundle.tokenizer.padding_side = side
        accuracy = sum(it.extra["scorer_pred"] == it.answer_label for it in out) / max(len(out), 1)
        return out, StageStats("score", n_in=len(items), n_out=len(out),
                               metrics={"scorer": self.name, "scorer_accuracy": accuracy, "model": bundle.name})

    def hard(self, items: list[VQAItem]) -> tuple[list[VQAItem], StageStats]:
        return keep_hardest(items, fraction=self.fraction, threshold=self.threshold, key="p_correct")
