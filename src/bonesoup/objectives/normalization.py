"""Per-objective z-normalisation with statistics from the starting model's own samples.

Bone Soups mixes objectives through the backbone matrix B, so beta only means something when the
objectives share a scale. `Normalizer` maps each objective to z = (r - mean) / max(std, min_std),
with mean and std estimated once from responses of the starting model theta_0 and then frozen.

The std floor `min_std` (default 1e-3) stops an objective that barely varies on theta_0's samples
(for example conciseness when every reply sits on its plateau) from being divided by ~0 and
blowing up. A warning is logged when the floor is used.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bonesoup.errors import BonesoupError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass
class Normalizer:
    """Frozen mean and std per objective name, applied as (r - mean) / max(std, min_std)."""

    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    min_std: float = 1e-3

    @classmethod
    def fit(
        cls,
        objective_names: Sequence[str],
        scores: Mapping[str, Sequence[float]],
        min_std: float = 1e-3,
    ) -> Normalizer:
        """Estimate mean and sample std (ddof=1) of each objective from at least 2 finite scores."""
        if min_std <= 0:
            raise BonesoupError(f"min_std={min_std} must be > 0")
        normalizer = cls(min_std=min_std)
        for name in objective_names:
            if name not in scores:
                raise BonesoupError(
                    f"no scores for objective {name!r}; got scores for {sorted(scores)}"
                )
            values = [float(value) for value in scores[name]]
            if len(values) < 2:
                raise BonesoupError(
                    f"objective {name!r} has {len(values)} score(s); fitting needs at least 2"
                )
            if not all(math.isfinite(value) for value in values):
                raise BonesoupError(f"objective {name!r} has a non-finite score; cannot fit")
            normalizer.means[name] = statistics.fmean(values)
            normalizer.stds[name] = statistics.stdev(values)
            normalizer.counts[name] = len(values)
            if normalizer.stds[name] < min_std:
                logger.warning(
                    "objective %s has std %.3g < min_std %.3g on %d samples; dividing by min_std",
                    name,
                    normalizer.stds[name],
                    min_std,
                    len(values),
                )
        return normalizer

    @property
    def names(self) -> list[str]:
        return list(self.means)

    def _stats(self, name: str) -> tuple[float, float]:
        if name not in self.means:
            raise BonesoupError(
                f"normalizer has no statistics for objective {name!r}; fitted: {self.names}"
            )
        return self.means[name], max(self.stds[name], self.min_std)

    def normalize(self, name: str, values: Sequence[float]) -> list[float]:
        """Return (r - mean) / max(std, min_std) for each raw score r of objective `name`."""
        mean, scale = self._stats(name)
        return [(float(value) - mean) / scale for value in values]

    def denormalize(self, name: str, values: Sequence[float]) -> list[float]:
        """Invert `normalize`: r = z * max(std, min_std) + mean."""
        mean, scale = self._stats(name)
        return [float(value) * scale + mean for value in values]

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of the statistics."""
        return {
            "format_version": FORMAT_VERSION,
            "min_std": self.min_std,
            "objectives": {
                name: {"mean": self.means[name], "std": self.stds[name], "count": self.counts[name]}
                for name in self.names
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Normalizer:
        """Rebuild a normalizer from `to_json` output."""
        try:
            normalizer = cls(min_std=float(data["min_std"]))
            for name, stats in data["objectives"].items():
                normalizer.means[name] = float(stats["mean"])
                normalizer.stds[name] = float(stats["std"])
                normalizer.counts[name] = int(stats.get("count", 0))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise BonesoupError(
                f"invalid normalizer data ({type(error).__name__}: {error}); expected the output "
                "of Normalizer.to_json()"
            ) from error
        return normalizer

    def save(self, path: str | Path) -> Path:
        """Write the statistics as JSON atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        with os.fdopen(handle, "w") as stream:
            json.dump(self.to_json(), stream, indent=2)
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Normalizer:
        """Read statistics written by `save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as error:
            raise BonesoupError(f"normalizer file {str(path)!r} not found") from error
        except json.JSONDecodeError as error:
            raise BonesoupError(
                f"normalizer file {str(path)!r} is not valid JSON: {error}"
            ) from error
        return cls.from_json(data)
