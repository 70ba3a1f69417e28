"""`bonesoup merge` end to end on tiny checkpoints and adapters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import copy_checkpoint
from peft import PeftModel
from transformers import AutoModelForCausalLM

from bonesoup.cli import main
from bonesoup.lora import merge_lora_into_base
from bonesoup.merge import merge_checkpoints


def load(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def assert_same_weights(first: Path, second: Path) -> None:
    first_state, second_state = load(first).state_dict(), load(second).state_dict()
    assert first_state.keys() == second_state.keys()
    for name, tensor in first_state.items():
        torch.testing.assert_close(tensor, second_state[name], atol=1e-6, rtol=0, msg=name)


def backbone_args(paths: list[Path]) -> list[str]:
    return [arg for path in paths for arg in ("--backbone", str(path))]


def test_preference_merge_prints_coefficients(tmp_path, capsys, tiny_base_dir, tiny_backbone_dirs):
    output = tmp_path / "soup"
    status = main(
        ["merge", *backbone_args(tiny_backbone_dirs[:2]), "--base", str(tiny_base_dir),
         "--preference", "1,0", "--beta", "0.7", "--output", str(output)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0
    assert "merge/coefficient/1 1.75" in captured.out
    assert "merge/coefficient/2 -0.75" in captured.out
    assert f"wrote full weights to {output}" in captured.out
    expected = merge_checkpoints(
        tiny_backbone_dirs[:2], [1.75, -0.75], tmp_path / "ref", base=tiny_base_dir
    )
    assert_same_weights(output, expected)


def test_raw_coefficients_with_base(tmp_path, capsys, tiny_base_dir, tiny_backbone_dirs):
    output = tmp_path / "soup"
    status = main(
        ["merge", *backbone_args(tiny_backbone_dirs[:2]), "--base", str(tiny_base_dir),
         "--coefficients", "0.5,0.8", "--output", str(output), "--dtype", "float32"]
    )  # fmt: skip
    assert status == 0
    assert "merge/coefficient/base -0.3" in capsys.readouterr().out
    expected = merge_checkpoints(
        tiny_backbone_dirs[:2],
        [0.5, 0.8],
        tmp_path / "ref",
        base=tiny_base_dir,
        base_coefficient=-0.3,
    )
    assert_same_weights(output, expected)


def test_extrapolation_uses_base(tmp_path, capsys, tiny_base_dir, tiny_backbone_dirs):
    output = tmp_path / "soup"
    status = main(
        ["merge", *backbone_args(tiny_backbone_dirs[:2]), "--base", str(tiny_base_dir),
         "--preference", "0.5,0.5", "--beta", "0.7", "--extrapolation", "2,2",
         "--output", str(output)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    # c = (0.5, 0.5) pushed by k = 2: backbones 1 each, theta_0 -1
    assert "merge/coefficient/1 1 " in out
    assert "merge/coefficient/base -1 " in out
    expected = merge_checkpoints(
        tiny_backbone_dirs[:2],
        [1.0, 1.0],
        tmp_path / "ref",
        base=tiny_base_dir,
        base_coefficient=-1.0,
    )
    assert_same_weights(output, expected)


def test_lora_merged_and_adapter(tmp_path, capsys, tiny_base_dir, tiny_lora_dirs, tiny_input_ids):
    merged, adapter = tmp_path / "merged", tmp_path / "adapter"
    common = [
        *backbone_args(tiny_lora_dirs[:2]),
        "--base",
        str(tiny_base_dir),
        "--preference",
        "0.9,0.1",
    ]
    assert main(["merge", *common, "--output", str(merged), "--max-shard-size", "30KB"]) == 0
    assert (merged / "model.safetensors.index.json").is_file()
    assert main(["merge", *common, "--output", str(adapter), "--lora-output", "adapter"]) == 0
    out = capsys.readouterr().out
    assert "wrote stacked LoRA adapter" in out
    # beta 0.7, mu = (0.9, 0.1): c = (1.5, -0.5)
    expected = merge_lora_into_base(
        tiny_base_dir, tiny_lora_dirs[:2], [1.5, -0.5], tmp_path / "ref"
    )
    assert_same_weights(merged, expected)
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 12
    with torch.no_grad():
        adapter_logits = PeftModel.from_pretrained(load(tiny_base_dir), adapter)(
            tiny_input_ids
        ).logits
        merged_logits = load(merged)(tiny_input_ids).logits
    torch.testing.assert_close(adapter_logits, merged_logits, atol=1e-5, rtol=0)


def test_lora_base_from_adapter_config(tmp_path, tiny_base_dir, tiny_lora_dirs):
    adapter = copy_checkpoint(tiny_lora_dirs[0], tmp_path / "adapter")
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(tiny_base_dir)
    config_path.write_text(json.dumps(config))
    output = tmp_path / "soup"
    assert (
        main(["merge", "--backbone", str(adapter), "--coefficients", "1", "--output", str(output)])
        == 0
    )
    expected = merge_lora_into_base(tiny_base_dir, [adapter], [1.0], tmp_path / "ref")
    assert_same_weights(output, expected)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preference", "0.5,0.5", "--extrapolation", "2,2"], "pass --base"),
        (["--coefficients", "0.5,0.6"], "sum to 1.1"),
        (["--coefficients", "1,0", "--beta", "0.7"], "cannot be combined with --beta"),
        (["--coefficients", "1,x"], "'x' is not a number"),
        ([], "missing --preference"),
        (["--preference", "0.5,0.5,0"], None),
    ],
)
def test_invalid_input_exits_2(tmp_path, capsys, tiny_backbone_dirs, extra, message):
    output = tmp_path / "soup"
    status = main(
        ["merge", *backbone_args(tiny_backbone_dirs[:2]), "--output", str(output), *extra]
    )
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert captured.err.startswith("bonesoup: error: ")
    assert captured.err.count("\n") == 1
    if message:
        assert message in captured.err
    assert not output.exists()


def test_lora_without_local_base_exits_2(tmp_path, capsys, tiny_lora_dirs):
    adapter = copy_checkpoint(tiny_lora_dirs[0], tmp_path / "adapter")
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = "example-org/not-a-local-folder"
    config_path.write_text(json.dumps(config))
    status = main(
        [
            "merge",
            "--backbone",
            str(adapter),
            "--coefficients",
            "1",
            "--output",
            str(tmp_path / "s"),
        ]
    )
    assert status == 2
    assert (
        "'example-org/not-a-local-folder', which is not a local folder" in capsys.readouterr().err
    )
    assert not (tmp_path / "s").exists()


def test_subprocess_vocab_mismatch(tmp_path, tiny_tokenizer, tiny_backbone_dirs):
    from conftest import build_tiny_llama, save_checkpoint

    bigger = save_checkpoint(build_tiny_llama(vocab_size=257), tiny_tokenizer, tmp_path / "big")
    result = subprocess.run(
        [sys.executable, "-m", "bonesoup.cli", "merge", "--backbone", str(tiny_backbone_dirs[0]),
         "--backbone", str(bigger), "--coefficients", "0.5,0.5", "--output", str(tmp_path / "s")],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    assert "model.embed_tokens.weight has shape [256, 32]" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
