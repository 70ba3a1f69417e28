"""Model loading: safetensors only, dtypes, and the embedded SmolLM2 cache."""

from __future__ import annotations

import pytest
import torch

from bonesoup.errors import BonesoupError
from bonesoup.models import (
    ensure_embedded_model,
    find_embedded_gguf,
    load_causal_lm,
    load_tokenizer,
    parse_dtype,
    resolve_model_path,
)


def test_parse_dtype_names():
    assert parse_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(BonesoupError, match="invalid dtype 'int4'"):
        parse_dtype("int4")


def test_pickle_only_folder_rejected(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(BonesoupError, match="no .safetensors weights; convert it"):
        load_causal_lm(str(tmp_path))


def test_tokenizer_pads_left(tiny_base_dir):
    tokenizer = load_tokenizer(str(tiny_base_dir))
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token is not None


def test_resolve_keeps_paths_and_ids(tiny_base_dir):
    assert resolve_model_path(str(tiny_base_dir)) == str(tiny_base_dir)
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"


def test_embedded_gguf_is_installed():
    assert find_embedded_gguf().stat().st_size > 50_000_000


@pytest.mark.slow
def test_embedded_model_cached_and_generates(tmp_path):
    """Dequantise the packaged GGUF once, reload the float32 copy and answer a question."""
    folder = ensure_embedded_model(tmp_path)
    assert (folder / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert ensure_embedded_model(tmp_path) == folder

    tokenizer = load_tokenizer(str(folder))
    model = load_causal_lm(str(folder))
    assert model.config.tie_word_embeddings
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in reply
