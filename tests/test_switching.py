"""In-memory soups give the same logits as offline merges, for coefficients in any order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from bonesoup.errors import BonesoupError
from bonesoup.lora import merge_lora_into_base
from bonesoup.merge import merge_checkpoints
from bonesoup.switching import FullWeightSoup, LoraSoup, Soup, load_soup

ATOL = 1e-5
# Negative coefficients, back to an earlier vector, theta_0, and an extrapolated soup.
SEQUENCE = [
    [1.0, 0.0, 0.0],
    [1.75, -0.75, 0.0],
    [0.0909, 0.6364, 0.2727],
    [1.0, 0.0, 0.0],
    [0.0, 0.0, 0.0],
    [-1.0, 2.5, -0.5],
]


def load(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids).logits


def test_full_weight_soup_matches_offline_merge(
    tmp_path, tiny_base_dir, tiny_backbone_dirs, tiny_input_ids
):
    soup = FullWeightSoup(load(tiny_base_dir), tiny_backbone_dirs)
    for step, coefficients in enumerate(SEQUENCE):
        base_coefficient = 1.0 - sum(coefficients)
        offline = merge_checkpoints(
            tiny_backbone_dirs,
            coefficients,
            tmp_path / f"soup{step}",
            base=tiny_base_dir,
            base_coefficient=base_coefficient,
        )
        soup.set_coefficients(coefficients)
        expected = logits(load(offline), tiny_input_ids)
        torch.testing.assert_close(
            logits(soup.model, tiny_input_ids), expected, atol=ATOL, rtol=0, msg=str(coefficients)
        )


def test_full_weight_soup_keeps_tied_embeddings(tiny_base_dir, tiny_backbone_dirs):
    soup = FullWeightSoup(load(tiny_base_dir), tiny_backbone_dirs)
    soup.set_coefficients([1.75, -0.75, 0.0])
    model = soup.model
    assert model.lm_head.weight is model.model.embed_tokens.weight
    backbone = load(tiny_backbone_dirs[0])
    assert not torch.equal(model.lm_head.weight, backbone.lm_head.weight)


def test_full_weight_soup_zero_and_disable(tiny_base_dir, tiny_backbone_dirs, tiny_input_ids):
    base_logits = logits(load(tiny_base_dir), tiny_input_ids)
    soup = FullWeightSoup(load(tiny_base_dir), tiny_backbone_dirs)
    soup.set_coefficients([0.5, 0.5, 0.0])
    soup_logits = logits(soup.model, tiny_input_ids)
    assert not torch.allclose(soup_logits, base_logits, atol=1e-4)
    with soup.disable() as model:
        torch.testing.assert_close(logits(model, tiny_input_ids), base_logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(logits(soup.model, tiny_input_ids), soup_logits, atol=ATOL, rtol=0)


def test_lora_soup_matches_offline_merge(tmp_path, tiny_base_dir, tiny_lora_dirs, tiny_input_ids):
    soup = LoraSoup(load(tiny_base_dir), tiny_lora_dirs)
    for step, coefficients in enumerate(SEQUENCE):
        offline = merge_lora_into_base(
            tiny_base_dir, tiny_lora_dirs, coefficients, tmp_path / f"soup{step}"
        )
        soup.set_coefficients(coefficients)
        expected = logits(load(offline), tiny_input_ids)
        torch.testing.assert_close(
            logits(soup.model, tiny_input_ids), expected, atol=ATOL, rtol=0, msg=str(coefficients)
        )


def test_lora_soup_zero_and_disable(tiny_base_dir, tiny_lora_dirs, tiny_input_ids):
    base_logits = logits(load(tiny_base_dir), tiny_input_ids)
    soup = LoraSoup(load(tiny_base_dir), tiny_lora_dirs)
    torch.testing.assert_close(logits(soup.model, tiny_input_ids), base_logits, atol=ATOL, rtol=0)
    soup.set_coefficients([1.0, -1.0, 0.5])
    soup_logits = logits(soup.model, tiny_input_ids)
    assert not torch.allclose(soup_logits, base_logits, atol=1e-4)
    with soup.disable() as model:
        torch.testing.assert_close(logits(model, tiny_input_ids), base_logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(logits(soup.model, tiny_input_ids), soup_logits, atol=ATOL, rtol=0)


def test_lora_soup_generates(tiny_base_dir, tiny_lora_dirs, tiny_input_ids):
    soup = LoraSoup(load(tiny_base_dir), tiny_lora_dirs)
    soup.set_coefficients([1.75, -0.75, 0.0])
    output = soup.model.generate(input_ids=tiny_input_ids, max_new_tokens=3, do_sample=False)
    assert output.shape == (2, tiny_input_ids.shape[1] + 3)


def test_load_soup_picks_kind(tiny_base_dir, tiny_backbone_dirs, tiny_lora_dirs):
    lora_soup = load_soup(load(tiny_base_dir), tiny_lora_dirs)
    full_soup = load_soup(load(tiny_base_dir), tiny_backbone_dirs)
    assert isinstance(lora_soup, LoraSoup)
    assert isinstance(full_soup, FullWeightSoup)
    assert isinstance(lora_soup, Soup)
    assert isinstance(full_soup, Soup)
    with pytest.raises(BonesoupError, match="mix LoRA adapters"):
        load_soup(load(tiny_base_dir), [tiny_lora_dirs[0], tiny_backbone_dirs[0]])


def test_wrong_coefficient_count_rejected(tiny_base_dir, tiny_lora_dirs):
    soup = LoraSoup(load(tiny_base_dir), tiny_lora_dirs)
    with pytest.raises(BonesoupError, match="2 coefficients for 3 backbones"):
        soup.set_coefficients([0.5, 0.5])


def test_full_weight_soup_rejects_other_architecture(tmp_path, tiny_tokenizer, tiny_base_dir):
    from conftest import build_tiny_llama, save_checkpoint

    bigger = save_checkpoint(build_tiny_llama(vocab_size=300), tiny_tokenizer, tmp_path / "big")
    with pytest.raises(BonesoupError, match=r"embed_tokens.weight has shape \[300, 32\]"):
        FullWeightSoup(load(tiny_base_dir), [bigger])
