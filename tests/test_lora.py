"""LoRA soups: the stacked adapter and the merged weights equal explicit weight deltas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import copy_checkpoint, make_lora_adapter
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from bonesoup.errors import BonesoupError
from bonesoup.lora import load_lora_adapter, merge_lora_into_base, stack_lora_adapters

ATOL = 1e-5


def load(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def reference_model(base_dir: Path, adapter_dirs: list[Path], coefficients: list[float]):
    """theta_0 + sum_j c_j delta_j with each delta_j taken from PEFT's own get_delta_weight."""
    model = load(base_dir)
    deltas: dict[str, torch.Tensor] = {}
    for path, coefficient in zip(adapter_dirs, coefficients, strict=True):
        peft_model = PeftModel.from_pretrained(load(base_dir), path)
        for name, module in peft_model.get_base_model().named_modules():
            if isinstance(module, LoraLayer):
                delta = coefficient * module.get_delta_weight("default").detach()
                deltas[name] = deltas.get(name, 0) + delta
    with torch.no_grad():
        for name, delta in deltas.items():
            model.get_submodule(name).weight.add_(delta)
    return model


def logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids).logits


COEFFICIENT_CASES = [
    [1.75, -0.75, 0.0],
    [-1.0, 0.5, 1.5],
    [0.2, 0.3, 0.5],
    [3.0, -2.0, 0.0],
]


@pytest.mark.parametrize("coefficients", COEFFICIENT_CASES)
def test_stacked_adapter_matches_reference(
    tmp_path, tiny_base_dir, tiny_lora_dirs, tiny_input_ids, coefficients
):
    output = stack_lora_adapters(tiny_lora_dirs, coefficients, tmp_path / "soup")
    soup = PeftModel.from_pretrained(load(tiny_base_dir), output).eval()
    reference = reference_model(tiny_base_dir, tiny_lora_dirs, coefficients)
    expected = logits(reference, tiny_input_ids)
    torch.testing.assert_close(logits(soup, tiny_input_ids), expected, atol=ATOL, rtol=0)
    # the soup must differ from theta_0, or the comparison above proves nothing
    assert not torch.allclose(expected, logits(load(tiny_base_dir), tiny_input_ids), atol=1e-3)


@pytest.mark.parametrize("coefficients", COEFFICIENT_CASES)
def test_merged_weights_match_reference(
    tmp_path, tiny_base_dir, tiny_lora_dirs, tiny_input_ids, coefficients
):
    output = merge_lora_into_base(tiny_base_dir, tiny_lora_dirs, coefficients, tmp_path / "m")
    expected = logits(reference_model(tiny_base_dir, tiny_lora_dirs, coefficients), tiny_input_ids)
    torch.testing.assert_close(logits(load(output), tiny_input_ids), expected, atol=ATOL, rtol=0)


def test_stacked_adapter_rank_and_scaling(tmp_path, tiny_lora_dirs):
    output = stack_lora_adapters(tiny_lora_dirs, [1.0, 1.0, 1.0], tmp_path / "soup")
    config = json.loads((output / "adapter_config.json").read_text())
    assert config["r"] == 4 + 8 + 2
    assert config["lora_alpha"] == config["r"]
    assert config["use_rslora"] is False
    # union of module sets: q, k, v, o, gate, up, down in both layers
    assert len(config["target_modules"]) == 14


def test_unit_coefficient_equals_single_adapter(
    tmp_path, tiny_base_dir, tiny_lora_dirs, tiny_input_ids
):
    output = stack_lora_adapters(tiny_lora_dirs[:2], [1.0, 0.0], tmp_path / "soup")
    soup = PeftModel.from_pretrained(load(tiny_base_dir), output).eval()
    single = PeftModel.from_pretrained(load(tiny_base_dir), tiny_lora_dirs[0]).eval()
    torch.testing.assert_close(
        logits(soup, tiny_input_ids), logits(single, tiny_input_ids), atol=ATOL, rtol=0
    )


def test_negative_single_adapter_delta(tmp_path, tiny_base_dir, tiny_lora_dirs):
    output = merge_lora_into_base(tiny_base_dir, tiny_lora_dirs[1:2], [-1.0], tmp_path / "m")
    name = "model.layers.0.self_attn.q_proj"
    with safe_open(tiny_lora_dirs[1] / "adapter_model.safetensors", "pt") as handle:
        a = handle.get_tensor(f"base_model.model.{name}.lora_A.weight")
        b = handle.get_tensor(f"base_model.model.{name}.lora_B.weight")
    scale = 4 / 8**0.5  # rsLoRA: alpha / sqrt(r)
    base_weight = load(tiny_base_dir).get_submodule(name).weight.detach()
    merged_weight = load(output).get_submodule(name).weight.detach()
    torch.testing.assert_close(merged_weight - base_weight, -scale * b @ a, atol=1e-6, rtol=0)


def test_zero_coefficients_give_base(tmp_path, tiny_base_dir, tiny_lora_dirs, tiny_input_ids):
    output = stack_lora_adapters(tiny_lora_dirs, [0.0, 0.0, 0.0], tmp_path / "soup")
    soup = PeftModel.from_pretrained(load(tiny_base_dir), output).eval()
    expected = logits(load(tiny_base_dir), tiny_input_ids)
    torch.testing.assert_close(logits(soup, tiny_input_ids), expected, atol=ATOL, rtol=0)


def test_scale_read_from_config(tiny_lora_dirs):
    plain, rslora, high_alpha = (load_lora_adapter(p) for p in tiny_lora_dirs)
    assert next(iter(plain.modules.values())).scale == pytest.approx(8 / 4)
    assert next(iter(rslora.modules.values())).scale == pytest.approx(4 / 8**0.5)
    assert next(iter(high_alpha.modules.values())).scale == pytest.approx(16 / 2)


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("use_dora", True, "use_dora"),
        ("modules_to_save", ["lm_head"], "modules_to_save"),
        ("bias", "all", "bias='none'"),
        ("peft_type", "IA3", "only LoRA"),
    ],
)
def test_unsupported_settings_rejected(tmp_path, tiny_lora_dirs, setting, value, message):
    adapter = copy_checkpoint(tiny_lora_dirs[0], tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config[setting] = value
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(BonesoupError, match=message):
        stack_lora_adapters([adapter], [1.0], tmp_path / "soup")
    assert not (tmp_path / "soup").exists()


def test_pickle_adapter_rejected(tmp_path, tiny_lora_dirs):
    adapter = copy_checkpoint(tiny_lora_dirs[0], tmp_path / "adapter")
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    with pytest.raises(BonesoupError, match="safe_serialization=True"):
        stack_lora_adapters([adapter], [1.0], tmp_path / "soup")


def test_base_shape_mismatch_rejected(tmp_path, tiny_base_dir, tiny_lora_dirs):
    wide = make_lora_adapter(tiny_base_dir, tmp_path / "wide", seed=9)
    weights = wide / "adapter_model.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    tensors[key] = torch.zeros(4, 48)
    save_file(tensors, weights)
    with pytest.raises(BonesoupError, match="q_proj"):
        merge_lora_into_base(tiny_base_dir, [wide], [1.0], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_coefficient_count_checked(tmp_path, tiny_lora_dirs):
    with pytest.raises(BonesoupError, match="2 coefficients for 3 adapters"):
        stack_lora_adapters(tiny_lora_dirs, [0.5, 0.5], tmp_path / "soup")


def test_gpt2_fan_in_fan_out(tmp_path, tiny_tokenizer, tiny_input_ids):
    """GPT-2 stores Conv1D weights as (in, out), so PEFT adapters set fan_in_fan_out=True."""
    from conftest import save_checkpoint
    from transformers import GPT2Config, GPT2LMHeadModel

    from bonesoup.switching import LoraSoup

    config = GPT2Config(vocab_size=256, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    torch.manual_seed(0)
    base_dir = save_checkpoint(GPT2LMHeadModel(config).eval(), tiny_tokenizer, tmp_path / "gpt2")
    adapters = [
        make_lora_adapter(
            base_dir, tmp_path / f"a{seed}", seed=seed, target_modules=("c_attn", "c_fc"),
            fan_in_fan_out=True,
        )
        for seed in (1, 2)
    ]  # fmt: skip
    coefficients = [1.75, -0.75]
    expected = logits(reference_model(base_dir, adapters, coefficients), tiny_input_ids)
    merged = merge_lora_into_base(base_dir, adapters, coefficients, tmp_path / "merged")
    torch.testing.assert_close(logits(load(merged), tiny_input_ids), expected, atol=ATOL, rtol=0)
    stacked = stack_lora_adapters(adapters, coefficients, tmp_path / "stacked")
    soup_model = PeftModel.from_pretrained(load(base_dir), stacked).eval()
    torch.testing.assert_close(logits(soup_model, tiny_input_ids), expected, atol=ATOL, rtol=0)
    soup = LoraSoup(load(base_dir), adapters)
    soup.set_coefficients(coefficients)
    torch.testing.assert_close(logits(soup.model, tiny_input_ids), expected, atol=ATOL, rtol=0)
