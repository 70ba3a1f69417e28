"""The backbones a server loads from a run folder, and the coefficients it applies per request.

All finished backbones of one training seed go into one switchable soup (`bonesoup.switching`):
the bone-soup-<j> backbones serve the methods bone-soup and aba, the rewarded-soup-<j> backbones
serve rewarded-soup. A request's coefficients c (one per backbone of its family, from
`soup_coefficients`) are placed into a vector over all loaded backbones, with zeros for the other
family, so theta = theta_0 + sum_j c_j (theta_j - theta_0) uses only the family of the method.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bonesoup.coefficients import soup_coefficients
from bonesoup.config import RunConfig
from bonesoup.errors import BonesoupError
from bonesoup.rundir import RunDir

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

    def coefficients(self, method: str, preference: tuple[float, ...]) -> tuple[np.ndarray, dict]:
        """Return (vector of shape (size,), report of the soup for the response body)."""
        family = self.families[FAMILY_OF_METHOD[method]]
        # NOTE: requests cannot ask for extrapolation (k_i > 1), so the base coefficient is 0.
        if method == "rewarded-soup":
            soup = soup_coefficients(preference, method=method)
        else:
            # The trained rows are the backbone matrix B that bone-soup inverts.
            soup = soup_coefficients(preference, method=method, matrix=family.matrix)
        vector = np.zeros(self.size, dtype=np.float64)
        vector[family.offset : family.offset + len(family.dirs)] = soup.backbones
        report = {
            "method": method,
            "preference": list(preference),
            "coefficients": [round(float(value), 10) for value in soup.backbones],
        }
        return vector, report
