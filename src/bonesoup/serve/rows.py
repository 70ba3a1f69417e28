"""Per-row soups for LoRA backbones: rows with different preferences share one `generate` call.

`LoraSoup` keeps one stacked adapter of rank R = sum_j r_j on the model, and its forward pass adds
B (A x) to each target module's output, with A = [A_1; ...; A_n] (R, in) and
B = [c_1 s_1 B_1 | ... | c_n s_n B_n] (out, R). Writing B = B_unit diag(w) with
B_unit = [s_1 B_1 | ... | s_n B_n] and w = (c_1 repeated r_1 times, ..., c_n repeated r_n times),
the added term is B_unit (w * (A x)). `RowMixing` sets the soup's coefficients to 1, so the model
contains B_unit, and a forward hook on every stacked A multiplies the output A x (batch, seq, R) by
a per-row w (batch, 1, R). Row b then computes theta_0 + sum_j c_{b,j} s_j B_j A_j applied
to its input, with its own coefficients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from bonesoup.lora import load_lora_adapter
from bonesoup.switching import SOUP_ADAPTER_NAME, LoraSoup


class RowMixing:
    """Forward hooks that give every row of a batch its own coefficients on a `LoraSoup`."""

    def __init__(self, soup: LoraSoup, adapter_dirs: Sequence[Path]) -> None:
        from peft.tuners.lora import LoraLayer

        # NOTE: this relies on PEFT's plain LoRA forward calling lora_A as a module, as
        # peft 0.21 LoRA Linear layers do. The tests compare the result with offline merges.
        # Block j of the stacked rank has the width of adapter j's largest rank (bonesoup.lora).
        ranks = [load_lora_adapter(Path(path)).rank for path in adapter_dirs]
        self._widths = torch.tensor(ranks)
        self._columns: torch.Tensor | None = None  # (batch, 1, R) while a batch runs
        self._handles = []
        for module in soup.model.modules():
            if isinstance(module, LoraLayer) and SOUP_ADAPTER_NAME in module.lora_A:
                hook = module.lora_A[SOUP_ADAPTER_NAME].register_forward_hook(self._scale)
                self._handles.append(hook)
        if not self._handles:
            raise RuntimeError("the LoRA soup has no stacked adapter layers to hook")
        soup.set_coefficients([1.0] * len(ranks))

    def _scale(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        columns = self._columns
        if columns is None:
            return output
        if output.dim() != 3 or output.shape[0] != columns.shape[0]:
            raise RuntimeError(
                f"stacked LoRA output of shape {list(output.shape)} does not match "
                f"{columns.shape[0]} rows of coefficients"
            )
        return output * columns.to(output.dtype)

    def columns(self, weights: Sequence[Sequence[float]]) -> torch.Tensor:
        """Return w for each row, shape (rows, R): c_{b,j} repeated over block j's width."""
        rows = [
            torch.repeat_interleave(torch.tensor(row, dtype=torch.float32), self._widths)
            for row in weights
        ]
        return torch.stack(rows)

    @contextlib.contextmanager
    def rows(self, weights: Sequence[Sequence[float]]) -> Iterator[None]:
        """Inside the block, row b of every forward pass uses coefficients weights[b]."""
        self._columns = self.columns(weights)[:, None, :]
        try:
            yield
        finally:
            self._columns = None

    def remove(self) -> None:
        """Remove the hooks; the soup keeps unit coefficients."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
