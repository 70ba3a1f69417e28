"""Shared fixtures: tiny random Llama models and a small BPE tokenizer, saved as on the hub.

Everything here is built locally (no downloads) and written with `save_pretrained` in safetensors,
so tests exercise the same loading code as real checkpoints. Session fixtures are read-only: a test
that changes a model copies it first (see `copy_checkpoint`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

TINY_VOCAB_SIZE = 256
TINY_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Merging models by weight interpolation serves many preferences from a few backbones.",
    "Helpful, harmless and humorous replies trade off against each other.",
    "A short answer is often a better answer, but not always.",
    "User: what is the capital of France? Assistant: Paris is the capital of France.",
] * 20


def build_tokenizer(vocab_size: int = TINY_VOCAB_SIZE):
    """Train a byte-level BPE tokenizer on a few sentences and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TINY_TEXT, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    wrapped.chat_template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{{ message['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return wrapped


def build_tiny_llama(seed: int = 0, tie_word_embeddings: bool = True, vocab_size: int = 0):
    """Return a randomly initialised 2-layer Llama (hidden 32) in float32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size or TINY_VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def perturb_model(model: torch.nn.Module, seed: int, scale: float = 0.002) -> torch.nn.Module:
    """Add seeded Gaussian noise of standard deviation `scale` to every parameter in place."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
            parameter.add_(scale * noise.to(parameter.dtype))
    return model


def save_checkpoint(model, tokenizer, path: Path, **save_kwargs) -> Path:
    """Save `model` and `tokenizer` to `path` in safetensors and return the path."""
    model.save_pretrained(path, **save_kwargs)
    tokenizer.save_pretrained(path)
    return path


def copy_checkpoint(source: Path, target: Path) -> Path:
    """Copy a saved checkpoint folder so a test may change it."""
    shutil.copytree(source, target)
    return target


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    path = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """theta_0: a tiny Llama with tied embeddings, saved with its tokenizer."""
    path = tmp_path_factory.mktemp("base")
    return save_checkpoint(build_tiny_llama(seed=0), tiny_tokenizer, path)


@pytest.fixture(scope="session")
def tiny_backbone_dirs(tmp_path_factory, tiny_tokenizer) -> list[Path]:
    """Three backbones: theta_0 of `tiny_base_dir` plus seeded noise (stand-ins for fine-tunes)."""
    paths = []
    for index in range(3):
        model = perturb_model(build_tiny_llama(seed=0), seed=100 + index)
        path = tmp_path_factory.mktemp(f"backbone{index}")
        paths.append(save_checkpoint(model, tiny_tokenizer, path))
    return paths


@pytest.fixture(scope="session")
def tiny_input_ids(tiny_tokenizer) -> torch.Tensor:
    """A batch of two token-id rows (no padding) for comparing logits."""
    texts = ["The quick brown fox jumps.", "Paris is the capital of France"]
    rows = [tiny_tokenizer(text)["input_ids"][:6] for text in texts]
    return torch.tensor(rows)


def make_lora_adapter(
    base_dir: Path,
    path: Path,
    seed: int,
    rank: int = 4,
    alpha: float = 8.0,
    target_modules: tuple[str, ...] = ("q_proj", "v_proj"),
    **config_kwargs,
) -> Path:
    """Save a PEFT LoRA adapter for the model in `base_dir` with seeded random, nonzero A and B."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(target_modules),
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
        **config_kwargs,
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name:
                noise = torch.randn(parameter.shape, generator=generator)
                parameter.copy_(0.1 * noise)
    peft_model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_lora_dirs(tmp_path_factory, tiny_base_dir) -> list[Path]:
    """Three adapters on `tiny_base_dir`: differing ranks, module sets, and one rsLoRA."""
    root = tmp_path_factory.mktemp("lora")
    return [
        make_lora_adapter(tiny_base_dir, root / "a0", seed=1, rank=4, alpha=8),
        make_lora_adapter(
            tiny_base_dir,
            root / "a1",
            seed=2,
            rank=8,
            alpha=4,
            target_modules=("q_proj", "k_proj", "o_proj", "gate_proj", "down_proj"),
            use_rslora=True,
        ),
        make_lora_adapter(
            tiny_base_dir,
            root / "a2",
            seed=3,
            rank=2,
            alpha=16,
            target_modules=("v_proj", "up_proj"),
        ),
    ]
