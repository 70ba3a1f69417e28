"""Streaming full-weight merge: exact values, layout, dtypes, validation and atomic output."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from conftest import (
    build_tiny_llama,
    copy_checkpoint,
    perturb_model,
    save_checkpoint,
)
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import bonesoup.merge as merge_module
from bonesoup.errors import BonesoupError
from bonesoup.merge import merge_checkpoints, parse_size, read_checkpoint


def load(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path).eval()


def state(path: Path) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in load(path).state_dict().items()}


def expected_soup(paths: list[Path], coefficients: list[float], base: Path | None = None):
    """sum_j c_j theta_j (+ (1 - sum c) theta_0) computed from fully loaded models."""
    states = [state(p) for p in paths]
    base_state = state(base) if base is not None else None
    result = {}
    for name in states[0]:
        total = sum(c * s[name] for c, s in zip(coefficients, states, strict=True))
        if base_state is not None:
            total = total + (1 - sum(coefficients)) * base_state[name]
        result[name] = total
    return result


def assert_state_close(path: Path, expected: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    merged = state(path)
    assert merged.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(merged[name], tensor, atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize(
    "coefficients", [[1 / 3, 1 / 3, 1 / 3], [1.75, -0.75, 0.0], [0.0909, 0.6364, 0.2727]]
)
def test_merge_without_base(tmp_path, tiny_backbone_dirs, coefficients):
    scaled = [c / sum(coefficients) for c in coefficients]
    output = merge_checkpoints(tiny_backbone_dirs, scaled, tmp_path / "soup")
    assert_state_close(output, expected_soup(tiny_backbone_dirs, scaled))


def test_merge_with_base_and_negative(tmp_path, tiny_base_dir, tiny_backbone_dirs):
    coefficients = [3.0, -2.0, 0.0]
    output = merge_checkpoints(tiny_backbone_dirs, coefficients, tmp_path / "s", base=tiny_base_dir)
    assert_state_close(output, expected_soup(tiny_backbone_dirs, coefficients, tiny_base_dir))


def test_merge_extrapolation_base_coefficient(tmp_path, tiny_base_dir, tiny_backbone_dirs):
    # k = 1.5 applied to c = (0.5, 0.5, 0): backbones 0.75 each, theta_0 gets 1 - 1.5 = -0.5
    coefficients = [0.75, 0.75, 0.0]
    output = merge_checkpoints(
        tiny_backbone_dirs, coefficients, tmp_path / "s", base=tiny_base_dir, base_coefficient=-0.5
    )
    base_state = state(tiny_base_dir)
    states = [state(p) for p in tiny_backbone_dirs[:2]]
    expected = {
        n: base_state[n]
        + 1.5 * (0.5 * (states[0][n] - base_state[n]) + 0.5 * (states[1][n] - base_state[n]))
        for n in base_state
    }
    assert_state_close(output, expected, atol=2e-6)


def test_output_loads_with_tokenizer(tmp_path, tiny_backbone_dirs, tiny_input_ids):
    output = merge_checkpoints(tiny_backbone_dirs[:2], [0.5, 0.5], tmp_path / "soup")
    tokenizer = AutoTokenizer.from_pretrained(output)
    assert tokenizer("The quick fox")["input_ids"]
    assert (output / "chat_template.jinja").is_file()
    assert (output / "generation_config.json").is_file()
    model = load(output)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model(tiny_input_ids).logits.shape[-1] == 256


def test_sharded_input_keeps_layout(tmp_path, tiny_tokenizer):
    paths = []
    for seed in range(2):
        model = perturb_model(build_tiny_llama(), seed=seed)
        paths.append(
            save_checkpoint(model, tiny_tokenizer, tmp_path / f"m{seed}", max_shard_size="40KB")
        )
    source = read_checkpoint(paths[0])
    assert len(source.shards) > 1
    output = merge_checkpoints(paths, [0.25, 0.75], tmp_path / "soup")
    merged = read_checkpoint(output)
    assert list(merged.shards.values()) == list(source.shards.values())
    assert (output / "model.safetensors.index.json").is_file()
    assert_state_close(output, expected_soup(paths, [0.25, 0.75]))


def test_max_shard_size_splits_output(tmp_path, tiny_backbone_dirs):
    output = merge_checkpoints(
        tiny_backbone_dirs[:2], [0.5, 0.5], tmp_path / "s", max_shard_size="30KB"
    )
    index = json.loads((output / "model.safetensors.index.json").read_text())
    files = set(index["weight_map"].values())
    assert len(files) > 2
    for name in files:
        assert (output / name).stat().st_size < 30_000 + 40_000  # one tensor may exceed the limit
    assert_state_close(output, expected_soup(tiny_backbone_dirs[:2], [0.5, 0.5]))


def test_bfloat16_output(tmp_path, tiny_backbone_dirs):
    output = merge_checkpoints(tiny_backbone_dirs[:2], [0.5, 0.5], tmp_path / "s", dtype="bfloat16")
    assert json.loads((output / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(output / "model.safetensors", "pt") as handle:
        tensor = handle.get_tensor("model.layers.0.mlp.up_proj.weight")
    assert tensor.dtype == torch.bfloat16
    expected = expected_soup(tiny_backbone_dirs[:2], [0.5, 0.5])[
        "model.layers.0.mlp.up_proj.weight"
    ]
    torch.testing.assert_close(tensor, expected.to(torch.bfloat16), atol=0, rtol=0)


def add_stored_lm_head(path: Path) -> Path:
    """Rewrite a tied checkpoint so that it also stores lm_head.weight (as some tools do)."""
    tensors = load_file(path / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return path


def test_tied_lm_head_stored_or_not(tmp_path, tiny_backbone_dirs):
    with_head = add_stored_lm_head(copy_checkpoint(tiny_backbone_dirs[0], tmp_path / "with_head"))
    output = merge_checkpoints([with_head, tiny_backbone_dirs[1]], [0.5, 0.5], tmp_path / "soup")
    assert "lm_head.weight" not in read_checkpoint(output).tensors
    assert_state_close(output, expected_soup(tiny_backbone_dirs[:2], [0.5, 0.5]))


def test_untied_model_merges_lm_head(tmp_path, tiny_tokenizer):
    paths = [
        save_checkpoint(
            perturb_model(build_tiny_llama(tie_word_embeddings=False), seed=s),
            tiny_tokenizer,
            tmp_path / f"u{s}",
        )
        for s in range(2)
    ]
    output = merge_checkpoints(paths, [1.5, -0.5], tmp_path / "soup")
    assert "lm_head.weight" in read_checkpoint(output).tensors
    assert_state_close(output, expected_soup(paths, [1.5, -0.5]))


def test_vocabulary_mismatch_names_tensor(tmp_path, tiny_tokenizer, tiny_backbone_dirs):
    bigger = save_checkpoint(build_tiny_llama(vocab_size=257), tiny_tokenizer, tmp_path / "big")
    with pytest.raises(BonesoupError, match=r"model.embed_tokens.weight.*\[256, 32\].*\[257, 32\]"):
        merge_checkpoints([tiny_backbone_dirs[0], bigger], [0.5, 0.5], tmp_path / "soup")
    assert not (tmp_path / "soup").exists()


def test_dtype_mismatch_rejected(tmp_path, tiny_tokenizer, tiny_backbone_dirs):
    half = save_checkpoint(build_tiny_llama().to(torch.bfloat16), tiny_tokenizer, tmp_path / "half")
    with pytest.raises(BonesoupError, match="BF16"):
        merge_checkpoints([tiny_backbone_dirs[0], half], [0.5, 0.5], tmp_path / "soup")


def test_pickle_checkpoint_rejected(tmp_path, tiny_backbone_dirs):
    pickled = copy_checkpoint(tiny_backbone_dirs[0], tmp_path / "pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(BonesoupError, match=r"pytorch_model.bin.*safe_serialization=True"):
        merge_checkpoints([tiny_backbone_dirs[1], pickled], [0.5, 0.5], tmp_path / "soup")


@pytest.mark.parametrize(
    ("coefficients", "kwargs", "message"),
    [
        ([0.5, 0.6], {}, "sum to 1.1"),
        ([0.5], {}, "1 coefficients for 2 backbones"),
        ([0.75, 0.75], {"base_coefficient": -0.5}, "needs the base"),
        ([0.5, 0.5], {"dtype": "float8"}, "invalid dtype"),
        ([float("nan"), 1.0], {}, "finite"),
    ],
)
def test_invalid_arguments_rejected(tmp_path, tiny_backbone_dirs, coefficients, kwargs, message):
    with pytest.raises(BonesoupError, match=message):
        merge_checkpoints(tiny_backbone_dirs[:2], coefficients, tmp_path / "soup", **kwargs)
    assert not (tmp_path / "soup").exists()


def test_existing_output_rejected(tmp_path, tiny_backbone_dirs):
    (tmp_path / "soup").mkdir()
    (tmp_path / "soup" / "keep.txt").write_text("user data")
    with pytest.raises(BonesoupError, match="not empty"):
        merge_checkpoints(tiny_backbone_dirs[:2], [0.5, 0.5], tmp_path / "soup")
    assert (tmp_path / "soup" / "keep.txt").read_text() == "user data"


def test_interrupted_merge_leaves_nothing(tmp_path, tiny_backbone_dirs, monkeypatch):
    calls = []
    original = merge_module._merge_tensor

    def failing_merge_tensor(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 5:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-way
        return original(*args, **kwargs)

    monkeypatch.setattr(merge_module, "_merge_tensor", failing_merge_tensor)
    with pytest.raises(KeyboardInterrupt):
        merge_checkpoints(tiny_backbone_dirs[:2], [0.5, 0.5], tmp_path / "soup")
    assert len(calls) == 5
    assert not (tmp_path / "soup").exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind


def test_unrelated_members_warn(tmp_path, tiny_tokenizer, tiny_backbone_dirs, caplog):
    unrelated = save_checkpoint(build_tiny_llama(seed=7), tiny_tokenizer, tmp_path / "unrelated")
    with caplog.at_level(logging.WARNING, logger="bonesoup.merge"):
        merge_checkpoints([tiny_backbone_dirs[0], unrelated], [0.5, 0.5], tmp_path / "soup")
    assert any("nearly orthogonal" in r.message for r in caplog.records)


def test_fine_tunes_do_not_warn(tmp_path, tiny_base_dir, tiny_backbone_dirs, caplog):
    with caplog.at_level(logging.WARNING, logger="bonesoup.merge"):
        merge_checkpoints(tiny_backbone_dirs, [0.2, 0.3, 0.5], tmp_path / "a")
        merge_checkpoints(tiny_backbone_dirs, [0.2, 0.3, 0.5], tmp_path / "b", base=tiny_base_dir)
    assert [r.message for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_huge_delta_from_base_warns(
    tmp_path, tiny_tokenizer, tiny_base_dir, tiny_backbone_dirs, caplog
):
    far = save_checkpoint(
        perturb_model(build_tiny_llama(), seed=3, scale=1.0), tiny_tokenizer, tmp_path / "far"
    )
    with caplog.at_level(logging.WARNING, logger="bonesoup.merge"):
        merge_checkpoints(
            [tiny_backbone_dirs[0], far], [0.5, 0.5], tmp_path / "s", base=tiny_base_dir
        )
    messages = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1
    assert "far" in messages[0]


@pytest.mark.parametrize(
    ("text", "expected"), [("500MB", 500_000_000), ("2GiB", 2 * 1024**3), (100, 100)]
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


def test_bfloat16_members_accumulate_in_float32(tmp_path, tiny_tokenizer):
    models = [perturb_model(build_tiny_llama(), seed=s).to(torch.bfloat16) for s in range(3)]
    paths = [save_checkpoint(m, tiny_tokenizer, tmp_path / f"b{i}") for i, m in enumerate(models)]
    coefficients = [3.0, -2.0]
    output = merge_checkpoints(paths[:2], coefficients, tmp_path / "soup", base=paths[2])
    name = "model.layers.1.self_attn.o_proj.weight"
    with safe_open(output / "model.safetensors", "pt") as handle:
        merged = handle.get_tensor(name)
    members = [dict(m.named_parameters())[name].detach().float() for m in models]
    expected = members[2] + 3.0 * (members[0] - members[2]) - 2.0 * (members[1] - members[2])
    assert merged.dtype == torch.bfloat16
    torch.testing.assert_close(merged, expected.to(torch.bfloat16), atol=0, rtol=0)
