"""Safetensors files and checkpoint folders: headers, positioned tensor reads, streamed writes.

A safetensors file is an 8-byte little-endian header length, a JSON header giving each tensor's
dtype, shape and byte range, then the raw little-endian tensor bytes. A checkpoint folder contains
one `model.safetensors`, or shards listed in `model.safetensors.index.json`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bonesoup.errors import BonesoupError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    """Dtype (safetensors code such as "F32") and shape of one stored tensor."""

    dtype: str
    shape: tuple[int, ...]
    offset: int = field(default=0, compare=False)  # byte position of the data in its file

    @property
    def nbytes(self) -> int:
        return DTYPE_BYTES[self.dtype] * math.prod(self.shape)


@dataclass
class Checkpoint:
    """Layout of a safetensors checkpoint folder, read from headers only."""

    path: Path
    shards: dict[str, list[str]]  # file name -> tensor names in file order
    tensors: dict[str, TensorInfo]
    shard_of: dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @property
    def tied_embeddings(self) -> bool:
        text_config = self.config.get("text_config") or {}
        return bool(self.config.get("tie_word_embeddings", text_config.get("tie_word_embeddings")))


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Return the tensors of one safetensors file in storage order, without reading data."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > size - 8:
            raise BonesoupError(f"{path} is not a safetensors file (header length {length})")
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    entries = sorted(header.items(), key=lambda item: item[1]["data_offsets"][0])
    infos = {}
    for name, entry in entries:
        if entry["dtype"] not in TORCH_DTYPES:
            raise BonesoupError(
                f"tensor {name} in {path} has dtype {entry['dtype']}, which merging does not "
                f"support; supported: {', '.join(TORCH_DTYPES)}"
            )
        start, end = entry["data_offsets"]
        info = TensorInfo(entry["dtype"], tuple(entry["shape"]), 8 + length + start)
        if end - start != info.nbytes or info.offset + info.nbytes > size:
            raise BonesoupError(
                f"tensor {name} in {path} has invalid data offsets; the file is corrupt"
            )
        infos[name] = info
    return infos


def _reject_unsupported_folder(path: Path) -> None:
    if not path.is_dir():
        raise BonesoupError(
            f"checkpoint folder {path} not found; pass a folder written by save_pretrained"
        )
    if (path / "adapter_config.json").is_file():
        raise BonesoupError(
            f"{path} is a LoRA adapter, not a full checkpoint; merge adapters with "
            "bonesoup.lora (or `bonesoup merge`, which detects them)"
        )
    pickles = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
    detail = f" (found {', '.join(sorted(pickles))})" if pickles else ""
    raise BonesoupError(
        f"{path} has no {SINGLE_FILE} or {INDEX_FILE}{detail}; only safetensors are read, never "
        "pickle files. Convert it once with transformers: "
        "AutoModelForCausalLM.from_pretrained(path).save_pretrained(new_path, "
        "safe_serialization=True)"
    )


def read_checkpoint(path: Path) -> Checkpoint:
    """Read the layout (names, shapes, dtypes, shard files) and config of a checkpoint folder."""
    path = Path(path)
    if (path / INDEX_FILE).is_file():
        weight_map = json.loads((path / INDEX_FILE).read_text())["weight_map"]
        files = list(dict.fromkeys(weight_map.values()))
    elif (path / SINGLE_FILE).is_file() and not (path / "adapter_config.json").is_file():
        files = [SINGLE_FILE]
    else:
        _reject_unsupported_folder(path)
    shards: dict[str, list[str]] = {}
    tensors: dict[str, TensorInfo] = {}
    for name in files:
        if not (path / name).is_file():
            raise BonesoupError(f"shard {name} listed in {path / INDEX_FILE} is missing")
        header = read_safetensors_header(path / name)
        shards[name] = list(header)
        tensors.update(header)
    shard_of = {tensor: name for name, names in shards.items() for tensor in names}
    config_path = path / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    return Checkpoint(path, shards, tensors, shard_of, config)


class CheckpointReader:
    """Open files on every shard of a checkpoint; `get` reads one tensor into fresh memory.

    Tensors are read with positioned reads, not through safe_open's memory map. Mapped pages
    stay in the process's resident set until the file is closed, so a memory-mapped streaming
    merge would grow to the size of its inputs.
    """

    def __init__(self, checkpoint: Checkpoint, stack: contextlib.ExitStack) -> None:
        if sys.byteorder != "little":
            raise BonesoupError("safetensors data is little-endian; this host is big-endian")
        self.checkpoint = checkpoint
        self._files = {
            name: stack.enter_context((checkpoint.path / name).open("rb", buffering=0))
            for name in checkpoint.shards
        }

    def get(self, name: str, buffer: torch.Tensor | None = None) -> torch.Tensor:
        """Read tensor `name`, into `buffer` (uint8, at least its byte size) when given."""
        info = self.checkpoint.tensors[name]
        if buffer is None:
            buffer = torch.empty(info.nbytes, dtype=torch.uint8)
        buffer = buffer[: info.nbytes]
        self.read_into(name, buffer)
        return buffer.view(TORCH_DTYPES[info.dtype]).reshape(info.shape)

    def read_into(self, name: str, buffer: torch.Tensor, start: int = 0) -> None:
        """Fill `buffer` (flat uint8) with the bytes of tensor `name` from byte `start` on."""
        info = self.checkpoint.tensors[name]
        handle = self._files[self.checkpoint.shard_of[name]]
        size = buffer.numel()
        if start + size > info.nbytes:
            raise ValueError(f"bytes {start}..{start + size} are outside tensor {name}")
        view = memoryview(buffer.numpy())
        done = 0
        while done < size:
            count = os.preadv(handle.fileno(), [view[done:]], info.offset + start + done)
            if count == 0:
                raise BonesoupError(
                    f"{handle.name} ends inside tensor {name}; the file is truncated"
                )
            done += count


class SafetensorsStreamWriter:
    """Write one safetensors file tensor by tensor, with the header written up front.

    The file format is an 8-byte little-endian header length, a JSON header giving each tensor's
    dtype, shape and byte range, then the raw little-endian tensor bytes in that order. The file
    is allocated at its final size when opened, so a full disk fails before any data is written,
    and every chunk goes to its offset with os.pwrite straight from the tensor's memory.
    """

    def __init__(self, path: Path, entries: list[tuple[str, TensorInfo]]) -> None:
        self._expected = iter(entries)
        header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, info in entries:
            header[name] = {
                "dtype": info.dtype,
                "shape": list(info.shape),
                "data_offsets": [offset, offset + info.nbytes],
            }
            offset += info.nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)
        prefix = struct.pack("<Q", len(encoded)) + encoded
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _allocate(self._fd, len(prefix) + offset)
            self._write_at(memoryview(prefix), 0)
        except BaseException:
            os.close(self._fd)
            raise
        self._position = len(prefix)

    def write(self, name: str, data: torch.Tensor | Iterable[torch.Tensor]) -> None:
        """Write tensor `name`: one tensor of its shape, or chunks whose bytes concatenate to it.

        Each chunk is written before the next one is requested, so a producer may reuse one
        buffer for every chunk.
        """
        expected_name, info = next(self._expected)
        if isinstance(data, torch.Tensor):
            if name != expected_name or tuple(data.shape) != info.shape:
                raise RuntimeError(f"writer expected {expected_name} {info.shape}, got {name}")
            data = [data]
        elif name != expected_name:
            raise RuntimeError(f"writer expected {expected_name}, got {name}")
        written = 0
        for chunk in data:
            if chunk.dtype != TORCH_DTYPES[info.dtype]:
                raise RuntimeError(f"writer expected {info.dtype} for {name}, got {chunk.dtype}")
            raw = chunk.contiguous().reshape(-1).view(torch.uint8)
            if written + raw.numel() > info.nbytes:
                raise RuntimeError(f"writer got more than {info.nbytes} bytes for {name}")
            self._write_at(memoryview(raw.numpy()), self._position + written)
            written += raw.numel()
        if written != info.nbytes:
            raise RuntimeError(f"writer got {written} of {info.nbytes} bytes for {name}")
        self._position += written

    def _write_at(self, view: memoryview, offset: int) -> None:
        done = 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], offset + done)

    def close(self) -> None:
        os.close(self._fd)


def _allocate(fd: int, size: int) -> None:
    """Give the file `fd` its final size, reserving disk blocks where the filesystem can."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise  # ENOSPC and I/O errors propagate; only unsupported fallocate falls back
        os.ftruncate(fd, size)
