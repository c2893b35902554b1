"""The `likelihood` difficulty scorer: how likely the model finds the right answer, for every question kind.

- mcq: each choice's continuation (the answer tag with its letter, the choice text, or the tag with the text)
  is scored after the chat-templated question with the image; a softmax over the choices' summed
  log-probabilities gives the probability of the correct one.
- closed with a yes/no answer: "yes" and "no" are ranked the same way (tagged unless `continuation=text`).
- open (and closed answers other than yes/no): the gold answer's mean per-token log-likelihood, as the
  per-token probability exp(mean log p).
That number is `extra["p_correct"]` (lower = harder), which `hard` ranks. The scales differ by kind, so `hard`
takes its fraction within each kind (and within `stratify_by`'s values).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from mvqa.curate.difficulty import check_stratify_by, keep_hardest
from mvqa.data.answers import NO, YES, normalise_answer
from mvqa.data.images import load_image
from mvqa.data.prompts import chat_prompt, format_question
from mvqa.data.records import VQAItem
from mvqa.data.stats import StageStats
from mvqa.models.bundle import ModelBundle
from mvqa.schemas.scorer import LikelihoodScorerConf


class LikelihoodScorer:
    def __init__(
        self,
        model_key: str = LikelihoodScorerConf.model_key,
        prompt: str = LikelihoodScorerConf.prompt,
        continuation: str = LikelihoodScorerConf.continuation,
        fraction: float | None = LikelihoodScorerConf.fraction,
        threshold: float | None = LikelihoodScorerConf.threshold,
        progress: bool = LikelihoodScorerConf.progress,
        name: str = LikelihoodScorerConf.name,
        batch_size: int = LikelihoodScorerConf.batch_size,
        stratify_by: str | None = LikelihoodScorerConf.stratify_by,
    ) -> None:
        if continuation not in ("letter", "text", "tagged_text"):
            raise ValueError(
                f"scorer.continuation must be 'letter', 'text' or 'tagged_text', got {continuation!r}")
        self.model_key, self.prompt, self.continuation = model_key, prompt, continuation
        self.fraction, self.threshold, self.progress, self.name = fraction, threshold, progress, name
        if batch_size < 1:
            raise ValueError(f"scorer.batch_size={batch_size}, expected >= 1")
        self.batch_size = batch_size
        check_stratify_by(stratify_by, "scorer.stratify_by")  # before hours of scoring, not after
        self.stratify_by = stratify_by

    def continuations(self, item: VQAItem, bundle: ModelBundle) -> list[str]:
        """The candidates scored for an item; several are ranked, a single one (the gold answer) is scored
        alone."""
        t = bundle.special_tokens
        if not item.is_mcq:
            answers = [YES, NO] if self.ranks_yes_no(item) else [item.answer.strip()]
            if self.continuation == "text":
                return answers
            return [f"{t.answer_start}{a}{t.answer_end}" for a in answers]
        if self.continuation == "letter":
            return [f"{t.answer_start}{letter}{t.answer_end}" for letter in item.letters]
        if self.continuation == "tagged_text":  # a model taught to answer <answer>option text</answer>
            return [f"{t.answer_start}{choice}{t.answer_end}" for choice in item.choices]
        return list(item.choices)

    @staticmethod
    def ranks_yes_no(item: VQAItem) -> bool:
        return item.kind == "closed" and normalise_answer(item.answer) in (YES, NO)

    def gold_index(self, item: VQAItem) -> int:
        if item.is_mcq:
            return item.answer_index
        return [YES, NO].index(normalise_answer(item.answer)) if self.ranks_yes_no(item) else 0

    @torch.inference_mode()
    def choice_logprobs(self, items: list[VQAItem], bundle: ModelBundle) -> list[list[tuple[float, int]]]:
        """(summed log-probability, token count) of each item's continuations: one right-padded batch of every
        (item, continuation) sequence, each scored after its own prompt."""
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
        enc = bundle.processor(text=texts, images=images, padding=True, return_tensors="pt",
                               add_special_tokens=False)
        enc = {k: v.to(bundle.model.device) for k, v in enc.items()}
        logp = torch.log_softmax(bundle.model(**enc).logits[:, :-1].float(), dim=-1)
        targets = enc["input_ids"][:, 1:]
        token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        # Right padding: row r's prompt fills its first n_prompt[r] positions; only the continuation counts.
        positions = torch.arange(targets.shape[1], device=targets.device)
        mask = enc["attention_mask"][:, 1:] * (
            positions[None] >= torch.tensor(n_prompt, device=targets.device)[:, None] - 1)
        sums, counts = (token_logp * mask).sum(-1).tolist(), mask.sum(-1).tolist()
        out, start = [], 0
        for n in sizes:
            out.append(list(zip(sums[start:start + n], (int(c) for c in counts[start:start + n]))))
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
                    unlabelled = [it.id for it in batch if not it.is_mcq and not it.answer.strip()]
                    if unlabelled:
                        raise ValueError(f"items {unlabelled[:3]} have no gold answer: the likelihood scorer "
                                         "scores the gold answer's likelihood")
                    for item, scored in zip(batch, self.choice_logprobs(batch, bundle)):
                        out.append(self.scored_item(item, scored))
                    bar.update(len(batch))
        finally:
            bundle.tokenizer.padding_side = side
        ranked = [it for it in out if it.extra["scorer_pred"] is not None]
        accuracy = sum(it.extra["scorer_pred_correct"] for it in ranked) / len(ranked) if ranked else None
        return out, StageStats("score", n_in=len(items), n_out=len(out),
                               metrics={"scorer": self.name, "scorer_accuracy": accuracy,
                                        "ranked": len(ranked),
                                        "gold_likelihood_only": len(out) - len(ranked), "model": bundle.name})

    def scored_item(self, item: VQAItem, scored: list[tuple[float, int]]) -> VQAItem:
        logprobs = [lp for lp, _ in scored]
        if len(scored) == 1:  # the gold answer alone: its per-token probability
            lp, n = scored[0]
            return item.with_extra(choice_logprobs=logprobs,
                                   p_correct=float(torch.tensor(lp / max(n, 1)).exp()),
                                   scorer_pred=None, scorer_pred_correct=None)
        lp = torch.tensor(logprobs)
        gold, best = self.gold_index(item), int(lp.argmax())
        pred = item.letters[best] if item.is_mcq else [YES, NO][best]
        return item.with_extra(choice_logprobs=logprobs, p_correct=float(torch.softmax(lp, 0)[gold]),
                               scorer_pred=pred, scorer_pred_correct=best == gold)

    def hard(self, items: list[VQAItem]) -> tuple[list[VQAItem], StageStats]:
        return keep_hardest(items, fraction=self.fraction, threshold=self.threshold, key="p_correct",
                            stratify_by=self.stratify_by, within_kind=True)
