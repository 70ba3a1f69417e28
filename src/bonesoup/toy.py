"""Toy benchmark: soups of concave quadratic rewards, where every optimum has a closed form.

Objective i has reward r_i(theta) = -(theta - a_i)^T H_i (theta - a_i) on a parameter
theta in R^d, with centre a_i and positive definite curvature H_i. For non-negative weights w
(not all zero) the maximiser of sum_i w_i r_i is

    theta*(w) = (sum_i w_i H_i)^{-1} sum_i w_i H_i a_i.

Backbone j is theta*(B[j]) (it "trains" on h_j = sum_i B[j, i] r_i), the oracle for a
preference mu is theta*(mu), and a soup is sum_j c_j theta_j with the coefficients of
`bonesoup.coefficients`. Regret is g_mu(theta*(mu)) - g_mu(soup) with g_mu = sum_i mu_i r_i,
which equals (soup - theta*(mu))^T H_mu (soup - theta*(mu)) with H_mu = sum_i mu_i H_i.

For two objectives the benchmark reports the mu_1 intervals where Bone Soups' regret is
strictly below Rewarded Soups', next to the interval ((1 - s)/2, (1 + s)/2) with
s = sqrt(2 beta^2 - 2 beta + 1) that Xie et al. (Bone Soups, ACL 2025) state.
Command: bonesoup toy --beta 0.6 0.7 0.8 --json
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from bonesoup.backbone import circulant_backbone_matrix
from bonesoup.coefficients import METHODS, soup_coefficients
from bonesoup.errors import BonesoupError
from bonesoup.preferences import preference_grid, simplex_lattice

logger = logging.getLogger(__name__)

DEFAULT_BETAS = (0.6, 0.7, 0.8)
DEFAULT_FINE_POINTS = 101
# Lattice divisions of the fine grid for n >= 3 objectives (231 points for n = 3).
FINE_LATTICE_DIVISIONS = 20
# Bone Soups counts as better at mu only if its regret is below Rewarded Soups' by more than
# this absolute margin plus REGRET_RELATIVE_TOLERANCE times Rewarded Soups' regret.
REGRET_ABSOLUTE_TOLERANCE = 1e-12
REGRET_RELATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True, eq=False)
class QuadraticRewards:
    """n concave quadratic rewards r_i(theta) = -(theta - a_i)^T H_i (theta - a_i)."""

    centers: np.ndarray  # shape (n, d): a_i, the maximiser of r_i
    curvatures: np.ndarray  # shape (n, d, d): H_i, symmetric positive definite

    def __post_init__(self) -> None:
        centers = np.asarray(self.centers, dtype=np.float64)
        curvatures = np.asarray(self.curvatures, dtype=np.float64)
        if centers.ndim != 2 or curvatures.shape != (*centers.shape, centers.shape[1]):
            raise BonesoupError(
                f"invalid quadratics: centers have shape {centers.shape} and curvatures "
                f"{curvatures.shape}; use (n, d) and (n, d, d)"
            )
        for i, curvature in enumerate(curvatures):
            if not np.allclose(curvature, curvature.T) or np.linalg.eigvalsh(curvature)[0] <= 0:
                raise BonesoupError(
                    f"invalid curvature H_{i + 1} {curvature.tolist()}: it must be symmetric "
                    "positive definite so that r_i is strictly concave"
                )
        object.__setattr__(self, "centers", centers)
        object.__setattr__(self, "curvatures", curvatures)

    @property
    def n(self) -> int:
        """Number of objectives."""
        return self.centers.shape[0]

    def rewards(self, theta: np.ndarray) -> np.ndarray:
        """Return r(theta), shape (n,), for theta of shape (d,)."""
        offsets = np.asarray(theta) - self.centers  # (n, d)
        return -np.einsum("id,ide,ie->i", offsets, self.curvatures, offsets)

    def optimum(self, weights: np.ndarray) -> np.ndarray:
        """Return theta*(w) = (sum_i w_i H_i)^{-1} sum_i w_i H_i a_i, shape (d,).

        weights: shape (n,), non-negative and not all zero, so sum_i w_i H_i is positive
        definite.
        """
        weights = np.asarray(weights, dtype=np.float64)
        curvature = np.einsum("i,ide->de", weights, self.curvatures)
        target = np.einsum("i,ide,ie->d", weights, self.curvatures, self.centers)
        return np.linalg.solve(curvature, target)

    def regret(self, preference: np.ndarray, theta: np.ndarray) -> float:
        """Return max_x sum_i mu_i r_i(x) - sum_i mu_i r_i(theta), which is >= 0."""
        mu = np.asarray(preference, dtype=np.float64)
        best = self.optimum(mu)
        return float(mu @ self.rewards(best) - mu @ self.rewards(theta))


def default_quadratics(n: int = 2) -> QuadraticRewards:
    """Return the fixed quadratics of the benchmark for n = 2 (d = 2) or n = 3 (d = 3).

    Centres are the unit vectors e_i. Curvatures differ in scale and orientation:
    n = 2: H_1 = [[2, 0.6], [0.6, 0.5]], H_2 = [[0.5, -0.2], [-0.2, 1.5]].
    n = 3: see the arrays below.
    """
    if n == 2:
        curvatures = [[[2.0, 0.6], [0.6, 0.5]], [[0.5, -0.2], [-0.2, 1.5]]]
    elif n == 3:
        curvatures = [
            [[2.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 0.5]],
            [[0.6, 0.0, -0.2], [0.0, 1.5, 0.3], [-0.2, 0.3, 1.0]],
            [[1.0, -0.4, 0.1], [-0.4, 0.8, 0.0], [0.1, 0.0, 2.5]],
        ]
    else:
        raise BonesoupError(
            f"no fixed quadratics for {n} objectives: fixed ones exist for n = 2 and 3; "
            "pass --seed to draw random ones"
        )
    return QuadraticRewards(centers=np.eye(n), curvatures=np.array(curvatures))


def random_quadratics(
    n: int, dim: int, seed: int, curvature_spread: float = 4.0
) -> QuadraticRewards:
    """Draw n quadratics in R^dim: a_i ~ N(0, I), H_i = Q_i diag(lambda) Q_i^T.

    Q_i is a random rotation and the eigenvalues lambda are log-uniform in
    [1 / curvature_spread, curvature_spread].
    """
    if dim < 1 or n < 2:
        raise BonesoupError(f"invalid toy size n={n}, dim={dim}: use n >= 2 and dim >= 1")
    generator = np.random.default_rng(seed)
    centers = generator.standard_normal((n, dim))
    curvatures = []
    for _ in range(n):
        rotation, _ = np.linalg.qr(generator.standard_normal((dim, dim)))
        log_spread = math.log(curvature_spread)
        eigenvalues = np.exp(generator.uniform(-log_spread, log_spread, dim))
        curvature = rotation @ np.diag(eigenvalues) @ rotation.T
        curvatures.append((curvature + curvature.T) / 2)
    return QuadraticRewards(centers=centers, curvatures=np.array(curvatures))


def backbone_optima(quadratics: QuadraticRewards, matrix: np.ndarray) -> np.ndarray:
    """Return theta_j = theta*(B[j]) for every row of B, shape (n, d)."""
    return np.stack([quadratics.optimum(row) for row in np.asarray(matrix)])


def soup_parameters(
    quadratics: QuadraticRewards, preference: np.ndarray, method: str, beta: float
) -> np.ndarray:
    """Return the soup sum_j c_j theta_j of a method for one preference, shape (d,)."""
    coefficients = soup_coefficients(preference, method=method, beta=beta)
    backbones = backbone_optima(quadratics, coefficients.backbone_matrix)
    return coefficients.backbones @ backbones


def paper_interval(beta: float) -> tuple[float, float]:
    """Return ((1 - s)/2, (1 + s)/2) with s = sqrt(2 beta^2 - 2 beta + 1).

    Xie et al. (Bone Soups, ACL 2025) state that for n = 2 and beta in (1/2, 1) Bone Soups
    beats Rewarded Soups for every mu_1 in this interval.
    """
    s = math.sqrt(2 * beta**2 - 2 * beta + 1)
    return (1 - s) / 2, (1 + s) / 2


def fine_grid(n: int, points: int = DEFAULT_FINE_POINTS) -> list[np.ndarray]:
    """Return the regret grid: `points` evenly spaced mu_1 for n = 2, a lattice for n >= 3."""
    if n == 2:
        if points < 3:
            raise BonesoupError(f"invalid fine grid size {points}: use at least 3 points")
        return [np.array([t, 1.0 - t]) for t in np.linspace(0.0, 1.0, points)]
    return simplex_lattice(n, FINE_LATTICE_DIVISIONS)


def is_strictly_lower(regret: float, reference: float) -> bool:
    """Return whether regret < reference by more than the rounding tolerance."""
    margin = REGRET_ABSOLUTE_TOLERANCE + REGRET_RELATIVE_TOLERANCE * abs(reference)
    return regret < reference - margin


def better_intervals(
    quadratics: QuadraticRewards,
    beta: float,
    grid: list[np.ndarray],
    better: list[bool] | None = None,
) -> list[dict[str, list[float]]]:
    """Find the mu_1 intervals where bone-soup's regret is strictly below rewarded-soup's.

    n = 2 only. Each interval gives "grid", the first and last grid values of mu_1 inside it,
    and "boundaries", the crossings of the two regret curves. Brent's method locates each
    crossing between the grid points on either side. An interval that reaches 0 or 1 ends
    there.
    better: precomputed flags per grid point, as from is_strictly_lower; computed if None.
    """
    mu1 = [float(mu[0]) for mu in grid]
    if better is None:
        better = [_bone_soup_is_better(quadratics, mu, beta) for mu in grid]
    intervals = []
    start = None
    for index, flag in enumerate([*better, False]):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            end = index - 1
            low = _crossing(quadratics, beta, mu1, start - 1, start)
            high = _crossing(quadratics, beta, mu1, end + 1, end)
            intervals.append({"grid": [mu1[start], mu1[end]], "boundaries": [low, high]})
            start = None
    return intervals


def _bone_soup_is_better(quadratics: QuadraticRewards, mu: np.ndarray, beta: float) -> bool:
    return is_strictly_lower(
        _regret(quadratics, mu, "bone-soup", beta), _regret(quadratics, mu, "rewarded-soup", beta)
    )


def _regret(quadratics: QuadraticRewards, mu: np.ndarray, method: str, beta: float) -> float:
    return quadratics.regret(mu, soup_parameters(quadratics, mu, method, beta))


def _crossing(
    quadratics: QuadraticRewards, beta: float, mu1: list[float], outside: int, inside: int
) -> float:
    if outside < 0 or outside >= len(mu1):
        return mu1[inside]

    def gap(t: float) -> float:
        mu = np.array([t, 1.0 - t])
        return _regret(quadratics, mu, "rewarded-soup", beta) - _regret(
            quadratics, mu, "bone-soup", beta
        )

    if gap(mu1[outside]) * gap(mu1[inside]) > 0:
        # NOTE: a tie region (equal regrets within rounding) has no sign change; the grid
        # point outside the interval is returned as its boundary.
        return mu1[outside]
    return float(brentq(gap, mu1[outside], mu1[inside], xtol=1e-12))


def _summarise(regrets: np.ndarray, grid: list[np.ndarray]) -> dict[str, object]:
    worst = int(np.argmax(regrets))
    return {
        "mean": float(regrets.mean()),
        "max": float(regrets.max()),
        "argmax_preference": grid[worst].tolist(),
    }


def compare_methods(
    quadratics: QuadraticRewards, beta: float, points: int = DEFAULT_FINE_POINTS
) -> dict[str, object]:
    """Compare the soups of every method with the oracle for one beta.

    Returns a JSON-ready dict with per-method regret summaries over the fine grid, regret at
    the corners e_i, fronts (reward vectors over preference_grid(n)), the share of fine-grid
    preferences where bone-soup's regret is strictly below rewarded-soup's and, for n = 2, the
    intervals of mu_1 where it is and the interval stated by Xie et al.
    """
    n = quadratics.n
    circulant_backbone_matrix(n, beta)  # validates beta before any solve
    grid = fine_grid(n, points)
    regrets = {
        method: np.array([_regret(quadratics, mu, method, beta) for mu in grid])
        for method in METHODS
    }
    better = [
        is_strictly_lower(bone, rewarded)
        for bone, rewarded in zip(regrets["bone-soup"], regrets["rewarded-soup"])
    ]
    corners = np.eye(n)
    result: dict[str, object] = {
        "beta": beta,
        "regret": {method: _summarise(values, grid) for method, values in regrets.items()},
        "corner_regret": {
            method: [_regret(quadratics, corner, method, beta) for corner in corners]
            for method in METHODS
        },
        "bone_soup_better_fraction": float(np.mean(better)),
        "fine_grid_points": len(grid),
        "fronts": _fronts(quadratics, beta),
    }
    if n == 2:
        low, high = paper_interval(beta)
        inside = [flag for mu, flag in zip(grid, better) if low < mu[0] < high]
        result["bone_soup_better_intervals"] = better_intervals(quadratics, beta, grid, better)
        result["paper_interval"] = [low, high]
        result["contains_paper_interval"] = bool(inside) and all(inside)
    return result


def _fronts(quadratics: QuadraticRewards, beta: float) -> dict[str, object]:
    grid = preference_grid(quadratics.n)
    fronts: dict[str, object] = {"preferences": [mu.tolist() for mu in grid]}
    fronts["oracle"] = [quadratics.rewards(quadratics.optimum(mu)).tolist() for mu in grid]
    for method in METHODS:
        fronts[method] = [
            quadratics.rewards(soup_parameters(quadratics, mu, method, beta)).tolist()
            for mu in grid
        ]
    return fronts


def run_toy(
    betas: tuple[float, ...] = DEFAULT_BETAS,
    quadratics: QuadraticRewards | None = None,
    points: int = DEFAULT_FINE_POINTS,
    seed: int | None = None,
) -> dict[str, object]:
    """Run the benchmark for every beta and return one JSON-ready dict.

    quadratics defaults to default_quadratics(2). results is keyed by f"{beta:g}".
    """
    if quadratics is None:
        quadratics = default_quadratics(2)
    results = {}
    for beta in betas:
        logger.info("toy benchmark: beta %g, %d objectives", beta, quadratics.n)
        results[f"{beta:g}"] = compare_methods(quadratics, beta, points)
    return {
        "quadratics": {
            "centers": quadratics.centers.tolist(),
            "curvatures": quadratics.curvatures.tolist(),
            "seed": seed,
        },
        "objectives": quadratics.n,
        "dim": int(quadratics.centers.shape[1]),
        "results": results,
    }
