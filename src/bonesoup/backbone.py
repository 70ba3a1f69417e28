"""Backbone matrix B: row j gives the mixture of rewards that backbone j is trained on.

Backbone j optimises h_j = sum_i B[j, i] r_i. Every row lies on the simplex (non-negative,
summing to 1) and the rows are linearly independent, so that any preference mu can be written
as mu = B^T c and served by the soup sum_j c_j theta_j.

The rule-based choice is the symmetric circulant matrix with beta on the diagonal and
(1 - beta) / (n - 1) elsewhere. Its eigenvalues are 1 (eigenvector: all ones) and
(n beta - 1) / (n - 1) (multiplicity n - 1), so it is singular exactly at beta = 1/n.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from bonesoup.errors import BonesoupError

logger = logging.getLogger(__name__)

# A 2-norm condition number above this makes c = B^{-T} mu large and of mixed sign, so small
# differences between backbones are amplified in the soup. The circulant matrix reaches it
# when |n beta - 1| / (n - 1) < 0.01, for example beta in (0.495, 0.505) for n = 2.
CONDITION_NUMBER_WARNING = 100.0

# Above this, bone-soup coefficients reach thousands and a soup is dominated by the difference of
# near-identical backbones, so it is an error. For n = 2 that is |beta - 0.5| < 5e-5.
CONDITION_NUMBER_MAX = 1e4

ROW_SUM_TOLERANCE = 1e-6

# |n beta - 1| below this is treated as beta = 1/n, where the circulant matrix is singular.
_SINGULAR_BETA_TOLERANCE = 1e-12


def circulant_backbone_matrix(n: int, beta: float) -> np.ndarray:
    """Build the n x n circulant backbone matrix.

    B[j, j] = beta and B[j, i] = (1 - beta) / (n - 1) for i != j, so every row sums to 1.
    beta = 1 gives the identity (the backbones of Rewarded Soups).

    Args:
        n: number of objectives, at least 2.
        beta: diagonal weight in (0, 1], not equal to 1/n (where B is singular).

    Returns:
        float64 array of shape (n, n).

    Raises:
        BonesoupError: n < 2, beta outside (0, 1], or beta = 1/n.
    """
    n = _check_objective_count(n)
    beta = _check_beta(beta, n)
    off_diagonal = (1.0 - beta) / (n - 1)
    matrix = np.full((n, n), off_diagonal, dtype=np.float64)
    np.fill_diagonal(matrix, beta)
    return matrix


def _check_objective_count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise BonesoupError(
            f"invalid number of objectives {n!r}: a backbone matrix needs an integer n >= 2; "
            "give at least two objectives"
        )
    return int(n)


def _check_beta(beta: float, n: int) -> float:
    try:
        value = float(beta)
    except (TypeError, ValueError):
        raise BonesoupError(
            f"invalid beta {beta!r}: beta must be a number in (0, 1]; pass for example 0.7"
        ) from None
    if not np.isfinite(value) or not 0.0 < value <= 1.0:
        raise BonesoupError(
            f"invalid beta {beta!r}: beta must be in (0, 1]; pass for example 0.6, 0.7 or 0.8"
        )
    if abs(n * value - 1.0) < _SINGULAR_BETA_TOLERANCE:
        raise BonesoupError(
            f"invalid beta {beta!r}: beta = 1/n = 1/{n} makes the backbone matrix singular, so "
            f"no soup can reach most preferences; use beta in (0, 1] away from 1/{n}, e.g. 0.7"
        )
    return value


def check_backbone_matrix(matrix: object) -> np.ndarray:
    """Validate a user-supplied backbone matrix and return it as float64.

    Rules: square n x n with n >= 2, finite entries, non-negative rows that each sum to 1
    within 1e-6, and full rank (linearly independent rows).

    Raises:
        BonesoupError: naming the rule that fails and the offending row or value.
    """
    try:
        array = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise BonesoupError(
            f"invalid backbone matrix {matrix!r}: it must be n rows of n numbers each; "
            "give a square table of numbers"
        ) from None
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] < 2:
        raise BonesoupError(
            f"invalid backbone matrix of shape {array.shape}: it must be square n x n with "
            "n >= 2, one row per backbone and one column per objective"
        )
    if not np.all(np.isfinite(array)):
        raise BonesoupError(
            "invalid backbone matrix: it contains NaN or infinity; use finite numbers"
        )
    _check_rows_on_simplex(array)
    rank = int(np.linalg.matrix_rank(array))
    if rank < array.shape[0]:
        raise BonesoupError(
            f"invalid backbone matrix: its rows are linearly dependent (rank {rank} < "
            f"{array.shape[0]}), so B^T c = mu has no unique solution; make the rows independent"
        )
    return array


def _check_rows_on_simplex(array: np.ndarray) -> None:
    for j, row in enumerate(array):
        if np.any(row < 0):
            raise BonesoupError(
                f"invalid backbone matrix: row {j} {row.tolist()} has a negative entry; "
                "each row is a mixture of rewards, so use non-negative weights"
            )
        total = float(row.sum())
        if abs(total - 1.0) > ROW_SUM_TOLERANCE:
            raise BonesoupError(
                f"invalid backbone matrix: row {j} {row.tolist()} sums to {total:.9g}, not 1 "
                f"(tolerance {ROW_SUM_TOLERANCE:g}); divide the row by its sum"
            )


def condition_number(matrix: np.ndarray) -> float:
    """Return the 2-norm condition number sigma_max / sigma_min of a square matrix.

    Singular matrices return inf.
    """
    return float(np.linalg.cond(np.asarray(matrix, dtype=np.float64), 2))


def load_backbone_matrix(path: str | Path) -> np.ndarray:
    """Load and validate a backbone matrix from a JSON or CSV file.

    JSON: a list of rows, or an object with the rows under "backbone_matrix" or "matrix".
    CSV (any other suffix): one row per line, comma-separated numbers; blank lines and lines
    starting with "#" are skipped.

    Raises:
        BonesoupError: the file is missing or unreadable, or the matrix is invalid.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise BonesoupError(
            f"backbone matrix file {str(file)!r} could not be read ({error.strerror}); "
            "pass an existing JSON or CSV file"
        ) from None
    if file.suffix.lower() == ".json":
        rows = _parse_json_rows(text, file)
    else:
        rows = _parse_csv_rows(text, file)
    return check_backbone_matrix(rows)


def _parse_json_rows(text: str, file: Path) -> object:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise BonesoupError(
            f"backbone matrix file {str(file)!r} is not valid JSON ({error.msg} at line "
            f"{error.lineno}); write a list of rows such as [[0.7, 0.3], [0.3, 0.7]]"
        ) from None
    if isinstance(data, dict):
        for key in ("backbone_matrix", "matrix"):
            if key in data:
                return data[key]
        raise BonesoupError(
            f"backbone matrix file {str(file)!r} has no 'backbone_matrix' or 'matrix' key; "
            "write a list of rows or put the rows under one of those keys"
        )
    return data


def _parse_csv_rows(text: str, file: Path) -> list[list[float]]:
    lines = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    rows = []
    for line_number, cells in enumerate(csv.reader(lines), start=1):
        try:
            rows.append([float(cell) for cell in cells])
        except ValueError:
            raise BonesoupError(
                f"backbone matrix file {str(file)!r}: row {line_number} {cells} contains a "
                "value that is not a number; write comma-separated numbers only"
            ) from None
    return rows
