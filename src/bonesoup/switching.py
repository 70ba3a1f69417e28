"""Switch a loaded model between soups in memory, without writing or reloading checkpoints.

Both soups keep the backbones' task vectors in memory once and rewrite the model in place when the
coefficients change, so the same module serves any preference:

- `LoraSoup`: LoRA backbones. One stacked adapter of rank R = sum_j r_j sits on the model; a switch
  rewrites only its B matrices, B = [c_1 s_1 B_1 | ... | c_n s_n B_n] (see `bonesoup.lora`).
- `FullWeightSoup`: full fine-tuned backbones. It stores theta_0 and tau_j = theta_j - theta_0 in
  float32 ((n + 1) copies of the model) and writes theta_0 + sum_j c_j tau_j into every parameter.

Coefficients here weight task vectors, so the base keeps weight 1:
theta = theta_0 + sum_j c_j tau_j. All zeros give theta_0 back.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from bonesoup.errors import BonesoupError
from bonesoup.lora import is_lora_adapter, load_stacked_adapters
from bonesoup.merge import TIED_OUTPUT_NAME, CheckpointReader, read_checkpoint

logger = logging.getLogger(__name__)

SOUP_ADAPTER_NAME = "soup"


@runtime_checkable
class Soup(Protocol):
    """A model whose weights follow the coefficients of the last `set_coefficients` call."""

    @property
    def model(self) -> torch.nn.Module: ...

    def set_coefficients(self, weights: Sequence[float]) -> None: ...

    def disable(self) -> contextlib.AbstractContextManager[torch.nn.Module]: ...


def _check_weights(weights: Sequence[float], count: int) -> torch.Tensor:
    values = torch.tensor([float(w) for w in weights], dtype=torch.float32)
    if values.numel() != count:
        raise BonesoupError(
            f"got {values.numel()} coefficients for {count} backbones; give one each"
        )
    if not torch.isfinite(values).all():
        raise BonesoupError(f"coefficients {values.tolist()} must be finite numbers")
    return values


class LoraSoup:
    """LoRA backbones stacked into one adapter on `base_model`; switching rescales B blocks.

    PEFT injects the stacked adapter into `base_model` in place, so pass a model that this soup
    may own. `model` is the PeftModel to call forward or generate on.
    """

    def __init__(self, base_model: torch.nn.Module, adapter_dirs: Sequence[Path]) -> None:
        from peft import LoraConfig, get_peft_model

        adapters, self._stacked = load_stacked_adapters(adapter_dirs)
        config = LoraConfig(
            r=self._stacked.rank,
            lora_alpha=self._stacked.rank,  # scaling 1: the B blocks carry c_j s_j
            target_modules=sorted(self._stacked.modules),
            lora_dropout=0.0,
            bias="none",
            fan_in_fan_out=bool(adapters[0].config.get("fan_in_fan_out")),
            task_type=adapters[0].config.get("task_type"),
            inference_mode=True,
        )
        self._peft_model = get_peft_model(base_model, config, adapter_name=SOUP_ADAPTER_NAME)
        self._peft_model.eval()
        inner = self._peft_model.get_base_model()
        self._b_weights: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name, (a_stack, _) in self._stacked.modules.items():
                layer = inner.get_submodule(name)
                if abs(layer.scaling[SOUP_ADAPTER_NAME] - 1.0) > 1e-12:
                    raise RuntimeError(f"PEFT set scaling {layer.scaling} on {name}, expected 1")
                layer.lora_A[SOUP_ADAPTER_NAME].weight.copy_(a_stack)
                self._b_weights[name] = layer.lora_B[SOUP_ADAPTER_NAME].weight
        self.coefficients: list[float] = []
        self.set_coefficients([0.0] * len(adapters))

    @property
    def model(self) -> torch.nn.Module:
        return self._peft_model

    def set_coefficients(self, weights: Sequence[float]) -> None:
        """Set the soup to theta_0 + sum_j w_j s_j B_j A_j by rewriting the stacked B matrices."""
        values = _check_weights(weights, len(self._stacked.offsets) - 1)
        columns = self._stacked.column_weights(values.tolist())
        with torch.no_grad():
            for name, (_, b_unit) in self._stacked.modules.items():
                weight = self._b_weights[name]
                if weight.dtype == torch.float32:
                    torch.mul(b_unit, columns, out=weight)
                else:
                    weight.copy_(b_unit * columns)
        self.coefficients = values.tolist()

    @contextlib.contextmanager
    def disable(self) -> Iterator[torch.nn.Module]:
        """Run the base model theta_0 inside the block, whatever the coefficients."""
        with self._peft_model.disable_adapter():
            yield self._peft_model


class FullWeightSoup:
    """Full fine-tuned backbones as task vectors; switching rewrites the model's parameters.

    `base_model` must hold theta_0 when the soup is built; it is changed in place afterwards.
    NOTE: it keeps theta_0 and n task vectors in float32 besides the model itself, about
    (n + 1) x 540 MB for a 135M model, and a switch rewrites every parameter (0.5-1 s there).
    """

    def __init__(self, base_model: torch.nn.Module, backbone_dirs: Sequence[Path]) -> None:
        if not backbone_dirs:
            raise BonesoupError("no backbones given; pass at least one checkpoint folder")
        self._model = base_model
        self._parameters = dict(base_model.named_parameters())  # tied weights appear once
        self._theta0 = {
            n: p.detach().to(torch.float32).reshape(-1).clone() for n, p in self._parameters.items()
        }
        self._task_vectors = self._load_task_vectors([Path(p) for p in backbone_dirs])
        self.coefficients: list[float] = [0.0] * len(backbone_dirs)

    def _load_task_vectors(self, paths: list[Path]) -> dict[str, torch.Tensor]:
        """Return, per parameter, tau stacked over backbones: shape (n, numel)."""
        tied = self._tied_output()
        stacked = {n: torch.empty(len(paths), t.numel()) for n, t in self._theta0.items()}
        for j, path in enumerate(paths):
            checkpoint = read_checkpoint(path)
            names = set(checkpoint.tensors) - ({TIED_OUTPUT_NAME} if tied else set())
            if names != set(self._parameters):
                missing = sorted(set(self._parameters) - names)[:3]
                extra = sorted(names - set(self._parameters))[:3]
                raise BonesoupError(
                    f"{path} does not match the model's parameters: missing {missing}, extra "
                    f"{extra}; load the base model the backbones were fine-tuned from"
                )
            with contextlib.ExitStack() as stack:
                reader = CheckpointReader(checkpoint, stack)
                for name, parameter in self._parameters.items():
                    tensor = reader.get(name)
                    if tensor.shape != parameter.shape:
                        raise BonesoupError(
                            f"tensor {name} has shape {list(tensor.shape)} in {path} but "
                            f"{list(parameter.shape)} in the model; use the matching base model"
                        )
                    stacked[name][j] = tensor.to(torch.float32).reshape(-1) - self._theta0[name]
        return stacked

    def _tied_output(self) -> bool:
        output = getattr(self._model, "get_output_embeddings", lambda: None)()
        inputs = getattr(self._model, "get_input_embeddings", lambda: None)()
        return output is not None and inputs is not None and output.weight is inputs.weight

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    def set_coefficients(self, weights: Sequence[float]) -> None:
        """Write theta_0 + sum_j w_j tau_j into every parameter of the model."""
        values = _check_weights(weights, len(self.coefficients))
        with torch.no_grad():
            for name, parameter in self._parameters.items():
                merged = torch.addmv(self._theta0[name], self._task_vectors[name].T, values)
                parameter.copy_(merged.view(parameter.shape))
        self.coefficients = values.tolist()

    @contextlib.contextmanager
    def disable(self) -> Iterator[torch.nn.Module]:
        """Run theta_0 inside the block, then restore the current coefficients."""
        current = self.coefficients
        self.set_coefficients([0.0] * len(current))
        try:
            yield self._model
        finally:
            self.set_coefficients(current)


def load_soup(base_model: torch.nn.Module, backbone_dirs: Sequence[Path]) -> Soup:
    """Build a LoraSoup when every backbone is a LoRA adapter, a FullWeightSoup when none is."""
    kinds = [is_lora_adapter(Path(p)) for p in backbone_dirs]
    if kinds and all(kinds):
        return LoraSoup(base_model, backbone_dirs)
    if not any(kinds):
        return FullWeightSoup(base_model, backbone_dirs)
    adapters = [str(p) for p, kind in zip(backbone_dirs, kinds, strict=True) if kind]
    raise BonesoupError(
        f"backbones mix LoRA adapters ({', '.join(adapters)}) and full checkpoints; use one kind"
    )
