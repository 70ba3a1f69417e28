"""Streaming weight-space merge of full checkpoints: the soup step for full fine-tuned backbones.

For backbones theta_1..theta_n fine-tuned from one start theta_0 and coefficients c (n,), the
soup is

    theta = sum_j c_j theta_j + b theta_0,   with sum_j c_j + b = 1,

computed per tensor in float32 as theta_0 + sum_j c_j (theta_j - theta_0) when theta_0 is given
(b = 0 unless extrapolating), else as sum_j c_j theta_j. Coefficients may be negative.

Inputs are safetensors checkpoints (one `model.safetensors`, or shards listed in
`model.safetensors.index.json`). Float tensors are merged in chunks of MERGE_CHUNK_ENTRIES
entries: each chunk is read from every member with positioned reads, summed in float32 and
written at its offset in the output, so peak memory is a few chunks whatever the model size. The
output is built in a hidden folder next to the target and renamed at the end: an interrupted
merge leaves no output folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch

from bonesoup.errors import BonesoupError

# Re-exported: lora, switching and tests import these names from bonesoup.merge.
from bonesoup.safetensors_io import (  # noqa: F401
    DTYPE_BYTES,
    INDEX_FILE,
    PICKLE_SUFFIXES,
    SINGLE_FILE,
    TORCH_DTYPES,
    Checkpoint,
    CheckpointReader,
    SafetensorsStreamWriter,
    TensorInfo,
    read_checkpoint,
    read_safetensors_header,
)

logger = logging.getLogger(__name__)

# Files copied from the first member so that the output loads with from_pretrained.
SIDE_FILE_PATTERNS = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "*.tiktoken",
)
TIED_OUTPUT_NAME = "lm_head.weight"
# Fine-tuning moves weights little next to their norm, so members fine-tuned from one theta_0
# have a weight cosine close to 1, while independently initialised matrices have one near 0.
# NOTE: both thresholds are judgement calls checked on noise-perturbed and random tiny models,
# not calibrated on real fine-tunes.
WEIGHT_COSINE_THRESHOLD = 0.9
# A task vector this long relative to theta_0 (both over matrices only) is not a fine-tune.
RELATIVE_DELTA_THRESHOLD = 0.5
ORIGIN_CHECK_SAMPLE = 1 << 16  # entries per matrix used by the two checks above
# Entries merged per step (1 MiB of float32 per scratch buffer). Reusing buffers this small
# avoids page faults on tensor-sized buffers and keeps them in the CPU cache. Sizes from 2^16 to
# 2^22 timed alike on a 2-CPU AMD EPYC. The origin check samples only the first chunk of each
# matrix, so a value below ORIGIN_CHECK_SAMPLE shrinks that sample.
MERGE_CHUNK_ENTRIES = 1 << 18
AFFINE_TOLERANCE = 1e-6

FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
OUTPUT_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def parse_size(size: int | str) -> int:
    """Parse a byte count: an int or a string such as "500MB", "2GB" or "1.5GiB"."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?i?B?)\s*", size, flags=re.IGNORECASE)
    if not match:
        raise BonesoupError(f"invalid size {size!r}: expected bytes or a number with KB/MB/GB")
    unit = match.group(2).upper().rstrip("B")
    base = 1024 if unit.endswith("I") else 1000
    power = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit.rstrip("I")]
    return int(float(match.group(1)) * base**power)


def plan_shards(
    layout: dict[str, list[str]], tensors: dict[str, TensorInfo], max_shard_size: int | None
) -> list[list[str]]:
    """Group tensor names into output shards: the input grouping, or greedy by size."""
    if max_shard_size is None:
        return [names for names in layout.values() if names]
    groups: list[list[str]] = [[]]
    size = 0
    for name in (n for names in layout.values() for n in names):
        if groups[-1] and size + tensors[name].nbytes > max_shard_size:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += tensors[name].nbytes
    return groups


def _copy_side_files(source: Path, target: Path, output_dtype: str | None) -> None:
    for pattern in SIDE_FILE_PATTERNS:
        for path in source.glob(pattern):
            shutil.copy2(path, target / path.name)
    config_path = target / "config.json"
    if output_dtype and config_path.is_file():
        config = json.loads(config_path.read_text())
        key = "torch_dtype" if "torch_dtype" in config and "dtype" not in config else "dtype"
        config[key] = output_dtype
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def check_output(output: Path, inputs: Sequence[Path]) -> None:
    """Raise unless `output` is a new (or empty) folder distinct from every input."""
    resolved = output.resolve()
    if any(resolved == Path(p).resolve() for p in inputs):
        raise BonesoupError(f"output {output} is one of the inputs; choose a new folder")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise BonesoupError(f"output {output} already exists and is not empty; choose a new folder")


def write_checkpoint(
    output: Path,
    groups: list[list[str]],
    infos: dict[str, TensorInfo],
    produce: Callable[[str], torch.Tensor | Iterable[torch.Tensor]],
    side_files_from: Path,
    output_dtype: str | None,
) -> Path:
    """Write tensors `produce(name)` in shard `groups` to a staging folder, then rename to `output`.

    `infos` gives each output tensor's dtype and shape. `produce` returns the tensor, or an
    iterable of flat chunks whose bytes concatenate to it. Each tensor or chunk is written before
    the next one is requested, so `produce` may reuse its output memory. Nothing exists at `output`
    unless every shard, the index and the side files (config, tokenizer) were written.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        names = [SINGLE_FILE] if len(groups) == 1 else [
            f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))
        ]  # fmt: skip
        for file_name, group in zip(names, groups, strict=True):
            writer = SafetensorsStreamWriter(staging / file_name, [(n, infos[n]) for n in group])
            try:
                for name in group:
                    writer.write(name, produce(name))
            finally:
                writer.close()
        if len(groups) > 1:
            weight_map = {n: f for f, group in zip(names, groups, strict=True) for n in group}
            total = sum(infos[n].nbytes for n in weight_map)
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (staging / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        _copy_side_files(side_files_from, staging, output_dtype)
        staging.chmod(0o755)  # mkdtemp creates the folder readable by its owner only
        # NOTE: nothing is fsynced before the rename, so after a power loss (not a killed
        # process) the output folder may exist with shards whose data never reached the disk.
        if output.exists():
            output.rmdir()  # check_output allowed only an empty folder
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def check_same_tensors(reference: Checkpoint, other: Checkpoint, skip: set[str]) -> None:
    """Raise unless `other` stores the same tensor names, shapes and dtypes as `reference`."""
    names, other_names = set(reference.tensors) - skip, set(other.tensors) - skip
    if names != other_names:
        missing = sorted(names - other_names)[:3]
        extra = sorted(other_names - names)[:3]
        raise BonesoupError(
            f"{other.path} does not store the same tensors as {reference.path}: missing {missing}, "
            f"extra {extra}; merge only checkpoints of one architecture fine-tuned from one base"
        )
    for name in sorted(names):
        first, second = reference.tensors[name], other.tensors[name]
        if first.shape != second.shape:
            raise BonesoupError(
                f"tensor {name} has shape {list(first.shape)} in {reference.path} but "
                f"{list(second.shape)} in {other.path}; a vocabulary or architecture mismatch "
                "(for example an added pad token) cannot be merged, resize the members to one shape"
            )
        if first.dtype != second.dtype:
            raise BonesoupError(
                f"tensor {name} is {first.dtype} in {reference.path} but {second.dtype} in "
                f"{other.path}; save every member in one dtype before merging"
            )


def tied_names_to_skip(checkpoints: Sequence[Checkpoint]) -> set[str]:
    """Return {"lm_head.weight"} when embeddings are tied: loading re-ties it to the embedding."""
    if checkpoints[0].tied_embeddings:
        return {TIED_OUTPUT_NAME}
    return set()


def output_tensor_infos(
    checkpoint: Checkpoint, skip: set[str], dtype: str | None
) -> dict[str, TensorInfo]:
    """Return dtype and shape per output tensor: float tensors take `dtype` when it is given."""
    code = OUTPUT_DTYPES[dtype] if dtype else None
    infos = {}
    for name, info in checkpoint.tensors.items():
        if name in skip:
            continue
        float_code = code if code and info.dtype in FLOAT_DTYPES else info.dtype
        infos[name] = TensorInfo(float_code, info.shape)
    return infos


def check_coefficients(
    coefficients: Sequence[float], count: int, has_base: bool, base_coefficient: float
) -> list[float]:
    """Validate coefficients for `count` members; return them as floats."""
    values = [float(c) for c in coefficients]
    if len(values) != count:
        raise BonesoupError(f"got {len(values)} coefficients for {count} backbones; give one each")
    if not all(math.isfinite(c) for c in values + [base_coefficient]):
        raise BonesoupError(f"coefficients {values} must be finite numbers")
    if base_coefficient != 0 and not has_base:
        raise BonesoupError(
            f"base coefficient {base_coefficient} needs the base checkpoint theta_0; pass base"
        )
    total = sum(values) + base_coefficient
    if abs(total - 1.0) > AFFINE_TOLERANCE:
        raise BonesoupError(
            f"coefficients {values} plus base coefficient {base_coefficient} sum to {total:.6g}, "
            "not 1; the soup is an affine combination, so rescale them or give the remainder "
            "to the base"
        )
    return values


class _SharedOriginCheck:
    """Streaming statistics that flag members not fine-tuned from the same theta_0.

    With theta_0: ||theta_j - theta_0|| / ||theta_0|| per member. Without it: the cosine between
    the flattened weights of member 1 and each other member. Only matrices count: norm weights
    and biases start from the same constants in every model, so they would hide unrelated members.
    Each matrix contributes its first ORIGIN_CHECK_SAMPLE entries, which keeps the check cheap.
    """

    def __init__(self, count: int, has_base: bool) -> None:
        self.has_base = has_base
        self.reference_norm = 0.0  # ||theta_0||^2 with a base, else ||theta_1||^2
        self.norms = [0.0] * count  # ||tau_j||^2 with a base, else ||theta_j||^2
        self.dots = [0.0] * count  # <theta_1, theta_j> without a base

    def add(self, j: int, sample: torch.Tensor, reference_sample: torch.Tensor) -> None:
        """Add the first entries of one matrix of member j, flat, at most ORIGIN_CHECK_SAMPLE.

        `sample` is a task vector's entries with a base, else the member's weights.
        `reference_sample` contains the same entries of theta_0 with a base, else of member 1.
        """
        if j == 0:
            self.reference_norm += float(torch.dot(reference_sample, reference_sample))
        self.norms[j] += float(torch.dot(sample, sample))
        if not self.has_base:
            self.dots[j] += float(torch.dot(reference_sample, sample))

    def warn(self, paths: Sequence[Path]) -> None:
        if self.has_base:
            for j, path in enumerate(paths):
                ratio = math.sqrt(self.norms[j] / max(self.reference_norm, 1e-30))
                if ratio > RELATIVE_DELTA_THRESHOLD:
                    logger.warning(
                        "%s differs from the base by %.2f of the base norm (threshold %.2f): it "
                        "is probably not fine-tuned from this base, and the soup may be garbage",
                        path, ratio, RELATIVE_DELTA_THRESHOLD,
                    )  # fmt: skip
            return
        for j in range(1, len(paths)):
            cosine = self.dots[j] / max(math.sqrt(self.reference_norm * self.norms[j]), 1e-30)
            if cosine < WEIGHT_COSINE_THRESHOLD:
                logger.warning(
                    "weights of %s and %s are nearly orthogonal (cosine %.3f < %.2f): they "
                    "probably do not share theta_0, and their soup may be garbage",
                    paths[0], paths[j], cosine, WEIGHT_COSINE_THRESHOLD,
                )  # fmt: skip


class _BufferPool:
    """Reusable scratch tensors, so that each chunk of a merge does not fault in fresh pages.

    A tensor taken from the pool is valid until the same key is taken again.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def take(self, key: str, nbytes: int) -> torch.Tensor:
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < nbytes:
            buffer = self._buffers[key] = torch.empty(nbytes, dtype=torch.uint8)
        return buffer[:nbytes]

    def like(self, key: str, count: int, dtype: torch.dtype) -> torch.Tensor:
        """Return a flat tensor of `count` entries of `dtype`."""
        return self.take(key, count * dtype.itemsize).view(dtype)


def _read_float32(
    reader: CheckpointReader, name: str, span: slice, pool: _BufferPool, out: torch.Tensor
) -> torch.Tensor:
    """Read entries `span` of tensor `name`, flat, as float32 into `out` (flat float32).

    float32 data is read straight into `out`. Other float dtypes go through a raw pool buffer
    and are converted with one copy.
    """
    dtype = TORCH_DTYPES[reader.checkpoint.tensors[name].dtype]
    count = span.stop - span.start
    if dtype == torch.float32:
        reader.read_into(name, out.view(torch.uint8), span.start * 4)
        return out
    raw = pool.take("raw", count * dtype.itemsize)
    reader.read_into(name, raw, span.start * dtype.itemsize)
    out.copy_(raw.view(dtype))
    return out


def _copy_integer_tensor(name: str, readers: list[CheckpointReader]) -> torch.Tensor:
    first = readers[0].get(name)
    for reader in readers[1:]:
        if not torch.equal(first, reader.get(name)):
            raise BonesoupError(
                f"integer tensor {name} differs between members; it cannot be merged"
            )
    return first


def _chunk_spans(count: int) -> Iterator[slice]:
    """Split entries 0..count into spans of MERGE_CHUNK_ENTRIES (the last one shorter)."""
    for start in range(0, count, MERGE_CHUNK_ENTRIES):
        yield slice(start, min(start + MERGE_CHUNK_ENTRIES, count))


def _merge_tensor(
    name: str,
    readers: list[CheckpointReader],
    coefficients: list[float],
    base: CheckpointReader | None,
    out_dtype: torch.dtype | None,
    origin: _SharedOriginCheck,
    pool: _BufferPool,
) -> torch.Tensor | Iterator[torch.Tensor]:
    """Return one merged tensor as flat chunks in pool buffers, each valid until the next one.

    Integer tensors, which must be equal in every member, come back whole. Float tensors are
    merged MERGE_CHUNK_ENTRIES entries at a time, so scratch memory is a few chunks whatever
    the tensor size, and each chunk stays in the CPU cache between its reads and its sums.
    """
    info = readers[0].checkpoint.tensors[name]
    if info.dtype not in FLOAT_DTYPES:
        return _copy_integer_tensor(name, readers)
    target_dtype = out_dtype or TORCH_DTYPES[info.dtype]
    merge_span = _merge_span_with_base if base is not None else _merge_span
    return (
        _cast_chunk(
            merge_span(name, span, readers, coefficients, base, origin, pool, len(info.shape)),
            target_dtype,
            pool,
        )
        for span in _chunk_spans(math.prod(info.shape))
    )


def _merge_span(
    name: str,
    span: slice,
    readers: list[CheckpointReader],
    coefficients: list[float],
    base: CheckpointReader | None,
    origin: _SharedOriginCheck,
    pool: _BufferPool,
    rank: int,
) -> torch.Tensor:
    """Return sum_j c_j theta_j over entries `span` of tensor `name`, flat float32."""
    count = span.stop - span.start
    checked = rank >= 2 and span.start == 0  # the origin check samples a matrix's first entries
    merged = _read_float32(readers[0], name, span, pool, pool.like("merged", count, torch.float32))
    if checked:
        first = pool.like("first", min(count, ORIGIN_CHECK_SAMPLE), torch.float32)
        first.copy_(merged[:ORIGIN_CHECK_SAMPLE])
        origin.add(0, first, first)
    merged.mul_(coefficients[0])
    for j in range(1, len(readers)):
        member = pool.like("member", count, torch.float32)
        tensor = _read_float32(readers[j], name, span, pool, member)
        if checked:
            origin.add(j, tensor[:ORIGIN_CHECK_SAMPLE], first)
        merged.add_(tensor, alpha=coefficients[j])
    return merged


def _merge_span_with_base(
    name: str,
    span: slice,
    readers: list[CheckpointReader],
    coefficients: list[float],
    base: CheckpointReader | None,
    origin: _SharedOriginCheck,
    pool: _BufferPool,
    rank: int,
) -> torch.Tensor:
    """Return theta_0 + sum_j c_j (theta_j - theta_0) over entries `span`, flat float32."""
    assert base is not None
    count = span.stop - span.start
    checked = rank >= 2 and span.start == 0
    theta0 = _read_float32(base, name, span, pool, pool.like("base", count, torch.float32))
    merged = pool.like("merged", count, torch.float32)
    merged.copy_(theta0)
    for j, reader in enumerate(readers):
        member = pool.like("member", count, torch.float32)
        delta = _read_float32(reader, name, span, pool, member).sub_(theta0)
        if checked:
            origin.add(j, delta[:ORIGIN_CHECK_SAMPLE], theta0[:ORIGIN_CHECK_SAMPLE])
        merged.add_(delta, alpha=coefficients[j])
    return merged


def _cast_chunk(merged: torch.Tensor, dtype: torch.dtype, pool: _BufferPool) -> torch.Tensor:
    if dtype == torch.float32:
        return merged
    output = pool.like("output", merged.numel(), dtype)
    output.copy_(merged)
    return output


def merge_checkpoints(
    backbones: Sequence[Path],
    coefficients: Sequence[float],
    output: Path,
    base: Path | None = None,
    base_coefficient: float = 0.0,
    dtype: str | None = None,
    max_shard_size: int | str | None = None,
) -> Path:
    """Merge full checkpoints into `output`: theta = sum_j c_j theta_j + base_coefficient theta_0.

    Args:
        backbones: n checkpoint folders (safetensors) with identical tensor names, shapes, dtypes.
        coefficients: c, shape (n,); any sign. sum(c) + base_coefficient must be 1.
        output: new folder; it must not exist or be empty.
        base: theta_0's folder. When given, every tensor is theta_0 + sum_j c_j (theta_j - theta_0).
        base_coefficient: b, the weight on theta_0 (nonzero only when extrapolating).
        dtype: "float32", "bfloat16" or "float16"; default: the members' dtype per tensor.
        max_shard_size: bytes (or "2GB") per output shard; default: the first member's sharding.

    Returns the output folder, loadable with AutoModelForCausalLM.from_pretrained.
    """
    if not backbones:
        raise BonesoupError("no backbones given; pass at least one checkpoint folder")
    if dtype is not None and dtype not in OUTPUT_DTYPES:
        raise BonesoupError(f"invalid dtype {dtype!r}: expected one of {', '.join(OUTPUT_DTYPES)}")
    values = check_coefficients(coefficients, len(backbones), base is not None, base_coefficient)
    members = [read_checkpoint(Path(p)) for p in backbones]
    base_checkpoint = read_checkpoint(Path(base)) if base is not None else None
    check_output(Path(output), [*backbones, *([base] if base else [])])
    everyone = members + ([base_checkpoint] if base_checkpoint else [])
    skip = tied_names_to_skip(everyone)
    for other in everyone[1:]:
        check_same_tensors(members[0], other, skip)

    reference = members[0]
    layout = {f: [n for n in names if n not in skip] for f, names in reference.shards.items()}
    infos = output_tensor_infos(reference, skip, dtype)
    shard_bytes = parse_size(max_shard_size) if max_shard_size is not None else None
    groups = plan_shards(layout, infos, shard_bytes)
    out_torch = TORCH_DTYPES[OUTPUT_DTYPES[dtype]] if dtype else None
    origin = _SharedOriginCheck(len(members), base is not None)
    logger.info("merging %d checkpoints with coefficients %s into %s", len(members), values, output)
    with contextlib.ExitStack() as stack:
        readers = [CheckpointReader(m, stack) for m in members]
        base_reader = CheckpointReader(base_checkpoint, stack) if base_checkpoint else None
        pool = _BufferPool()
        produce = lambda name: _merge_tensor(
            name, readers, values, base_reader, out_torch, origin, pool
        )
        write_checkpoint(Path(output), groups, infos, produce, reference.path, dtype)
    origin.warn([m.path for m in members])
    return Path(output)
