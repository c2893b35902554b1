"""The `likelihood` difficulty scorer: rank each item's choices by their log-likelihood under a model.

Each choice's continuation (the answer tag with its letter, the choice text, or the tag with the text) is scored after the
chat-templated question with the image; a softmax over the choices' summed log-probabilities gives the
probability of the correct one, `extra["p_correct"]` (lower = harder), which `hard` ranks.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from mvqa.curate.difficulty import check_stratify_by, keep_hardest
from mvqa.data.images import load_image
from mvqa.data.prompts import chat_prompt, format_question
from mvqa.data.records import VQAItem
from mvqa.data.stats import StageStats
from mvqa.models.bundle import ModelBundle


class LikelihoodScorer:
    def __init__(self, model_key: str = "scorer_model", prompt: str = "direct", continuation: str = "letter",
                 fraction: float | None = 0.15, threshold: float | None = None, progress: bool = True,
                 name: str = "likelihood", batch_size: int = 8, stratify_by: str | None = None) -> None:
        if continuation not in ("letter", "text", "tagged_text"):
            raise ValueError(f"scorer.continuation must be 'letter', 'text' or 'tagged_text', got {continuation!r}")
        self.model_key, self.prompt, self.continuation = model_key, prompt, continuation
        self.fraction, self.threshold, self.progress, self.name = fraction, threshold, progress, name
        if batch_size < 1:
            raise ValueError(f"scorer.batch_size={batch_size}, expected >= 1")
        self.batch_size = batch_size
        check_stratify_by(stratify_by, "scorer.stratify_by")  # before hours of scoring, not after
        self.stratify_by = stratify_by

    def continuations(self, item: VQAItem, bundle: ModelBundle) -> list[str]:
        t = bundle.special_tokens
        if self.continuation == "letter":
            return [f"{t.answer_start}{letter}{t.answer_end}" for letter in item.letters]
        if self.continuation == "tagged_text":  # a model taught to answer <answer>option text</answer>
            return [f"{t.answer_start}{choice}{t.answer_end}" for choice in item.choices]
        return list(item.choices)

    @torch.inference_mode()
    def choice_logprobs(self, items: list[VQAItem], bundle: ModelBundle) -> list[list[float]]:
        """Summed log-probability of each item's choice continuations: one right-padded batch of every
        (item, choice) sequence, each scored after its own prompt."""
        texts, images, n_prompt, sizes = [], [], [], []
        for item in items:
            prompt = chat_prompt(bundle.processor, format_question(item, self.prompt))
            image = load_image(item)
            conts = self.continuations(item, bundle)
            n = bundle.processor(text=[prompt], images=[image], add_special_tokens=False)["input_ids"][0]
            texts += [prompt + c for c in conts]
            images += [image] * len(conts)
            n_prompt += [len(n)] * len(conts)
            sizes.append(len(conts))
        enc = bundle.processor(text=texts, images=images, padding=True, return_tensors="pt", add_special_tokens=False)
        enc = {k: v.to(bundle.model.device) for k, v in enc.items()}
        logp = torch.log_softmax(bundle.model(**enc).logits[:, :-1].float(), dim=-1)
        targets = enc["input_ids"][:, 1:]
        token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        # Right padding: row r's prompt fills its first n_prompt[r] positions; only the continuation counts.
        positions = torch.arange(targets.shape[1], device=targets.device)
        mask = enc["attention_mask"][:, 1:] * (positions[None] >= torch.tensor(n_prompt, device=targets.device)[:, None] - 1)
        sums = (token_logp * mask).sum(-1).tolist()
        out, start = [], 0
        for n in sizes:
            out.append(sums[start:start + n])
            start += n
        return out

    def score(self, items: list[VQAItem], ctx) -> tuple[list[VQAItem], StageStats]:
        bundle = ctx.model(self.model_key)
        side, bundle.tokenizer.padding_side = bundle.tokenizer.padding_side, "right"
        out = []
        try:
            with tqdm(total=len(items), desc="score", unit="item", disable=not self.progress,
                      dynamic_ncols=True) as bar:
                for start in range(0, len(items), self.batch_size):
                    batch = items[start:start + self.batch_size]
                    for item in batch:
                        if item.is_free_text:
                            raise ValueError(f"item {item.id!r} is open-ended: the likelihood scorer ranks choices")
                    for item, logprobs in zip(batch, self.choice_logprobs(batch, bundle)):
                        lp = torch.tensor(logprobs)
                        out.append(item.with_extra(choice_logprobs=logprobs,
                                                   p_correct=float(torch.softmax(lp, 0)[item.answer_index]),
                                                   scorer_pred=item.letters[int(lp.argmax())]))
                    bar.update(len(batch))
        finally:
            bundle.tokenizer.padding_side = side
        accuracy = sum(it.extra["scorer_pred"] == it.answer_label for it in out) / max(len(out), 1)
        return out, StageStats("score", n_in=len(items), n_out=len(out),
                               metrics={"scorer": self.name, "scorer_accuracy": accuracy, "model": bundle.name})

    def hard(self, items: list[VQAItem]) -> tuple[list[VQAItem], StageStats]:
        return keep_hardest(items, fraction=self.fraction, threshold=self.threshold, key="p_correct",
                            stratify_by=self.stratify_by)
