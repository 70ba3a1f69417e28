"""Evaluation jobs: one (training seed, method, preference) point of a sweep, and its key.

Methods:
    bone-soup, bone-soup-extrapolated, aba: soups of the bone-soup-<j> backbones.
    rewarded-soup: soups of the rewarded-soup-<j> backbones (c = mu).
    morlhf: every trained morlhf-<k> backbone as it is, at its own training weights.
    theta_0: the starting model, one job per seed, independent of the preference.
    mod: decoding-time mixing of the rewarded-soup-<j> backbones (see `bonesoup.evaluate.mod`).
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bonesoup.coefficients import soup_coefficients
from bonesoup.config import EVALUATION_METHODS, RunConfig
from bonesoup.errors import BonesoupError
from bonesoup.preferences import preference_grid, simplex_lattice
from bonesoup.rundir import RunDir
from bonesoup.training import read_backbone_json

# Defined in bonesoup.config, which validates evaluation.methods without importing torch.
METHODS = EVALUATION_METHODS
# The backbone family (folder prefix) each method loads.
FAMILY = {
    "bone-soup": "bone-soup",
    "bone-soup-extrapolated": "bone-soup",
    "aba": "bone-soup",
    "rewarded-soup": "rewarded-soup",
    "mod": "rewarded-soup",
    "morlhf": "morlhf",
    "theta_0": None,
}


@dataclass(frozen=True)
class EvalJob:
    """One point of the sweep. `split` is "test" for the sweep, "validation" for the k search."""

    seed: int
    method: str
    preference: tuple[float, ...] | None  # None for theta_0
    split: str = "test"
    extrapolation: tuple[float, ...] | None = None  # factors k_i, bone-soup-extrapolated only
    backbone: str | None = None  # morlhf-<k> for morlhf jobs

    @property
    def key(self) -> str:
        """Identity of the job in rows.jsonl; a finished key is never recomputed."""
        parts = [f"seed={self.seed}", f"method={self.method}"]
        if self.preference is not None:
            parts.append("preference=" + ",".join(f"{value:.6g}" for value in self.preference))
        if self.backbone is not None:
            parts.append(f"backbone={self.backbone}")
        if self.split != "test":
            parts.append(f"split={self.split}")
            parts.append("k=" + ",".join(f"{value:.6g}" for value in self.extrapolation or ()))
        return "|".join(parts)


def check_methods(methods: list[str]) -> list[str]:
    """Return the methods in order without repeats; raise for an unknown name."""
    for method in methods:
        if method not in METHODS:
            close = difflib.get_close_matches(method, METHODS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise BonesoupError(
                f"unknown evaluation method {method!r}; {hint}valid methods: {', '.join(METHODS)}"
            )
    return list(dict.fromkeys(methods))


def evaluation_grid(config: RunConfig) -> list[tuple[float, ...]]:
    """Preferences of the sweep: `evaluation.grid` = d gives the simplex lattice with steps 1/d;
    None gives the default grid (11 points for n = 2, 13 for n = 3)."""
    n = len(config.objectives)
    grid = config.evaluation.grid
    points = preference_grid(n) if grid is None else simplex_lattice(n, int(grid))
    return [tuple(round(float(value), 12) for value in point) for point in points]


def sampling_seed(base_seed: int, preference: tuple[float, ...] | None) -> int:
    """Seed for one preference: the same for every method and training seed (equal noise)."""
    text = "theta_0" if preference is None else ",".join(f"{v:.6g}" for v in preference)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return (base_seed * 1_000_003 + int(digest[:8], 16)) % (2**31)


def backbone_dirs(run_dir: Path, seed: int, family: str) -> list[Path]:
    """Folders named <family>-<index> under seed-<seed>/backbones, ordered by index.

    Raises BonesoupError when a folder's backbone.json is missing or its status is not "done".
    """
    root = RunDir(Path(run_dir)).backbones(seed)
    pattern = re.compile(rf"^{re.escape(family)}-(\d+)$")
    found = []
    if root.is_dir():
        for folder in root.iterdir():
            match = pattern.match(folder.name)
            if match and folder.is_dir():
                found.append((int(match.group(1)), folder))
    folders = [folder for _, folder in sorted(found)]
    for folder in folders:
        info = read_backbone_json(folder)
        if info is None or info.get("status") != "done":
            status = None if info is None else info.get("status")
            raise BonesoupError(
                f"backbone {folder} is not finished (status {status!r}); run `bonesoup seek` "
                "for this run again to finish it"
            )
    return folders


def method_available(run_dir: Path, seed: int, method: str, n: int) -> str | None:
    """Return None when seed's backbones support the method, else the reason they do not."""
    family = FAMILY[method]
    if family is None:
        return None
    folders = backbone_dirs(run_dir, seed, family)
    if family == "morlhf":
        return None if folders else f"no morlhf-<k> backbones under seed-{seed}"
    if len(folders) != n:
        return (
            f"{method} needs {n} {family}-<j> backbones under seed-{seed}/backbones, "
            f"found {len(folders)}"
        )
    return None


def soup_weights(config: RunConfig, job: EvalJob) -> np.ndarray:
    """Task-vector coefficients (one per backbone) of the soup a soup job evaluates.

    theta = theta_0 + sum_j w_j (theta_j - theta_0): with extrapolation the coefficient on theta_0
    is 1 - sum_j w_j, so it needs no weight of its own.
    """
    from bonesoup.seek import backbone_matrix

    assert job.preference is not None
    method = {"bone-soup-extrapolated": "bone-soup"}.get(job.method, job.method)
    matrix = backbone_matrix(config) if method != "rewarded-soup" else None
    coefficients = soup_coefficients(
        list(job.preference), method=method, matrix=matrix, extrapolation=job.extrapolation
    )
    return np.asarray(coefficients.backbones, dtype=np.float64)


def morlhf_weights(folder: Path) -> tuple[float, ...]:
    """Training weights of a morlhf backbone, read from its backbone.json."""
    info = read_backbone_json(folder) or {}
    weights = info.get("weights")
    if not weights:
        raise BonesoupError(f"{folder}/backbone.json has no 'weights'; retrain the backbone")
    return tuple(round(float(value), 12) for value in weights)


def sweep_jobs(
    config: RunConfig,
    run_dir: Path,
    methods: list[str],
    seeds: list[int],
    factors: dict[int, tuple[float, ...]],
) -> list[EvalJob]:
    """List the test jobs of every (seed, method, preference), theta_0 once per seed.

    Jobs are grouped by seed and backbone family, so a process loads each soup once.
    """
    grid = evaluation_grid(config)
    jobs = []
    for seed in seeds:
        for method in methods:
            if method == "theta_0":
                jobs.append(EvalJob(seed, method, None))
            elif method == "morlhf":
                for folder in backbone_dirs(run_dir, seed, "morlhf"):
                    jobs.append(EvalJob(seed, method, morlhf_weights(folder), backbone=folder.name))
            else:
                extrapolation = factors.get(seed) if method == "bone-soup-extrapolated" else None
                jobs.extend(EvalJob(seed, method, mu, extrapolation=extrapolation) for mu in grid)
    families = list(dict.fromkeys(FAMILY[method] or "" for method in methods))
    jobs.sort(key=lambda job: (seeds.index(job.seed), families.index(FAMILY[job.method] or "")))
    return jobs
