"""Sampling and scoring helpers shared by calibration, the held-out check and the RL reward functions.

Prompts are chat-formatted strings tokenised with the tokenizer's default special tokens, exactly
as TRL's RLOOTrainer and GRPOTrainer tokenise plain-text prompts, so that the starting model's
calibration samples come from the same distribution the policy starts from.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bonesoup.objectives import Normalizer, Objective

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    do_sample: bool = True
    batch_size: int = 16
    seed: int = 0


@torch.no_grad()
def sample_responses(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    settings: SamplingSettings,
) -> list[str]:
    """Generate one response per formatted prompt text; returns the decoded new tokens.

    The generator is seeded once with `settings.seed`, so the same model, prompts and settings
    give the same responses.
    """
    tokenizer.padding_side = "left"
    torch.manual_seed(settings.seed)
    was_training = model.training
    model.eval()
    responses: list[str] = []
    for start in range(0, len(texts), settings.batch_size):
        batch = list(texts[start : start + settings.batch_size])
        encoded = tokenizer(batch, return_tensors="pt", padding=True).to(model.device)
        generated = model.generate(
            **encoded,
            max_new_tokens=settings.max_new_tokens,
            do_sample=settings.do_sample,
            temperature=settings.temperature if settings.do_sample else None,
            top_p=settings.top_p if settings.do_sample else None,
            top_k=0 if settings.do_sample else None,
            pad_token_id=tokenizer.pad_token_id,
        )
        new_tokens = generated[:, encoded["input_ids"].shape[1] :]
        responses.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    if was_training:
        model.train()
    return responses


def score_objectives(
    objectives: Sequence[Objective],
    prompts: Sequence[str],
    responses: Sequence[str],
    references: Sequence[str | None],
) -> dict[str, list[float]]:
    """Return the raw scores of every objective, keyed by objective name."""
    scores = {}
    for objective in objectives:
        chosen = list(references) if objective.needs_reference else None
        scores[objective.name] = objective.score(list(prompts), list(responses), chosen)
    return scores


def reward_summary(
    scores: dict[str, list[float]],
    normalizer: Normalizer,
    names: Sequence[str],
    weights: Sequence[float] | None = None,
) -> dict[str, float]:
    """Summarise scores as `reward/<name>/raw_mean`, `reward/<name>/mean` (normalised) and h.

    With `weights` w (one per name), `reward/scalarized` = sum_i w_i * reward/<name_i>/mean,
    the backbone reward h_j on the normalised scale.
    """
    summary: dict[str, float] = {}
    for name in names:
        summary[f"reward/{name}/raw_mean"] = statistics.fmean(scores[name])
        summary[f"reward/{name}/mean"] = statistics.fmean(normalizer.normalize(name, scores[name]))
    if weights is not None:
        summary["reward/scalarized"] = sum(
            weight * summary[f"reward/{name}/mean"] for weight, name in zip(weights, names)
        )
    return summary


def prompt_options(config) -> dict[str, object]:
    """Return the `load_prompts` options that the configured source accepts."""
    prompts = config.prompts
    options: dict[str, object] = {}
    if prompts.source == "chitchat":
        options["max_words"] = prompts.max_words
    elif prompts.path is not None:
        options["path"] = prompts.path
    return options


def truncate_prompt(tokenizer, text: str, max_tokens: int) -> str:
    """Keep the last `max_tokens` tokens of a raw prompt (the end of a dialogue matters most)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[-max_tokens:], skip_special_tokens=True)


def load_formatted_prompts(config, tokenizer, split: str, limit: int | None):
    """Load prompts of one split; return the examples (truncated) and their chat-formatted texts."""
    from dataclasses import replace

    from bonesoup.prompts import format_prompt, load_prompts

    examples = load_prompts(config.prompts.source, split, limit, **prompt_options(config))
    examples = [
        replace(
            example,
            prompt=truncate_prompt(tokenizer, example.prompt, config.prompts.max_prompt_tokens),
        )
        for example in examples
    ]
    texts = [
        format_prompt(tokenizer, example.prompt, config.model.system_prompt) for example in examples
    ]
    return examples, texts
