"""MOD decoding-time mixing on tiny random Llamas: corners equal one backbone, mixtures match a
cache-free reference computed token by token."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_llama, perturb_model

from bonesoup.evaluate.generation import generate
from bonesoup.evaluate.mod import ModMixture

PROMPTS = ["The quick brown fox", "A short answer is often a better answer, but", "Paris"]
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def backbones():
    first = perturb_model(build_tiny_llama(seed=0), seed=1, scale=0.5)
    second = perturb_model(build_tiny_llama(seed=0), seed=2, scale=0.5)
    return [first, second]


@pytest.fixture()
def tokenizer(tiny_tokenizer):
    tiny_tokenizer.padding_side = "left"
    return tiny_tokenizer


def _greedy(model, tokenizer) -> list[str]:
    return generate(model, tokenizer, PROMPTS, NEW_TOKENS, batch_size=3, do_sample=False).responses


def _reference_mixture(models, weights, tokenizer) -> list[str]:
    """Greedy decoding of sum_j w_j log_softmax(logits_j) with full forward passes (no cache)."""
    encoded = tokenizer(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    prompt_length = ids.shape[1]
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            mixed = sum(
                weight
                * torch.log_softmax(
                    model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1],
                    dim=-1,
                )
                for model, weight in zip(models, weights, strict=True)
            )
            next_token = mixed.argmax(dim=-1, keepdim=True)
            ids = torch.cat([ids, next_token], dim=1)
            mask = torch.cat([mask, torch.ones_like(next_token)], dim=1)
    responses = []
    for row in ids[:, prompt_length:]:
        tokens = row.tolist()
        if tokenizer.eos_token_id in tokens:
            tokens = tokens[: tokens.index(tokenizer.eos_token_id) + 1]
        responses.append(tokenizer.decode(tokens, skip_special_tokens=True).strip())
    return responses


@pytest.mark.parametrize("main", [0, 1, None])
def test_mod_corner_equals_backbone(backbones, tokenizer, main):
    mixture = ModMixture(backbones)
    expected = _greedy(backbones[1], tokenizer)
    result = mixture.generate(
        tokenizer, PROMPTS, [0.0, 1.0], NEW_TOKENS, batch_size=3, do_sample=False, main=main
    )
    assert result.responses == expected


def test_mod_corner_differs_between_backbones(backbones, tokenizer):
    assert _greedy(backbones[0], tokenizer) != _greedy(backbones[1], tokenizer)


@pytest.mark.parametrize("weights", [[0.5, 0.5], [0.3, 0.7]])
def test_mod_mixture_matches_reference(backbones, tokenizer, weights):
    mixture = ModMixture(backbones)
    result = mixture.generate(
        tokenizer, PROMPTS, weights, NEW_TOKENS, batch_size=3, do_sample=False
    )
    assert result.responses == _reference_mixture(backbones, weights, tokenizer)


def test_mod_split_skips_zero_weights(backbones):
    mixture = ModMixture(backbones + [backbones[0]])
    assert mixture.split([0.2, 0.8, 0.0]) == (1, [0])
    assert mixture.split([0.2, 0.8, 0.0], main=2) == (2, [0, 1])
