"""Soup coefficients: how much of each backbone goes into the model served for a preference.

Backbone j is trained on h_j = sum_i B[j, i] r_i. If rewards were linear in the weights, the
soup theta = sum_j c_j theta_j would optimise sum_j c_j h_j = sum_i (B^T c)_i r_i, so Bone
Soups solves B^T c = mu. The coefficients may be negative, and they sum to 1 because every row
of B sums to 1 (B 1 = 1 gives 1^T B^{-T} = 1^T).

Methods:
    bone-soup: c = B^{-T} mu with B the circulant matrix for beta, or a given matrix.
    rewarded-soup: backbones trained on one reward each (B = I), c = mu.
    aba: Bone Soups backbones merged with c = mu, without the inverse (an ablation).
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass

import numpy as np

from bonesoup.backbone import (
    CONDITION_NUMBER_MAX,
    CONDITION_NUMBER_WARNING,
    check_backbone_matrix,
    circulant_backbone_matrix,
    condition_number,
)
from bonesoup.errors import BonesoupError
from bonesoup.preferences import check_preference

logger = logging.getLogger(__name__)

METHODS = ("bone-soup", "rewarded-soup", "aba")


@dataclass(frozen=True, eq=False)
class SoupCoefficients:
    """Coefficients of one soup: theta = base * theta_0 + sum_j backbones[j] * theta_j.

    backbones + base always sum to 1 (up to rounding), so the soup equals
    theta_0 + sum_j backbones[j] (theta_j - theta_0).
    """

    backbones: np.ndarray  # shape (n,), one coefficient per backbone, may be negative
    base: float  # coefficient on theta_0; 0 without extrapolation
    condition_number: float  # 2-norm condition number of the backbone matrix
    method: str
    preference: np.ndarray | None = None  # shape (n,)
    backbone_matrix: np.ndarray | None = None  # shape (n, n); identity for rewarded-soup
    extrapolation: np.ndarray | None = None  # shape (n,), the factors k_i, or None

    @property
    def weights(self) -> np.ndarray:
        """Coefficients on the backbones, shape (n,); the same array as `backbones`."""
        return self.backbones

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict.

        "coefficients" lists the n backbone coefficients, followed by theta_0's coefficient
        when extrapolating.
        """
        coefficients = self.backbones.tolist()
        if self.extrapolation is not None:
            coefficients.append(self.base)
        return {
            "method": self.method,
            "preference": None if self.preference is None else self.preference.tolist(),
            "coefficients": coefficients,
            "backbones": self.backbones.tolist(),
            "base": self.base,
            "condition_number": self.condition_number,
            "backbone_matrix": _to_list(self.backbone_matrix),
            "extrapolation": _to_list(self.extrapolation),
        }


def _to_list(array: np.ndarray | None) -> list | None:
    return None if array is None else array.tolist()


def solve_coefficients(matrix: np.ndarray, preference: np.ndarray) -> np.ndarray:
    """Solve B^T c = mu for the soup coefficients.

    Args:
        matrix: backbone matrix B, shape (n, n), rows on the simplex, full rank.
        preference: mu, shape (n,).

    Returns:
        c, shape (n,), with B^T c = mu and sum_j c_j = sum_i mu_i.
    """
    return np.linalg.solve(np.asarray(matrix, dtype=np.float64).T, np.asarray(preference))


def circulant_coefficients(preference: np.ndarray, beta: float) -> np.ndarray:
    """Closed-form Bone Soups coefficients for the circulant matrix.

    c_j = ((n - 1) mu_j - (1 - beta)) / (n beta - 1) for a preference summing to 1.

    Args:
        preference: mu, shape (n,), on the simplex.
        beta: diagonal of the circulant matrix, beta != 1/n.

    Returns:
        c, shape (n,).
    """
    mu = np.asarray(preference, dtype=np.float64)
    n = mu.size
    return ((n - 1) * mu - (1.0 - beta)) / (n * beta - 1.0)


def check_method(method: str) -> str:
    """Return method if it is one of METHODS, else raise BonesoupError naming the closest."""
    if method in METHODS:
        return method
    close = difflib.get_close_matches(str(method).lower(), METHODS, n=1, cutoff=0.0)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise BonesoupError(
        f"unknown soup method {method!r}: {hint}valid methods are {', '.join(METHODS)}"
    )


def check_extrapolation(factors: object, n: int) -> np.ndarray:
    """Validate per-objective extrapolation factors k_i: n finite numbers, each >= 1.

    Returns:
        float64 array of shape (n,).
    """
    try:
        array = np.asarray(factors, dtype=np.float64)
    except (TypeError, ValueError):
        raise BonesoupError(
            f"invalid extrapolation factors {factors!r}: give {n} numbers >= 1, one per objective"
        ) from None
    if array.ndim != 1 or array.size != n:
        raise BonesoupError(
            f"invalid extrapolation factors {factors!r}: give exactly {n} numbers, one per "
            "objective (use 1 for no extrapolation)"
        )
    if not np.all(np.isfinite(array)) or np.any(array < 1.0):
        raise BonesoupError(
            f"invalid extrapolation factors {array.tolist()}: each factor k_i must be a finite "
            "number >= 1 (1 means no extrapolation); raise the factors below 1"
        )
    return array


def soup_coefficients(
    preference: object,
    method: str = "bone-soup",
    beta: float | None = None,
    matrix: object | None = None,
    extrapolation: object | None = None,
) -> SoupCoefficients:
    """Compute the soup coefficients that serve a preference.

    Without extrapolation the backbone coefficients are c = B^{-T} mu (bone-soup) or c = mu
    (rewarded-soup, aba), and base = 0.

    With factors k (shape (n,), k_i >= 1) each objective's direction is pushed away from
    theta_0: the coefficient on backbone j is sum_i mu_i k_i M[j, i] and on theta_0 it is
    sum_i mu_i (1 - k_i), where M = B^{-T} for bone-soup (B^{-1} for the symmetric circulant
    matrix) and M = I for rewarded-soup and aba. Column i of M contains the coefficients of the
    soup for objective i alone, so the result is
    theta_0 + sum_i mu_i k_i (theta_soup(e_i) - theta_0).

    Args:
        preference: mu, n weights on the simplex.
        method: one of METHODS.
        beta: diagonal of the circulant backbone matrix. Required for bone-soup and aba unless
            matrix is given; validated but unused for rewarded-soup.
        matrix: a backbone matrix (n, n) used in place of the circulant one.
        extrapolation: factors k, n numbers >= 1, or None.

    Returns:
        SoupCoefficients. A logging warning is emitted when bone-soup inverts a matrix with
        condition number above CONDITION_NUMBER_WARNING; above CONDITION_NUMBER_MAX it is an error.

    Raises:
        BonesoupError: invalid preference, beta, matrix, factors or method, or a bone-soup
            matrix too ill-conditioned to invert usefully.
    """
    method = check_method(method)
    mu = check_preference(preference)
    n = mu.size
    backbone_matrix = _resolve_backbone_matrix(method, n, beta, matrix)
    condition = condition_number(backbone_matrix)
    if method == "bone-soup":
        if condition > CONDITION_NUMBER_MAX:
            raise BonesoupError(
                f"backbone matrix has condition number {condition:.4g} > {CONDITION_NUMBER_MAX:g}: "
                f"solving B^T c = mu would give coefficients of order {condition:.2g}; choose "
                f"beta further from 1/{n} (0.6 to 0.8 are typical) or a better-conditioned matrix"
            )
        if condition > CONDITION_NUMBER_WARNING:
            logger.warning(
                "backbone matrix has condition number %.4g > %g: the coefficients are large "
                "and amplify differences between backbones; choose beta further from 1/%d",
                condition,
                CONDITION_NUMBER_WARNING,
                n,
            )
        mixing = np.linalg.inv(backbone_matrix.T)
    else:
        mixing = np.eye(n)
    factors = None if extrapolation is None else check_extrapolation(extrapolation, n)
    backbones, base = _mix(mixing, mu, factors)
    return SoupCoefficients(
        backbones=_read_only(backbones),
        base=base,
        condition_number=condition,
        method=method,
        preference=_read_only(mu),
        backbone_matrix=_read_only(backbone_matrix),
        extrapolation=None if factors is None else _read_only(factors),
    )


def _resolve_backbone_matrix(
    method: str, n: int, beta: float | None, matrix: object | None
) -> np.ndarray:
    if beta is not None and matrix is not None:
        raise BonesoupError("both beta and a backbone matrix were given; pass only one of them")
    if matrix is not None:
        checked = check_backbone_matrix(matrix)
        if checked.shape[0] != n:
            raise BonesoupError(
                f"backbone matrix is {checked.shape[0]} x {checked.shape[0]} but the preference "
                f"has {n} weights; give one weight per objective"
            )
        backbones = checked
    elif beta is not None:
        backbones = circulant_backbone_matrix(n, beta)
    elif method == "rewarded-soup":
        backbones = np.eye(n)
    else:
        raise BonesoupError(
            f"method {method!r} needs beta (for example 0.7) or a backbone matrix; pass one"
        )
    if method == "rewarded-soup":
        return np.eye(n)
    return backbones


def _mix(
    mixing: np.ndarray, mu: np.ndarray, factors: np.ndarray | None
) -> tuple[np.ndarray, float]:
    """Return (backbone coefficients M (k * mu), theta_0 coefficient sum_i mu_i (1 - k_i))."""
    if factors is None:
        return mixing @ mu, 0.0
    return mixing @ (mu * factors), float(np.sum(mu * (1.0 - factors)))


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.array(array, dtype=np.float64)
    array.setflags(write=False)
    return array
