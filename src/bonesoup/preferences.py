"""User preferences mu on the probability simplex, and the evaluation grids of preferences.

A preference has one weight per objective: mu_i >= 0 and sum_i mu_i = 1. The served model
should maximise the scalarised reward sum_i mu_i r_i.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np

from bonesoup.errors import BonesoupError

SUM_TOLERANCE = 1e-6

# Evaluation set for three objectives, in this order: corners, then mixtures.
_THREE_OBJECTIVE_GRID = (
    (1.0, 0.0, 0.0),
    (0.0, 1.0, 0.0),
    (0.0, 0.0, 1.0),
    (0.1, 0.1, 0.8),
    (0.1, 0.8, 0.1),
    (0.8, 0.1, 0.1),
    (0.2, 0.2, 0.6),
    (0.2, 0.6, 0.2),
    (0.6, 0.2, 0.2),
    (0.2, 0.4, 0.4),
    (0.4, 0.2, 0.4),
    (0.4, 0.4, 0.2),
    (1 / 3, 1 / 3, 1 / 3),
)

# preference_grid keeps a lattice for n >= 4 at or below this many points.
MAX_LATTICE_GRID_POINTS = 200


def check_preference(values: object, n: int | None = None) -> np.ndarray:
    """Validate a preference and return it as a float64 array of shape (n,).

    Rules: at least two entries (exactly n when n is given), all finite and non-negative,
    summing to 1 within 1e-6. A valid preference is divided by its sum, so the returned
    entries sum to 1 up to rounding.

    Raises:
        BonesoupError: naming the value, the rule and the fix.
    """
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise BonesoupError(
            f"invalid preference {values!r}: it must be a list of numbers, one per objective"
        ) from None
    if array.ndim != 1 or array.size < 2:
        raise BonesoupError(
            f"invalid preference {values!r}: it must be a flat list of at least two weights, "
            "one per objective, such as 0.2,0.8"
        )
    formatted = _format_values(array)
    if n is not None and array.size != n:
        raise BonesoupError(
            f"invalid preference {formatted}: it has {array.size} weights but there are {n} "
            f"objectives; give exactly {n} weights"
        )
    if not np.all(np.isfinite(array)):
        raise BonesoupError(
            f"invalid preference {formatted}: weights must be finite numbers, not NaN or infinity"
        )
    if np.any(array < 0):
        raise BonesoupError(
            f"invalid preference {formatted}: weights must be non-negative; "
            "set the weight of an objective you do not care about to 0"
        )
    total = float(array.sum())
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise BonesoupError(
            f"invalid preference {formatted}: weights sum to {total:.9g}, not 1 (tolerance "
            f"{SUM_TOLERANCE:g}); divide each weight by the sum"
        )
    return array / total


def _format_values(array: np.ndarray) -> str:
    return ",".join(f"{value:g}" for value in array.tolist())


def parse_preference(text: str, n: int | None = None) -> np.ndarray:
    """Parse comma-separated weights such as "0.2,0.8" or "1/3,1/3,1/3" and validate them.

    Surrounding brackets and spaces are ignored. Fractions a/b are accepted.

    Raises:
        BonesoupError: a weight is not a number, or the preference breaks a rule of
        check_preference.
    """
    stripped = text.strip().strip("[]()").strip()
    if not stripped:
        raise BonesoupError(
            f"invalid preference {text!r}: it is empty; "
            "give comma-separated weights such as 0.2,0.8"
        )
    weights = [_parse_weight(token, text) for token in stripped.split(",")]
    return check_preference(weights, n)


def _parse_weight(token: str, text: str) -> float:
    token = token.strip()
    try:
        return float(token)
    except ValueError:
        pass
    try:
        return float(Fraction(token))
    except (ValueError, ZeroDivisionError):
        raise BonesoupError(
            f"invalid preference {text!r}: weight {token!r} is not a number; "
            "give comma-separated numbers such as 0.2,0.8"
        ) from None


def simplex_lattice(n: int, divisions: int) -> list[np.ndarray]:
    """List every preference whose weights are multiples of 1/divisions.

    The lattice has C(n + divisions - 1, n - 1) points, ordered lexicographically by
    (mu_1, ..., mu_n) ascending. For n = 2 and divisions = 10 it equals preference_grid(2).

    Returns:
        list of float64 arrays of shape (n,).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise BonesoupError(f"invalid number of objectives {n!r}: the lattice needs n >= 2")
    if isinstance(divisions, bool) or not isinstance(divisions, (int, np.integer)) or divisions < 1:
        raise BonesoupError(
            f"invalid lattice divisions {divisions!r}: use an integer >= 1 (10 gives steps of 0.1)"
        )
    points = []
    # Bars-and-stars: choosing n - 1 bar positions among divisions + n - 1 slots.
    for bars in itertools.combinations(range(divisions + n - 1), n - 1):
        edges = (-1, *bars, divisions + n - 1)
        counts = [edges[k + 1] - edges[k] - 1 for k in range(n)]
        points.append(np.array(counts, dtype=np.float64) / divisions)
    points.sort(key=lambda point: tuple(point.tolist()))
    return points


def preference_grid(n: int) -> list[np.ndarray]:
    """Return the evaluation grid of preferences for n objectives.

    n = 2: mu_1 in 0, 0.1, ..., 1 with mu_2 = 1 - mu_1 (11 points, mu_1 ascending).
    n = 3: the 13-point set of corners (1,0,0), (0,1,0), (0,0,1), then (.1,.1,.8), (.1,.8,.1),
    (.8,.1,.1), (.2,.2,.6), (.2,.6,.2), (.6,.2,.2), (.2,.4,.4), (.4,.2,.4), (.4,.4,.2) and
    (1/3,1/3,1/3).
    n >= 4: simplex_lattice(n, d) with the largest d <= 4 that keeps at most 200 points
    (d = 4 up to n = 6, d = 3 up to n = 9, d = 2 up to n = 19, corners only beyond).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise BonesoupError(f"invalid number of objectives {n!r}: a preference grid needs n >= 2")
    if n == 2:
        return [np.array([i / 10, (10 - i) / 10]) for i in range(11)]
    if n == 3:
        return [np.array(point, dtype=np.float64) for point in _THREE_OBJECTIVE_GRID]
    divisions = 4
    while divisions > 1 and math.comb(n + divisions - 1, n - 1) > MAX_LATTICE_GRID_POINTS:
        divisions -= 1
    return simplex_lattice(n, divisions)
