"""MOD baseline: decoding-time mixing of the Rewarded Soups backbones' next-token distributions.

For a preference mu the next token is drawn from

    log p(y_t | y_<t) = sum_j mu_j log p_j(y_t | y_<t) + const,

where p_j is backbone j's next-token distribution (log-softmax of its logits). One backbone, the
"main" one, runs inside `generate`. `MixtureLogitsProcessor` runs the forward passes of the others
(n forward passes per token in all), each with its own KV cache, and replaces the main model's
logits with the mixture. Temperature and top-p are applied afterwards by `generate`, because
transformers 5.25 places custom processors before its sampling warpers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from bonesoup.evaluate.generation import Generation, generate


class MixtureLogitsProcessor(LogitsProcessor):
    """Replace the main model's logits with sum_j w_j log_softmax(logits_j).

    Args:
        main_weight: weight of the model that `generate` runs.
        others: (model, weight) for every other backbone with a non-zero weight.
        prompt_mask: attention mask of the batch's prompts, shape (b, p), left padded.

    The processor serves one generate call. It counts the tokens each other model has seen and
    feeds only the new ones. Position ids come from the padding as `generate` computes them for
    the main model: the cumulative sum of the attention mask minus 1.
    """

    def __init__(
        self,
        main_weight: float,
        others: Sequence[tuple[torch.nn.Module, float]],
        prompt_mask: torch.Tensor,
    ) -> None:
        self.main_weight = float(main_weight)
        self.others = [(model, float(weight)) for model, weight in others]
        self.prompt_mask = prompt_mask
        self.caches: list[object | None] = [None] * len(self.others)
        self.seen = 0

    def _attention_inputs(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch, prompt_length = self.prompt_mask.shape
        generated = torch.ones(
            batch,
            length - prompt_length,
            dtype=self.prompt_mask.dtype,
            device=self.prompt_mask.device,
        )
        mask = torch.cat([self.prompt_mask, generated], dim=1)  # (b, length)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)  # (b, length)
        return mask, positions

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        length = input_ids.shape[1]
        mask, positions = self._attention_inputs(length)
        mixed = self.main_weight * torch.log_softmax(scores.float(), dim=-1)  # (b, vocab)
        for index, (model, weight) in enumerate(self.others):
            output = model(
                input_ids=input_ids[:, self.seen :],
                attention_mask=mask,
                position_ids=positions[:, self.seen :],
                cache=self.caches[index],
                use_cache=True,
                logits_to_keep=1,
            )
            self.caches[index] = output.cache  # transformers 5.25 names the KV cache `cache`
            logits = output.logits[:, -1, : scores.shape[-1]].float()
            mixed = mixed + weight * torch.log_softmax(logits, dim=-1)
        self.seen = length
        return mixed.to(scores.dtype)


class ModMixture:
    """The backbones of a MOD run: one model per Rewarded Soups backbone, in objective order."""

    def __init__(self, models: Sequence[torch.nn.Module]) -> None:
        if len(models) < 2:
            raise ValueError(f"MOD mixes at least 2 backbones, got {len(models)}")
        self.models = list(models)

    def split(self, preference: Sequence[float], main: int | None = None) -> tuple[int, list[int]]:
        """Pick the model `generate` runs (the largest weight unless `main` is given) and the
        other backbones with a non-zero weight, whose forward passes the processor runs."""
        weights = np.asarray(preference, dtype=np.float64)
        if weights.size != len(self.models):
            raise ValueError(
                f"preference has {weights.size} weights for {len(self.models)} backbones"
            )
        chosen = int(np.argmax(weights)) if main is None else int(main)
        others = [j for j in range(weights.size) if j != chosen and weights[j] > 0]
        return chosen, others

    def generate(
        self,
        tokenizer,
        prompts: Sequence[str],
        preference: Sequence[float],
        max_new_tokens: int,
        top_p: float = 0.9,
        temperature: float = 1.0,
        batch_size: int = 16,
        seed: int = 0,
        do_sample: bool = True,
        main: int | None = None,
    ) -> Generation:
        """Generate with the mixture for `preference` (one weight per backbone)."""
        weights = [float(value) for value in preference]
        chosen, others = self.split(weights, main)

        def factory(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> LogitsProcessorList:
            pairs = [(self.models[j], weights[j]) for j in others]
            return LogitsProcessorList(
                [MixtureLogitsProcessor(weights[chosen], pairs, attention_mask)]
            )

        return generate(
            self.models[chosen],
            tokenizer,
            prompts,
            max_new_tokens,
            top_p=top_p,
            temperature=temperature,
            batch_size=batch_size,
            seed=seed,
            do_sample=do_sample,
            logits_processor_factory=factory,
        )
