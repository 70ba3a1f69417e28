"""The backbones a server loads from a run folder, and the coefficients it applies per request.

All finished backbones of one training seed go into one switchable soup (`bonesoup.switching`):
the bone-soup-<j> backbones serve the methods bone-soup and aba, the rewarded-soup-<j> backbones
serve rewarded-soup. A request's coefficients c (one per backbone of its family, from
`soup_coefficients`) are placed into a vector over all loaded backbones, with zeros for the other
family, so theta = theta_0 + sum_j c_j (theta_j - theta_0) uses only the family of the method.

`SoupCache` keeps the last few full-weight soups the server materialised, so switching back to a
recent coefficient vector copies stored tensors into the model instead of recomputing the sum.
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bonesoup.coefficients import soup_coefficients
from bonesoup.config import RunConfig
from bonesoup.errors import BonesoupError
from bonesoup.rundir import RunDir
from bonesoup.switching import FullWeightSoup

logger = logging.getLogger(__name__)

FAMILY_OF_METHOD = {"bone-soup": "bone-soup", "aba": "bone-soup", "rewarded-soup": "rewarded-soup"}
_NAME_PATTERN = re.compile(r"^(bone-soup|rewarded-soup)-(\d+)$")


@dataclass(frozen=True)
class Family:
    """The n backbones trained for one method, in backbone order j = 0..n-1."""

    name: str  # "bone-soup" or "rewarded-soup"
    dirs: tuple[Path, ...]
    matrix: np.ndarray  # (n, n): row j is the reward weights backbone j was trained on
    offset: int  # index of backbone 0 in the vector over all loaded backbones


def _read_record(folder: Path) -> dict | None:
    try:
        record = json.loads((folder / "backbone.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("status") == "done" else None


def find_families(run_dir: Path, seed: int, n: int) -> list[Family]:
    """Return the complete backbone families (n finished backbones each) of one seed.

    Raises:
        BonesoupError: when the seed has no complete family.
    """
    folder = RunDir(Path(run_dir)).backbones(seed)
    found: dict[str, dict[int, tuple[Path, list[float]]]] = {}
    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = _NAME_PATTERN.match(child.name)
        record = _read_record(child) if match else None
        if record is None:
            continue
        found.setdefault(match.group(1), {})[int(match.group(2))] = (child, record["weights"])
    families = []
    offset = 0
    for name in ("bone-soup", "rewarded-soup"):
        members = found.get(name, {})
        if sorted(members) != list(range(n)):
            if members:
                logger.warning(
                    "skipping %s backbones in %s: found indices %s, expected 0..%d",
                    name,
                    folder,
                    sorted(members),
                    n - 1,
                )
            continue
        dirs = tuple(members[j][0] for j in range(n))
        matrix = np.array([members[j][1] for j in range(n)], dtype=np.float64)
        families.append(Family(name, dirs, matrix, offset))
        offset += n
    if not families:
        raise BonesoupError(
            f"no finished backbones for seed {seed} in {folder}: expected bone-soup-0.."
            f"bone-soup-{n - 1} or rewarded-soup-0..rewarded-soup-{n - 1} with backbone.json "
            "status done; train them with `bonesoup run` or pick another --seed"
        )
    return families


class CoefficientTable:
    """Maps (method, preference) to the coefficient vector over all loaded backbones."""

    def __init__(self, families: list[Family], config: RunConfig) -> None:
        self.families = {family.name: family for family in families}
        self.size = sum(len(family.dirs) for family in families)
        self.config = config

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(m for m, family in FAMILY_OF_METHOD.items() if family in self.families)

    def dirs(self) -> list[Path]:
        """Return the backbone folders in the order of the coefficient vector."""
        ordered = sorted(self.families.values(), key=lambda family: family.offset)
        return [path for family in ordered for path in family.dirs]

    def coefficients(
        self,
        method: str,
        preference: tuple[float, ...],
        extrapolation: tuple[float, ...] | None = None,
    ) -> tuple[np.ndarray, dict]:
        """Return (vector of shape (size,), report of the soup for the response body).

        With extrapolation factors k (shape (n,), each >= 1) the backbone coefficients are those
        of `soup_coefficients(..., extrapolation=k)`. Their theta_0 coefficient
        b = 1 - sum_j c_j needs no entry of its own, because the server writes the soup as
        theta_0 + sum_j c_j (theta_j - theta_0) = b theta_0 + sum_j c_j theta_j.

        Raises:
            BonesoupError: invalid extrapolation factors.
        """
        family = self.families[FAMILY_OF_METHOD[method]]
        # The trained rows are the backbone matrix B that bone-soup inverts; rewarded-soup has I.
        matrix = None if method == "rewarded-soup" else family.matrix
        soup = soup_coefficients(
            preference, method=method, matrix=matrix, extrapolation=extrapolation
        )
        vector = np.zeros(self.size, dtype=np.float64)
        vector[family.offset : family.offset + len(family.dirs)] = soup.backbones
        report = {
            "method": method,
            "preference": list(preference),
            "coefficients": [round(float(value), 10) for value in soup.backbones],
        }
        if extrapolation is not None:
            report["extrapolation"] = [float(k) for k in extrapolation]
            report["base"] = round(float(soup.base), 10)
        return vector, report


class SoupCache:
    """A bounded LRU cache of materialised full-weight soups theta = theta_0 + sum_j w_j tau_j.

    Keys are coefficient vectors over all loaded backbones (shape (size,), rounded by the caller):
    the vector alone fixes theta, so two methods that give the same vector share one entry. An
    entry contains one tensor per parameter, in the parameter's dtype, copied from the model right
    after `FullWeightSoup.set_coefficients` wrote the soup. So a hit writes exactly the values of
    a miss: one `copy_` per parameter, with no arithmetic over the n task vectors.

    Each entry costs one copy of the model's parameters (4 bytes per parameter in float32, about
    540 MB for a 135M model). A size of 0 disables the cache: every switch recomputes the sum.
    """

    def __init__(self, soup: FullWeightSoup, size: int) -> None:
        if size < 0:
            raise BonesoupError(f"soup cache size {size} is invalid: use 0 (off) or more entries")
        self.soup = soup
        self.size = int(size)
        self.hits = 0
        self.misses = 0
        self._parameters = dict(soup.model.named_parameters())  # tied weights appear once
        self._entries: OrderedDict[tuple[float, ...], dict[str, torch.Tensor]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def set_coefficients(self, weights: Sequence[float]) -> None:
        """Put the soup of `weights` into the model, from the cache when it contains it."""
        key = tuple(float(w) for w in weights)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            with torch.no_grad():
                for name, parameter in self._parameters.items():
                    parameter.copy_(entry[name])
            self.soup.coefficients = list(key)
            self.hits += 1
            logger.debug("soup cache hit for %s (%d entries)", key, len(self._entries))
            return
        self.soup.set_coefficients(key)
        self.misses += 1
        if self.size == 0:
            logger.debug("soup cache off: computed the soup for %s", key)
            return
        buffers = self._evict() if len(self._entries) >= self.size else None
        self._entries[key] = self._store(buffers)
        logger.debug("soup cache miss for %s (%d entries)", key, len(self._entries))

    def _evict(self) -> dict[str, torch.Tensor]:
        """Remove the least recently used entry and return its tensors for reuse."""
        evicted, tensors = self._entries.popitem(last=False)
        logger.debug("soup cache full: evicted %s", evicted)
        return tensors

    def _store(self, buffers: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """Copy the model's parameters into `buffers` (an evicted entry), or into new tensors.

        Reusing an evicted entry's tensors saves allocating one model's worth of memory per miss.
        """
        with torch.no_grad():
            if buffers is None:
                return {n: p.detach().clone() for n, p in self._parameters.items()}
            for name, parameter in self._parameters.items():
                buffers[name].copy_(parameter)
            return buffers

    def stats(self) -> dict[str, int]:
        """Return the counters /health reports."""
        return {
            "soup_cache_size": self.size,
            "soup_cache_entries": len(self._entries),
            "soup_cache_hits": self.hits,
            "soup_cache_misses": self.misses,
        }
