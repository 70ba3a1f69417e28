"""Batched generation: nucleus sampler against transformers' top-p rule, seeding, order."""

from __future__ import annotations

import torch
from transformers import TopPLogitsWarper

from bonesoup.evaluate.generation import NucleusSampler, generate, generate_responses


def _hf_kept(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    return torch.isfinite(TopPLogitsWarper(top_p=top_p)(None, scores.clone()))


def test_sampler_draws_inside_hf_nucleus():
    torch.manual_seed(0)
    scores = torch.randn(64, 300) * 3
    kept = _hf_kept(scores, 0.9)
    for _ in range(20):
        drawn = NucleusSampler(0.9)(None, scores)
        tokens = drawn.argmax(dim=-1)
        assert torch.isfinite(drawn).sum(dim=-1).eq(1).all()
        assert kept.gather(-1, tokens[:, None]).all()


def test_sampler_large_nucleus_falls_back_to_sort():
    # 1,500 tokens share 95% of the mass, so the top 1,024 hold about 70% < top_p. The
    # probabilities are distinct, so the nucleus does not depend on how ties are ordered.
    head = torch.linspace(1.2, 0.8, 1500)
    tail = torch.linspace(1.2, 0.8, 548)
    row = torch.cat([0.95 * head / head.sum(), 0.05 * tail / tail.sum()])
    scores = row.log().repeat(200, 1)
    kept = _hf_kept(scores[:1], 0.9)[0]
    tokens = NucleusSampler(0.9)(None, scores).argmax(dim=-1)
    assert bool(kept[tokens].all())
    assert tokens.max() >= 1024  # tokens beyond the top-1,024 candidates are drawn


def test_sampler_small_top_p_is_greedy():
    scores = torch.randn(8, 50)
    drawn = NucleusSampler(1e-6)(None, scores).argmax(dim=-1)
    assert torch.equal(drawn, scores.argmax(dim=-1))


def test_sampler_temperature_sharpens():
    scores = torch.tensor([[2.0, 1.0, 0.0]]).repeat(500, 1)
    torch.manual_seed(1)
    cold = NucleusSampler(1.0, temperature=0.1)(None, scores).argmax(dim=-1)
    torch.manual_seed(1)
    warm = NucleusSampler(1.0, temperature=1.0)(None, scores).argmax(dim=-1)
    assert (cold == 0).float().mean() > 0.99
    assert (warm == 0).float().mean() < 0.9


def test_generate_same_seed_same_responses(tiny_base_dir, tiny_tokenizer):
    from bonesoup.models import load_causal_lm

    model = load_causal_lm(str(tiny_base_dir))
    tiny_tokenizer.padding_side = "left"
    prompts = ["The quick brown fox", "Paris", "A short answer is often a better answer"]
    first = generate_responses(model, tiny_tokenizer, prompts, 6, batch_size=2, seed=3)
    again = generate_responses(model, tiny_tokenizer, prompts, 6, batch_size=2, seed=3)
    other = generate_responses(model, tiny_tokenizer, prompts, 6, batch_size=2, seed=4)
    assert first == again
    assert first != other
    assert len(first) == 3


def test_generate_counts_new_tokens(tiny_base_dir, tiny_tokenizer):
    from bonesoup.models import load_causal_lm

    model = load_causal_lm(str(tiny_base_dir))
    tiny_tokenizer.padding_side = "left"
    result = generate(
        model, tiny_tokenizer, ["Paris", "The quick brown fox"], 5, batch_size=2, do_sample=False
    )
    assert 2 <= result.new_tokens <= 10
