"""Exact soups of LoRA backbones trained from one base model.

LoRA backbone j changes the weight W (out, in) of each target module by

    delta_j = s_j B_j A_j,   B_j: (out, r_j), A_j: (r_j, in),
    s_j = alpha_j / r_j   (alpha_j / sqrt(r_j) with rsLoRA).

The soup with coefficients c (n,) is W + sum_j c_j delta_j. It is itself a LoRA product of rank
R = sum_j r_j, because sum_j c_j s_j B_j A_j = [c_1 s_1 B_1 | ... | c_n s_n B_n] @ [A_1; ...; A_n]:
stack the A blocks along the rank and scale the B blocks, with the new adapter's own scaling 1.
Averaging A and B separately is wrong (it creates cross terms B_i A_j and loses the sign of
negative coefficients), so nothing here does that.

Modules that only some adapters target get zero blocks from the others. Only plain LoRA on linear
layers with bias="none" is supported; DoRA, modules_to_save, bias training, embedding LoRA and
other variants are rejected because their soup is not a sum of B A products.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from bonesoup.errors import BonesoupError
from bonesoup.merge import (
    OUTPUT_DTYPES,
    TORCH_DTYPES,
    Checkpoint,
    CheckpointReader,
    check_output,
    output_tensor_infos,
    parse_size,
    plan_shards,
    read_checkpoint,
    tied_names_to_skip,
    write_checkpoint,
)

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."
KEY_PATTERN = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")
# adapter_config.json settings whose effect is not a sum of B @ A products.
UNSUPPORTED_SETTINGS = (
    "use_dora",
    "modules_to_save",
    "lora_bias",
    "trainable_token_indices",
    "layer_replication",
    "target_parameters",
    "alora_invocation_tokens",
    "use_qalora",
    "arrow_config",
    "use_bdlora",
    "kasa_config",
    "monteclora_config",
    "velora_config",
)


@dataclass
class LoraFactors:
    """One module's factors: A (r, in), B (out, r), and the adapter scaling s."""

    a: torch.Tensor
    b: torch.Tensor
    scale: float

    @property
    def rank(self) -> int:
        return self.a.shape[0]


@dataclass
class LoraAdapter:
    """A PEFT LoRA adapter read from disk: its config and float32 factors per module."""

    path: Path
    config: dict
    modules: dict[str, LoraFactors]  # module name in the base model -> factors

    @property
    def rank(self) -> int:
        return max(f.rank for f in self.modules.values())

    @property
    def base_model_name_or_path(self) -> str | None:
        return self.config.get("base_model_name_or_path")


def is_lora_adapter(path: Path) -> bool:
    """Return whether `path` is a PEFT adapter folder (it has adapter_config.json)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def _check_config(path: Path, config: dict) -> None:
    if config.get("peft_type") != "LORA":
        raise BonesoupError(
            f"{path} is a {config.get('peft_type')} adapter; only LoRA adapters can be merged"
        )
    if config.get("bias", "none") != "none":
        raise BonesoupError(
            f"{path} trains biases (bias={config['bias']!r}); only bias='none' adapters merge "
            "exactly, retrain with bias='none'"
        )
    for key in UNSUPPORTED_SETTINGS:
        if config.get(key):
            raise BonesoupError(
                f"{path} sets {key}={config[key]!r}, which a LoRA soup cannot combine exactly; "
                f"only plain LoRA is supported, retrain without {key}"
            )


def _module_scale(config: dict, module: str, rank: int) -> float:
    """Return the PEFT scaling alpha / r (alpha / sqrt(r) with rsLoRA) for one module.

    alpha_pattern keys match a module when the module name ends with the key (a regex) after a
    dot, the rule PEFT applies.
    """
    alpha = config.get("lora_alpha", 8)
    for key, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            alpha = value
            break
    if config.get("use_rslora"):
        return alpha / math.sqrt(rank)
    return alpha / rank


def _read_factors(path: Path, weights: Path, config: dict) -> dict[str, LoraFactors]:
    parts: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(weights, framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 (safe_open handles are not iterable)
            match = KEY_PATTERN.match(key)
            if match is None:
                raise BonesoupError(
                    f"{path} stores {key}, which is not a LoRA A or B matrix of a linear layer; "
                    "embedding LoRA and extra trained tensors are not supported"
                )
            parts.setdefault(match["module"], {})[match["part"]] = handle.get_tensor(key).float()

    modules = {}
    for module, pair in parts.items():
        if set(pair) != {"A", "B"} or pair["A"].shape[0] != pair["B"].shape[1]:
            raise BonesoupError(
                f"{path}: module {module} is missing lora_A or lora_B, or their ranks differ; "
                "the adapter file is incomplete, save it again with PEFT"
            )
        scale = _module_scale(config, module, pair["A"].shape[0])
        modules[module] = LoraFactors(pair["A"], pair["B"], scale)
    return modules


def load_lora_adapter(path: Path) -> LoraAdapter:
    """Read a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors)."""
    path = Path(path)
    if not is_lora_adapter(path):
        raise BonesoupError(
            f"{path} has no {ADAPTER_CONFIG}; pass a folder written by PEFT save_pretrained"
        )
    config = json.loads((path / ADAPTER_CONFIG).read_text())
    _check_config(path, config)

    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise BonesoupError(
            f"{path} has no {ADAPTER_WEIGHTS}; only safetensors adapters are read. Convert it with "
            "PeftModel.from_pretrained(...).save_pretrained(new_path, safe_serialization=True)"
        )
    modules = _read_factors(path, weights, config)
    if not modules:
        raise BonesoupError(f"{path} contains no LoRA weights")
    return LoraAdapter(path, config, modules)


def _check_compatible(adapters: Sequence[LoraAdapter]) -> None:
    first = adapters[0]
    for other in adapters[1:]:
        if bool(other.config.get("fan_in_fan_out")) != bool(first.config.get("fan_in_fan_out")):
            raise BonesoupError(
                f"{first.path} and {other.path} differ in fan_in_fan_out, so they were not "
                "trained on one base model; merge adapters of one base only"
            )
        if other.base_model_name_or_path != first.base_model_name_or_path:
            logger.warning(
                "adapters name different base models (%s: %s, %s: %s); merging assumes one base",
                first.path, first.base_model_name_or_path,
                other.path, other.base_model_name_or_path,
            )  # fmt: skip
    shapes: dict[str, tuple[int, int]] = {}
    for adapter in adapters:
        for module, factors in adapter.modules.items():
            shape = (factors.b.shape[0], factors.a.shape[1])
            if shapes.setdefault(module, shape) != shape:
                raise BonesoupError(
                    f"module {module} is {list(shapes[module])} in one adapter but {list(shape)} "
                    f"in {adapter.path}; the adapters were trained on different base models"
                )


@dataclass
class StackedLora:
    """Per-module stacked factors of n adapters, with unit coefficients.

    `modules` maps a module name to (A_stack, B_unit), both float32:
    A_stack (R, in) = [A_1; ...; A_n] and B_unit (out, R) = [s_1 B_1 | ... | s_n B_n].
    Block j spans columns offsets[j]:offsets[j+1] of B_unit (width = max rank of adapter j), and
    is zero where adapter j does not target the module or has a smaller rank there.

    NOTE: every module gets the full rank R, so a module that only some adapters target carries
    zero blocks and costs rank R at inference.
    """

    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]
    offsets: list[int]

    @property
    def rank(self) -> int:
        return self.offsets[-1]

    def column_weights(self, coefficients: Sequence[float]) -> torch.Tensor:
        """Return the (R,) vector repeating c_j over block j's columns."""
        widths = [self.offsets[j + 1] - self.offsets[j] for j in range(len(self.offsets) - 1)]
        values = torch.tensor([float(c) for c in coefficients], dtype=torch.float32)
        return torch.repeat_interleave(values, torch.tensor(widths))

    def scaled_b(self, module: str, coefficients: Sequence[float]) -> torch.Tensor:
        """Return [c_1 s_1 B_1 | ... | c_n s_n B_n] for `module`, shape (out, R)."""
        return self.modules[module][1] * self.column_weights(coefficients)

    def delta(self, module: str, coefficients: Sequence[float]) -> torch.Tensor:
        """Return sum_j c_j s_j B_j A_j for `module`, shape (out, in)."""
        return self.scaled_b(module, coefficients) @ self.modules[module][0]


def stack_adapters(adapters: Sequence[LoraAdapter]) -> StackedLora:
    """Stack the factors of `adapters` along the rank (see StackedLora)."""
    _check_compatible(adapters)
    offsets = [0]
    for adapter in adapters:
        offsets.append(offsets[-1] + adapter.rank)
    names = sorted({module for adapter in adapters for module in adapter.modules})
    modules = {}
    for name in names:
        out_features, in_features = next(
            (a.modules[name].b.shape[0], a.modules[name].a.shape[1])
            for a in adapters
            if name in a.modules
        )
        a_stack = torch.zeros(offsets[-1], in_features)
        b_stack = torch.zeros(out_features, offsets[-1])
        for j, adapter in enumerate(adapters):
            factors = adapter.modules.get(name)
            if factors is None:
                continue
            start = offsets[j]
            a_stack[start : start + factors.rank] = factors.a
            b_stack[:, start : start + factors.rank] = factors.b * factors.scale
        modules[name] = (a_stack, b_stack)
    return StackedLora(modules, offsets)


def load_stacked_adapters(adapter_dirs: Sequence[Path]) -> tuple[list[LoraAdapter], StackedLora]:
    """Read adapters from disk and stack them."""
    if not adapter_dirs:
        raise BonesoupError("no adapters given; pass at least one LoRA adapter folder")
    adapters = [load_lora_adapter(Path(p)) for p in adapter_dirs]
    return adapters, stack_adapters(adapters)


def _check_count(coefficients: Sequence[float], count: int) -> list[float]:
    values = [float(c) for c in coefficients]
    if len(values) != count:
        raise BonesoupError(f"got {len(values)} coefficients for {count} adapters; give one each")
    if not all(math.isfinite(c) for c in values):
        raise BonesoupError(f"coefficients {values} must be finite numbers")
    return values


def stacked_lora_config(template: dict, stacked: StackedLora) -> dict:
    """Return an adapter config for the stacked adapter: rank R, scaling 1, explicit modules."""
    config = dict(template)
    config.update(
        r=stacked.rank,
        lora_alpha=stacked.rank,  # scaling alpha / r = 1: the B blocks carry c_j s_j
        use_rslora=False,
        rank_pattern={},
        alpha_pattern={},
        target_modules=sorted(stacked.modules),
        layers_to_transform=None,
        layers_pattern=None,
        exclude_modules=None,
        lora_dropout=0.0,
        inference_mode=True,
    )
    return config


def stack_lora_adapters(
    adapter_dirs: Sequence[Path], coefficients: Sequence[float], output: Path
) -> Path:
    """Write one PEFT adapter of rank sum_j r_j whose delta is sum_j c_j s_j B_j A_j exactly.

    Args:
        adapter_dirs: n LoRA adapter folders trained from one base model.
        coefficients: c, shape (n,), any sign; the base keeps weight 1 (theta_0 + sum c_j delta_j).
        output: new folder; loads with PeftModel.from_pretrained(base_model, output).
    """
    adapters, stacked = load_stacked_adapters(adapter_dirs)
    values = _check_count(coefficients, len(adapters))
    output = Path(output)
    check_output(output, adapter_dirs)
    tensors = {}
    for module, (a_stack, _) in stacked.modules.items():
        tensors[f"{KEY_PREFIX}{module}.lora_A.weight"] = a_stack.contiguous()
        tensors[f"{KEY_PREFIX}{module}.lora_B.weight"] = stacked.scaled_b(module, values)
    config = stacked_lora_config(adapters[0].config, stacked)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        save_file(tensors, staging / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        (staging / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        staging.chmod(0o755)  # mkdtemp creates the folder readable by its owner only
        if output.exists():
            output.rmdir()  # check_output allowed only an empty folder
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info(
        "wrote a rank-%d LoRA soup of %d adapters to %s", stacked.rank, len(adapters), output
    )
    return output


def _check_targets(
    base: Checkpoint, stacked: StackedLora, skip: set[str], transpose: bool
) -> dict[str, str]:
    """Check that every adapted module has a weight of the right shape in the base checkpoint.

    Returns weight tensor name -> module name.
    """
    targets = {f"{module}.weight": module for module in stacked.modules}
    for weight, module in targets.items():
        if weight in skip:
            raise BonesoupError(
                f"an adapter targets {module}, which is tied to the input embedding in "
                f"{base.path}; a soup cannot change one without the other, so retrain without it"
            )
        info = base.tensors.get(weight)
        a_stack, b_stack = stacked.modules[module]
        expected = (b_stack.shape[0], a_stack.shape[1])
        expected = expected[::-1] if transpose else expected
        if info is None or info.shape != expected:
            found = "missing" if info is None else f"shape {list(info.shape)}"
            raise BonesoupError(
                f"adapter module {module} expects {weight} of shape {list(expected)} in "
                f"{base.path}, found {found}; pass the base model the adapters were trained on"
            )
    return targets


def merge_lora_into_base(
    base_dir: Path,
    adapter_dirs: Sequence[Path],
    coefficients: Sequence[float],
    output: Path,
    dtype: str | None = None,
    max_shard_size: int | str | None = None,
) -> Path:
    """Write base + sum_j c_j s_j B_j A_j as a full checkpoint, streamed tensor by tensor.

    Args:
        base_dir: theta_0, a safetensors checkpoint folder.
        adapter_dirs: n LoRA adapters trained on theta_0.
        coefficients: c, shape (n,), any sign.
        output: new folder, loadable with AutoModelForCausalLM.from_pretrained.
        dtype: "float32", "bfloat16" or "float16"; default: the base's dtype per tensor.
        max_shard_size: bytes (or "2GB") per output shard; default: the base's sharding.
    """
    if dtype is not None and dtype not in OUTPUT_DTYPES:
        raise BonesoupError(f"invalid dtype {dtype!r}: expected one of {', '.join(OUTPUT_DTYPES)}")
    adapters, stacked = load_stacked_adapters(adapter_dirs)
    values = _check_count(coefficients, len(adapters))
    base = read_checkpoint(Path(base_dir))
    check_output(Path(output), [base_dir, *adapter_dirs])
    skip = tied_names_to_skip([base])
    transpose = bool(adapters[0].config.get("fan_in_fan_out"))
    targets = _check_targets(base, stacked, skip, transpose)

    layout = {f: [n for n in names if n not in skip] for f, names in base.shards.items()}
    infos = output_tensor_infos(base, skip, dtype)
    shard_bytes = parse_size(max_shard_size) if max_shard_size is not None else None
    groups = plan_shards(layout, infos, shard_bytes)
    with contextlib.ExitStack() as stack:
        reader = CheckpointReader(base, stack)

        def produce(name: str) -> torch.Tensor:
            tensor = reader.get(name)
            target = TORCH_DTYPES[infos[name].dtype]
            if name not in targets:
                return tensor.to(target)
            delta = stacked.delta(targets[name], values)
            merged = tensor.to(torch.float32) + (delta.T if transpose else delta)
            return merged.to(target)

        write_checkpoint(Path(output), groups, infos, produce, base.path, dtype)
    logger.info(
        "merged %d LoRA adapters into %s with coefficients %s", len(adapters), output, values
    )
    return Path(output)
