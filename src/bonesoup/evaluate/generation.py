"""Batched sampling for the evaluation sweep.

Prompts are tokenised with left padding and an attention mask, sorted by length so a batch contains
prompts of similar size, generated in batches and returned in the original order. Batch b is
sampled after `torch.manual_seed(seed + b)` inside a forked RNG state, so two models given the
same prompts and seed draw the same random numbers: methods are compared on equal noise.

Sampling is done by `NucleusSampler`, a logits processor that draws the token itself and leaves
only that token finite, under greedy `generate`. It finds the nucleus with a top-k of the 1,024
most likely tokens (a full sort only for a row whose top 1,024 hold less than top_p), because
transformers' top-p warper sorts the whole vocabulary each step: with SmolLM2's 49k-token
vocabulary at batch 32 that sort took about a third of the generation time on our 2-core CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList

logger = logging.getLogger(__name__)

NUCLEUS_CANDIDATES = 1024


class NucleusSampler(LogitsProcessor):
    """Draw the next token by nucleus (top-p) sampling at a temperature; return scores that are
    0 at the drawn token and -inf elsewhere, so greedy decoding emits it.

    Token t of a row is kept when the probability mass of the tokens ranked above it is below
    top_p (the smallest set whose mass reaches top_p); the kept probabilities are renormalised.
    The same rule as transformers' TopPLogitsWarper up to ties.
    """

    def __init__(self, top_p: float, temperature: float = 1.0) -> None:
        if not 0 < top_p <= 1 or temperature <= 0:
            raise ValueError(f"need 0 < top_p <= 1 and temperature > 0, got {top_p}, {temperature}")
        self.top_p = float(top_p)
        self.temperature = float(temperature)

    def _draw(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Sample one token per row from the nucleus; probabilities (b, V) -> ids (b,)."""
        count = min(NUCLEUS_CANDIDATES, probabilities.shape[-1])
        values, indices = probabilities.topk(count, dim=-1)  # (b, count), descending
        short = values.sum(dim=-1) < self.top_p
        if bool(short.any()):  # the nucleus is larger than the candidates: sort those rows
            full_values, full_indices = probabilities[short].sort(dim=-1, descending=True)
            return self._draw_sorted_rows(values, indices, short, full_values, full_indices)
        return self._sample(values, indices)

    def _draw_sorted_rows(self, values, indices, short, full_values, full_indices):
        tokens = torch.empty(values.shape[0], dtype=torch.long, device=values.device)
        tokens[short] = self._sample(full_values, full_indices)
        if bool((~short).any()):
            tokens[~short] = self._sample(values[~short], indices[~short])
        return tokens

    def _sample(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        mass_before = values.cumsum(dim=-1) - values  # (b, k): mass ranked above each token
        kept = torch.where(mass_before < self.top_p, values, torch.zeros_like(values))
        kept[:, 0] = values[:, 0]  # keep at least the most likely token
        choice = torch.multinomial(kept, 1)  # (b, 1), renormalises internally
        return indices.gather(-1, choice).squeeze(-1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probabilities = torch.softmax(scores.float() / self.temperature, dim=-1)
        tokens = self._draw(probabilities)
        drawn = torch.full_like(scores, float("-inf"))
        drawn.scatter_(-1, tokens[:, None], 0.0)
        return drawn


@dataclass
class Generation:
    """Responses of one call, in prompt order, with the count of generated tokens."""

    responses: list[str]
    new_tokens: int  # tokens generated, up to and including each row's end-of-sequence token


def _stop_token_ids(model, tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured is not None:
        ids.update(configured)
    return sorted(token for token in ids if token is not None)


def _count_new_tokens(tokens: torch.Tensor, stop_ids: list[int], pad_id: int) -> int:
    """Count tokens up to and including the first stop token of each row; (b, t) -> int."""
    is_stop = torch.isin(tokens, torch.tensor(stop_ids))
    total = 0
    for row, stops in zip(tokens, is_stop, strict=True):
        hits = torch.nonzero(stops)
        total += int(hits[0]) + 1 if hits.numel() else int((row != pad_id).sum())
    return total


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    top_p: float = 0.9,
    temperature: float = 1.0,
    batch_size: int = 16,
    seed: int = 0,
    do_sample: bool = True,
    logits_processor_factory=None,
) -> Generation:
    """Sample one response per prompt in batches; see `generate_responses`.

    `logits_processor_factory(input_ids, attention_mask)` may return a LogitsProcessorList for
    each batch (decoding-time mixing uses it to see the batch's padding).
    """
    if tokenizer.padding_side != "left":
        raise ValueError("the tokenizer must pad on the left for batched generation")
    lengths = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in prompts]
    order = sorted(range(len(prompts)), key=lambda index: lengths[index])
    stop_ids = _stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id
    responses: list[str | None] = [None] * len(prompts)
    new_tokens = 0
    device = next(model.parameters()).device
    for batch_index, start in enumerate(range(0, len(order), batch_size)):
        chosen = order[start : start + batch_size]
        encoded = tokenizer(
            [prompts[index] for index in chosen],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(device)
        processors = LogitsProcessorList()
        if logits_processor_factory is not None:
            processors.extend(
                logits_processor_factory(encoded["input_ids"], encoded["attention_mask"])
            )
        if do_sample:
            processors.append(NucleusSampler(top_p, temperature))
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(seed + batch_index)
            output = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,  # NucleusSampler draws the token when sampling
                pad_token_id=pad_id,
                eos_token_id=stop_ids,
                logits_processor=processors,
            )
        generated = output[:, encoded["input_ids"].shape[1] :].cpu()
        new_tokens += _count_new_tokens(generated, stop_ids, pad_id)
        texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
        for index, text in zip(chosen, texts, strict=True):
            responses[index] = text.strip()
    return Generation(responses=[text or "" for text in responses], new_tokens=new_tokens)


def generate_responses(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    top_p: float = 0.9,
    temperature: float = 1.0,
    batch_size: int = 16,
    seed: int = 0,
) -> list[str]:
    """Sample one response per prompt with nucleus sampling, in batches.

    Args:
        model: a causal LM (transformers), in eval mode.
        tokenizer: its tokenizer, padding on the left, with a pad token.
        prompts: formatted prompt texts (chat template already applied).
        max_new_tokens: generated tokens per response, at most.
        top_p, temperature: nucleus sampling parameters.
        batch_size: prompts per generate call.
        seed: sampling seed; batch b uses seed + b.

    Returns:
        decoded responses without special tokens, one per prompt, in prompt order.
    """
    return generate(
        model, tokenizer, prompts, max_new_tokens, top_p, temperature, batch_size, seed
    ).responses
