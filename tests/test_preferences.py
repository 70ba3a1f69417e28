"""Tests for preference validation, parsing and evaluation grids."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bonesoup.errors import BonesoupError
from bonesoup.preferences import (
    check_preference,
    parse_preference,
    preference_grid,
    simplex_lattice,
)


def test_check_preference_returns_float_array():
    mu = check_preference([0.2, 0.8])
    assert mu.dtype == np.float64
    np.testing.assert_allclose(mu, [0.2, 0.8])


def test_check_preference_renormalises_within_tolerance():
    mu = check_preference([0.5, 0.5000005])
    assert mu.sum() == pytest.approx(1.0, abs=1e-15)


def test_check_preference_accepts_length_n():
    np.testing.assert_allclose(check_preference([0.2, 0.5, 0.3], n=3), [0.2, 0.5, 0.3])


@pytest.mark.parametrize(
    ("values", "n", "message"),
    [
        ([0.2, 0.3, 0.5], 2, "has 3 weights but there are 2 objectives"),
        ([0.5, float("nan")], None, "finite"),
        ([0.5, float("inf")], None, "finite"),
        ([1.2, -0.2], None, "non-negative"),
        ([0.5, 0.6], None, "sum to 1.1"),
        ([0.5, 0.5000100], None, "not 1"),
        ([1.0], None, "at least two"),
        ([], None, "at least two"),
        ([[0.5, 0.5]], None, "flat list"),
        (["a", "b"], None, "list of numbers"),
    ],
)
def test_check_preference_rejects(values, n, message):
    with pytest.raises(BonesoupError, match=message):
        check_preference(values, n)


def test_check_preference_message_names_value():
    with pytest.raises(BonesoupError) as error:
        check_preference([0.7, 0.7])
    assert "0.7,0.7" in str(error.value)
    assert "divide each weight by the sum" in str(error.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.2,0.8", [0.2, 0.8]),
        (" [0.2, 0.8] ", [0.2, 0.8]),
        ("1,0", [1.0, 0.0]),
        ("1/3,1/3,1/3", [1 / 3, 1 / 3, 1 / 3]),
        ("0.25,1/4,0.5", [0.25, 0.25, 0.5]),
    ],
)
def test_parse_preference(text, expected):
    np.testing.assert_allclose(parse_preference(text), expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("0.2,abc", "'abc' is not a number"),
        ("0.2,,0.8", "'' is not a number"),
        ("1/0,1", "'1/0' is not a number"),
        ("0.2,0.7", "sum to 0.9"),
        ("0.2;0.8", "not a number"),
    ],
)
def test_parse_preference_rejects(text, message):
    with pytest.raises(BonesoupError, match=message):
        parse_preference(text)


def test_parse_preference_checks_length():
    with pytest.raises(BonesoupError, match="give exactly 3 weights"):
        parse_preference("0.2,0.8", n=3)


def test_grid_two_objectives():
    grid = preference_grid(2)
    assert len(grid) == 11
    for i, mu in enumerate(grid):
        assert mu[0] == pytest.approx(i / 10)
        assert mu[1] == pytest.approx(1 - i / 10)
    assert [mu[0] for mu in grid] == sorted(mu[0] for mu in grid)


def test_grid_three_objectives_order():
    expected = [
        (1, 0, 0), (0, 1, 0), (0, 0, 1),
        (0.1, 0.1, 0.8), (0.1, 0.8, 0.1), (0.8, 0.1, 0.1),
        (0.2, 0.2, 0.6), (0.2, 0.6, 0.2), (0.6, 0.2, 0.2),
        (0.2, 0.4, 0.4), (0.4, 0.2, 0.4), (0.4, 0.4, 0.2),
        (1 / 3, 1 / 3, 1 / 3),
    ]  # fmt: skip
    grid = preference_grid(3)
    assert len(grid) == 13
    for mu, point in zip(grid, expected):
        np.testing.assert_allclose(mu, point)


@pytest.mark.parametrize(
    ("n", "size"), [(4, 35), (6, 126), (7, 84), (9, 165), (10, 55), (19, 190), (20, 20)]
)
def test_grid_many_objectives_size(n, size):
    grid = preference_grid(n)
    assert len(grid) == size
    for mu in grid:
        check_preference(mu, n)


@pytest.mark.parametrize("n", [1, 0, 2.5])
def test_grid_rejects_bad_n(n):
    with pytest.raises(BonesoupError, match="n >= 2"):
        preference_grid(n)


@pytest.mark.parametrize(("n", "divisions"), [(2, 1), (2, 10), (3, 4), (4, 3), (5, 5)])
def test_lattice_points(n, divisions):
    points = simplex_lattice(n, divisions)
    assert len(points) == math.comb(n + divisions - 1, n - 1)
    assert len({tuple(point) for point in points}) == len(points)
    for point in points:
        assert point.shape == (n,)
        assert point.sum() == pytest.approx(1.0)
        assert np.all(point >= 0)
        np.testing.assert_allclose(point * divisions, np.round(point * divisions), atol=1e-12)
    keys = [tuple(point) for point in points]
    assert keys == sorted(keys)


def test_lattice_includes_corners():
    points = {tuple(point) for point in simplex_lattice(4, 2)}
    for corner in np.eye(4):
        assert tuple(corner) in points


def test_lattice_matches_two_objective_grid():
    for lattice_point, grid_point in zip(simplex_lattice(2, 10), preference_grid(2)):
        np.testing.assert_allclose(lattice_point, grid_point)


@pytest.mark.parametrize(("n", "divisions"), [(1, 3), (3, 0), (3, -1), (3, 2.0)])
def test_lattice_rejects_bad_arguments(n, divisions):
    with pytest.raises(BonesoupError, match="invalid"):
        simplex_lattice(n, divisions)
