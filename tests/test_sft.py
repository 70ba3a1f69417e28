"""SFT before RL on a tiny random Llama with local hh-rlhf and summarize fixture files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_llama, build_tokenizer, save_checkpoint
from safetensors.torch import load_file

from bonesoup.cli import main
from bonesoup.config import config_from_dict, save_config
from bonesoup.errors import BonesoupError
from bonesoup.sft import run_sft, sft_examples

HH_ROWS = [
    {
        "chosen": "\n\nHuman: What is the capital of France?\n\nAssistant: Paris is the capital.",
        "rejected": "\n\nHuman: What is the capital of France?\n\nAssistant: No idea.",
    },
    {
        "chosen": "\n\nHuman: Tell me a joke.\n\nAssistant: A short answer is a better answer.",
        "rejected": "\n\nHuman: Tell me a joke.\n\nAssistant: No.",
    },
] * 4
SUMMARIZE_ROWS = [
    {
        "info": {
            "id": "a",
            "post": "The quick brown fox jumps over the lazy dog every day.",
            "title": "Fox",
            "subreddit": "animals",
        },
        "summaries": [{"text": "A fox naps."}, {"text": "A fox jumps over a dog."}],
        "choice": 1,
    },
]


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory) -> Path:
    """A tiny base model: its tokenizer has no chat template."""
    tokenizer = build_tokenizer()
    tokenizer.chat_template = None
    path = tmp_path_factory.mktemp("base-no-chat")
    return save_checkpoint(build_tiny_llama(seed=1), tokenizer, path)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def sft_config(model_dir: Path, data_path: Path, output: Path, data: str = "hh-rlhf"):
    return config_from_dict(
        {
            "run_dir": str(output.parent),
            "model": {"name_or_path": str(model_dir)},
            "sft": {
                "data": data,
                "path": str(data_path),
                "examples": 8,
                "steps": 2,
                "batch_size": 4,
                "learning_rate": 1e-2,
                "max_length": 64,
                "output": str(output),
                "lora": {"r": 4, "alpha": 8},
            },
        }
    )


def test_sft_examples_hh_rlhf(tmp_path):
    data = write_jsonl(tmp_path / "hh.jsonl", HH_ROWS)
    pairs = sft_examples(sft_config(tmp_path, data, tmp_path / "out"))
    assert len(pairs) == 8
    assert pairs[0]["prompt"].endswith("\n\nAssistant:")
    assert pairs[0]["completion"] == " Paris is the capital."


def test_sft_examples_summarize_uses_chosen_summary(tmp_path):
    data = write_jsonl(tmp_path / "tldr.jsonl", SUMMARIZE_ROWS)
    pairs = sft_examples(sft_config(tmp_path, data, tmp_path / "out", data="summarize"))
    assert pairs == [
        {
            "prompt": "SUBREDDIT: r/animals\nTITLE: Fox\nPOST: The quick brown fox jumps over the "
            "lazy dog every day.\nTL;DR:",
            "completion": " A fox jumps over a dog.",
        }
    ]


def test_sft_rejects_unknown_recipe(tmp_path):
    config = sft_config(tmp_path, tmp_path / "x.jsonl", tmp_path / "out", data="alpaca")
    with pytest.raises(BonesoupError, match="sft.data 'alpaca' is invalid"):
        sft_examples(config)


def test_sft_merges_and_saves_full_weights(base_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "hh.jsonl", HH_ROWS)
    output = tmp_path / "sft"
    result = run_sft(sft_config(base_model_dir, data, output))
    assert result == output
    assert (output / "model.safetensors").is_file()
    assert not (output / "adapter_config.json").exists()
    trained = load_file(output / "model.safetensors")
    base = load_file(base_model_dir / "model.safetensors")
    assert not any("lora" in key for key in trained)
    assert set(trained) == set(base)
    changed = [k for k in base if not torch.equal(base[k], trained[k])]
    assert changed, "merged LoRA left every weight unchanged"
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(output).config.num_hidden_layers == 2


def test_sft_skips_chat_model(tiny_base_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "hh.jsonl", HH_ROWS)
    config_path = tmp_path / "config.yaml"
    save_config(sft_config(tiny_base_dir, data, tmp_path / "sft"), config_path)
    assert main(["sft", str(config_path)]) == 0
    assert "sft skipped" in capsys.readouterr().out
    assert not (tmp_path / "sft").exists()
