"""Front metrics: non-dominated set, hypervolume, controllability and preference alignment.

Every function takes rewards oriented for maximisation (an objective where lower is better is
negated before it gets here) in normalised units, so objectives on different scales are
comparable. Points are arrays of shape (m, n): m evaluated soups, n objectives.
"""

from __future__ import annotations

import math

import moocore
import numpy as np
from scipy.stats import spearmanr

from bonesoup.errors import BonesoupError

# The shared reference point sits this fraction of each objective's range below the worst point.
REFERENCE_MARGIN = 0.1
# Margin used when every point has the same value on an objective (a range of 0).
MIN_REFERENCE_MARGIN = 0.01


def _as_points(points: object) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] < 1:
        raise BonesoupError(f"points must have shape (m, n), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise BonesoupError("points contain NaN or infinity; score every objective first")
    return array


def non_dominated(points: object) -> np.ndarray:
    """Mark the points no other point dominates (maximisation).

    Point a dominates b when a_i >= b_i for every objective i and a_i > b_i for at least one.
    Duplicated points do not dominate each other, so both stay marked.

    Args:
        points: shape (m, n).

    Returns:
        bool array of shape (m,), True for the non-dominated points (the front).
    """
    array = _as_points(points)
    at_least = np.all(array[:, None, :] >= array[None, :, :], axis=2)  # (m, m): a >= b
    strictly = np.any(array[:, None, :] > array[None, :, :], axis=2)
    dominated_by = at_least & strictly  # [a, b]: a dominates b
    return ~np.any(dominated_by, axis=0)


def hypervolume(points: object, reference: object) -> float:
    """Exact hypervolume of the region the points dominate above the reference (maximisation).

    HV(P, r) = Lebesgue measure of {x : r <= x <= p for some p in P}. Points that do not
    strictly exceed the reference on every objective add nothing. Computed with `moocore`
    (which minimises) on the negated points and reference, exact for any n.

    Args:
        points: shape (m, n) or (n,).
        reference: shape (n,), the same for every method compared.

    Returns:
        the hypervolume, >= 0, in normalised units to the power n.
    """
    array = _as_points(points)
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    if ref.size != array.shape[1]:
        raise BonesoupError(
            f"reference point has {ref.size} values but points have {array.shape[1]} objectives"
        )
    inside = np.all(array > ref, axis=1)
    if not np.any(inside):
        return 0.0
    return float(moocore.hypervolume(-array[inside], ref=-ref))


def reference_point(points: object, margin: float = REFERENCE_MARGIN) -> np.ndarray:
    """Reference point shared by every method of a run: the worst value per objective, lowered.

    r_i = min_p p_i - margin * (max_p p_i - min_p p_i), with MIN_REFERENCE_MARGIN in place of
    the range term when it is 0. Pass every evaluated point of the run (all methods, all seeds,
    theta_0 included) so each point, and thus each method, has a positive hypervolume.

    Args:
        points: shape (m, n).

    Returns:
        shape (n,).
    """
    array = _as_points(points)
    low = array.min(axis=0)
    spread = margin * (array.max(axis=0) - low)
    return low - np.maximum(spread, MIN_REFERENCE_MARGIN)


def _level_means(mu: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group by distinct mu values (rounded to 1e-9); return the levels and mean values."""
    keys = np.round(mu, 9)
    levels = np.unique(keys)
    means = np.array([values[keys == level].mean() for level in levels])
    return levels, means


def controllability(preferences: object, rewards: object) -> dict[str, list]:
    """Measure whether each reward rises with its preference weight across a grid.

    For objective i:
    - spearman[i]: Spearman rank correlation between mu_i and r_i over the grid points, or None
      when mu_i or r_i is constant (undefined).
    - ordered[i] / pairs[i]: the grid points are grouped by their value of mu_i and r_i is
      averaged within each group; ordered counts neighbouring groups (consecutive mu_i levels)
      whose mean r_i strictly increases, pairs counts the neighbouring groups. For n = 2 the
      groups are the single grid points, so this counts correctly ordered neighbours.

    Args:
        preferences: mu per grid point, shape (g, n).
        rewards: mean reward per grid point, shape (g, n), oriented so higher is better.

    Returns:
        {"spearman": [n floats or None], "ordered": [n ints], "pairs": [n ints]}.
    """
    mu = _as_points(preferences)
    values = _as_points(rewards)
    if mu.shape != values.shape:
        raise BonesoupError(
            f"preferences have shape {mu.shape} but rewards have shape {values.shape}; "
            "give one reward vector per preference"
        )
    result: dict[str, list] = {"spearman": [], "ordered": [], "pairs": []}
    for i in range(mu.shape[1]):
        result["spearman"].append(_spearman(mu[:, i], values[:, i]))
        _, means = _level_means(mu[:, i], values[:, i])
        result["ordered"].append(int(np.sum(np.diff(means) > 0)))
        result["pairs"].append(int(max(means.size - 1, 0)))
    return result


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    value = float(spearmanr(x, y).statistic)
    return None if math.isnan(value) else value


def preference_alignment(preferences: object, rewards: object) -> float:
    """Mean scalarised reward over the grid: (1/g) sum_k <mu_k, r_k>.

    Args:
        preferences: shape (g, n).
        rewards: normalised mean rewards, shape (g, n).
    """
    mu = _as_points(preferences)
    values = _as_points(rewards)
    if mu.shape != values.shape:
        raise BonesoupError(
            f"preferences have shape {mu.shape} but rewards have shape {values.shape}"
        )
    return float(np.mean(np.sum(mu * values, axis=1)))


def summarize(values: list[float | None]) -> dict[str, float | int | None]:
    """Mean, sample std (0 for one value), min and max over seeds, skipping None."""
    present = [float(value) for value in values if value is not None]
    if not present:
        return {"mean": None, "std": None, "min": None, "max": None, "count": 0}
    array = np.array(present)
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if array.size > 1 else 0.0,
        "min": float(array.min()),
        "max": float(array.max()),
        "count": int(array.size),
    }
