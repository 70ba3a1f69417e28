"""Tests for the backbone matrix: circulant construction, validation, loading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bonesoup.backbone import (
    CONDITION_NUMBER_WARNING,
    check_backbone_matrix,
    circulant_backbone_matrix,
    condition_number,
    load_backbone_matrix,
)
from bonesoup.errors import BonesoupError


def test_circulant_two_objectives():
    matrix = circulant_backbone_matrix(2, 0.7)
    np.testing.assert_allclose(matrix, [[0.7, 0.3], [0.3, 0.7]])
    assert matrix.dtype == np.float64


def test_circulant_three_objectives():
    matrix = circulant_backbone_matrix(3, 0.6)
    np.testing.assert_allclose(matrix, [[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]])


@pytest.mark.parametrize("n", [2, 3, 5, 8])
@pytest.mark.parametrize("beta", [0.1, 0.6, 0.7, 0.8, 0.95])
def test_circulant_rows_and_eigenvalues(n, beta):
    matrix = circulant_backbone_matrix(n, beta)
    assert matrix.shape == (n, n)
    np.testing.assert_allclose(matrix.sum(axis=1), np.ones(n))
    np.testing.assert_allclose(matrix, matrix.T)
    expected = sorted([1.0] + [(n * beta - 1) / (n - 1)] * (n - 1))
    np.testing.assert_allclose(sorted(np.linalg.eigvalsh(matrix)), expected, atol=1e-12)


def test_circulant_beta_one_is_identity():
    np.testing.assert_array_equal(circulant_backbone_matrix(4, 1.0), np.eye(4))


@pytest.mark.parametrize("beta", [0.0, -0.1, 1.0001, 2, float("nan"), float("inf"), "x", None])
def test_circulant_rejects_beta_out_of_range(beta):
    with pytest.raises(BonesoupError) as error:
        circulant_backbone_matrix(2, beta)
    assert repr(beta) in str(error.value)
    assert "(0, 1]" in str(error.value)


@pytest.mark.parametrize("n", [2, 3, 4, 7])
def test_circulant_rejects_beta_one_over_n(n):
    with pytest.raises(BonesoupError, match="singular"):
        circulant_backbone_matrix(n, 1 / n)


@pytest.mark.parametrize("n", [1, 0, -2, 2.0, True])
def test_circulant_rejects_bad_objective_count(n):
    with pytest.raises(BonesoupError, match="n >= 2"):
        circulant_backbone_matrix(n, 0.7)


@pytest.mark.parametrize("n", [2, 3, 6])
@pytest.mark.parametrize("beta", [0.3, 0.6, 0.7, 0.9])
def test_condition_number_closed_form(n, beta):
    # Eigenvalues 1 and (n beta - 1)/(n - 1), and B is symmetric, so the 2-norm condition
    # number is the ratio of the larger to the smaller absolute eigenvalue.
    other = abs(n * beta - 1) / (n - 1)
    expected = max(1.0, other) / min(1.0, other)
    assert condition_number(circulant_backbone_matrix(n, beta)) == pytest.approx(expected)


def test_condition_number_warning_threshold():
    assert CONDITION_NUMBER_WARNING == 100.0
    assert condition_number(circulant_backbone_matrix(2, 0.7)) < CONDITION_NUMBER_WARNING
    assert condition_number(circulant_backbone_matrix(2, 0.504)) > CONDITION_NUMBER_WARNING


def test_check_matrix_accepts_non_symmetric():
    rows = [[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.0, 0.25, 0.75]]
    checked = check_backbone_matrix(rows)
    assert checked.dtype == np.float64
    np.testing.assert_array_equal(checked, np.array(rows))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[0.7, 0.3]], "square"),
        ([[1.0]], "n >= 2"),
        ([0.5, 0.5], "square"),
        ([[0.7, 0.3], [0.3]], "n rows of n numbers"),
        ([["a", 0.3], [0.3, 0.7]], "n rows of n numbers"),
        ([[float("nan"), 1.0], [0.3, 0.7]], "NaN"),
        ([[1.2, -0.2], [0.3, 0.7]], "negative"),
        ([[0.7, 0.4], [0.3, 0.7]], "sums to 1.1"),
        ([[0.5, 0.5], [0.5, 0.5]], "linearly dependent"),
        ([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.25, 0.5, 0.25]], "rank 2 < 3"),
    ],
)
def test_check_matrix_rejects(rows, message):
    with pytest.raises(BonesoupError, match=message):
        check_backbone_matrix(rows)


def test_check_matrix_row_sum_tolerance():
    check_backbone_matrix([[0.7, 0.3 + 5e-7], [0.3, 0.7]])
    with pytest.raises(BonesoupError, match="row 0"):
        check_backbone_matrix([[0.7, 0.3 + 5e-6], [0.3, 0.7]])


def test_load_json_list(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps([[0.8, 0.2], [0.4, 0.6]]))
    np.testing.assert_allclose(load_backbone_matrix(path), [[0.8, 0.2], [0.4, 0.6]])


@pytest.mark.parametrize("key", ["backbone_matrix", "matrix"])
def test_load_json_object(tmp_path, key):
    path = tmp_path / "b.json"
    path.write_text(json.dumps({key: [[0.8, 0.2], [0.4, 0.6]]}))
    np.testing.assert_allclose(load_backbone_matrix(str(path)), [[0.8, 0.2], [0.4, 0.6]])


def test_load_csv_with_comments(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("# backbone rows\n0.6, 0.2, 0.2\n\n0.2,0.6,0.2\n0.2,0.2,0.6\n")
    np.testing.assert_allclose(load_backbone_matrix(path), circulant_backbone_matrix(3, 0.6))


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("b.json", "[[0.8, 0.2], [0.4", "not valid JSON"),
        ("b.json", '{"rows": [[1, 0], [0, 1]]}', "no 'backbone_matrix'"),
        ("b.csv", "0.8,zero\n0.4,0.6\n", "not a number"),
        ("b.csv", "0.8,0.3\n0.4,0.6\n", "sums to"),
    ],
)
def test_load_rejects_bad_file(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(BonesoupError, match=message):
        load_backbone_matrix(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(BonesoupError, match="could not be read"):
        load_backbone_matrix(tmp_path / "absent.json")
