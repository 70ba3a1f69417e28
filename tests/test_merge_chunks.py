"""Chunked merge and streamed writes: tensors split across many chunks give the same bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import build_tiny_llama, perturb_model, save_checkpoint
from safetensors.torch import load_file

import bonesoup.merge as merge_module
from bonesoup.merge import SafetensorsStreamWriter, TensorInfo, merge_checkpoints

# Not a divisor of any tiny-model tensor size, so most tensors end with a short chunk.
SMALL_CHUNK = 300


def merged_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def assert_identical(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert tensor.dtype == second[name].dtype, name
        torch.testing.assert_close(tensor, second[name], atol=0, rtol=0, msg=name)


@pytest.fixture
def bfloat16_members(tmp_path, tiny_tokenizer) -> list[Path]:
    models = [perturb_model(build_tiny_llama(), seed=s).to(torch.bfloat16) for s in range(3)]
    return [save_checkpoint(m, tiny_tokenizer, tmp_path / f"b{i}") for i, m in enumerate(models)]


@pytest.mark.parametrize("with_base", [False, True])
def test_small_chunks_match_whole_tensors(
    tmp_path, monkeypatch, tiny_base_dir, tiny_backbone_dirs, with_base
):
    base = tiny_base_dir if with_base else None
    coefficients = [1.1, -0.3, 0.2] if with_base else [0.5, 0.7, -0.2]
    whole = merge_checkpoints(tiny_backbone_dirs, coefficients, tmp_path / "whole", base=base)
    largest = max(t.numel() for t in merged_tensors(whole).values())
    assert largest > 20 * SMALL_CHUNK  # the test needs tensors that span many chunks
    assert largest <= merge_module.MERGE_CHUNK_ENTRIES  # and a default run that uses one chunk

    monkeypatch.setattr(merge_module, "MERGE_CHUNK_ENTRIES", SMALL_CHUNK)
    chunked = merge_checkpoints(tiny_backbone_dirs, coefficients, tmp_path / "chunked", base=base)
    assert_identical(merged_tensors(whole), merged_tensors(chunked))


@pytest.mark.parametrize("dtype", [None, "float32", "float16"])
def test_small_chunks_bfloat16_members(tmp_path, monkeypatch, bfloat16_members, dtype):
    coefficients = [3.0, -2.0]
    members, base = bfloat16_members[:2], bfloat16_members[2]
    whole = merge_checkpoints(members, coefficients, tmp_path / "whole", base=base, dtype=dtype)
    monkeypatch.setattr(merge_module, "MERGE_CHUNK_ENTRIES", SMALL_CHUNK)
    chunked = merge_checkpoints(members, coefficients, tmp_path / "chunked", base=base, dtype=dtype)
    whole_tensors = merged_tensors(whole)
    assert_identical(whole_tensors, merged_tensors(chunked))

    name = "model.layers.1.mlp.down_proj.weight"
    theta = [load_file(p / "model.safetensors")[name].float() for p in bfloat16_members]
    expected = theta[2] + 3.0 * (theta[0] - theta[2]) - 2.0 * (theta[1] - theta[2])
    out_dtype = {None: torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[dtype]
    torch.testing.assert_close(whole_tensors[name], expected.to(out_dtype), atol=0, rtol=0)


def test_writer_chunks_round_trip(tmp_path):
    first = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    second = torch.tensor([1.5, -2.0], dtype=torch.bfloat16)
    entries = [("a", TensorInfo("F32", (3, 4))), ("b", TensorInfo("BF16", (2,)))]
    writer = SafetensorsStreamWriter(tmp_path / "x.safetensors", entries)
    writer.write("a", iter([first.reshape(-1)[:5], first.reshape(-1)[5:]]))
    writer.write("b", second)
    writer.close()
    loaded = load_file(tmp_path / "x.safetensors")
    torch.testing.assert_close(loaded["a"], first, atol=0, rtol=0)
    torch.testing.assert_close(loaded["b"], second, atol=0, rtol=0)


def test_writer_rejects_short_chunks(tmp_path):
    entries = [("a", TensorInfo("F32", (3, 4)))]
    writer = SafetensorsStreamWriter(tmp_path / "x.safetensors", entries)
    with pytest.raises(RuntimeError, match="got 20 of 48 bytes"):
        writer.write("a", iter([torch.zeros(5)]))
    writer.close()


def test_writer_rejects_extra_chunks(tmp_path):
    entries = [("a", TensorInfo("F32", (2,)))]
    writer = SafetensorsStreamWriter(tmp_path / "x.safetensors", entries)
    with pytest.raises(RuntimeError, match="more than 8 bytes"):
        writer.write("a", iter([torch.zeros(2), torch.zeros(1)]))
    writer.close()
