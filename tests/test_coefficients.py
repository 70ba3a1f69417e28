"""Tests for the soup coefficients: hand-worked values, closed form, properties, errors."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest

from bonesoup.backbone import circulant_backbone_matrix
from bonesoup.coefficients import (
    METHODS,
    SoupCoefficients,
    check_method,
    circulant_coefficients,
    solve_coefficients,
    soup_coefficients,
)
from bonesoup.errors import BonesoupError


@pytest.mark.parametrize(
    ("beta", "mu", "expected"),
    [
        (0.7, [0.3, 0.7], [0.0, 1.0]),
        (0.7, [1.0, 0.0], [1.75, -0.75]),
        (0.7, [0.5, 0.5], [0.5, 0.5]),
        (0.6, [1.0, 0.0], [3.0, -2.0]),
        (0.7, [0.2, 0.5, 0.3], [0.0909, 0.6364, 0.2727]),
    ],
)
def test_worked_values(beta, mu, expected):
    soup = soup_coefficients(mu, beta=beta)
    np.testing.assert_allclose(soup.backbones, expected, atol=5e-5)
    assert soup.base == 0.0
    assert soup.method == "bone-soup"


def test_worked_values_exact_fractions():
    # n = 3, beta = 0.7: c = (2 mu - 0.3) / 1.1 = (1/11, 7/11, 3/11).
    soup = soup_coefficients([0.2, 0.5, 0.3], beta=0.7)
    np.testing.assert_allclose(soup.backbones, [1 / 11, 7 / 11, 3 / 11], rtol=1e-12)


def test_condition_number_two_objectives():
    # Eigenvalues 1 and 2 beta - 1 = 0.4.
    assert soup_coefficients([0.5, 0.5], beta=0.7).condition_number == pytest.approx(2.5)


def _random_preference(generator, n):
    mu = generator.dirichlet(np.ones(n))
    if generator.random() < 0.3:  # include faces of the simplex
        mu[generator.integers(n)] = 0.0
        mu /= mu.sum()
    return mu


def _random_beta(generator, n):
    while True:
        beta = float(generator.uniform(0.05, 1.0))
        if abs(n * beta - 1) > 0.05:
            return beta


def test_closed_form_matches_solve():
    generator = np.random.default_rng(0)
    for _ in range(300):
        n = int(generator.integers(2, 9))
        mu = _random_preference(generator, n)
        beta = _random_beta(generator, n)
        solved = soup_coefficients(mu, beta=beta).backbones
        np.testing.assert_allclose(solved, circulant_coefficients(mu, beta), atol=1e-9)


def test_properties_circulant():
    generator = np.random.default_rng(1)
    for _ in range(300):
        n = int(generator.integers(2, 9))
        mu = _random_preference(generator, n)
        beta = _random_beta(generator, n)
        soup = soup_coefficients(mu, beta=beta)
        assert soup.backbones.sum() + soup.base == pytest.approx(1.0, abs=1e-9)
        np.testing.assert_allclose(
            circulant_backbone_matrix(n, beta).T @ soup.backbones, mu, atol=1e-9
        )


def _random_backbone_matrix(generator, n):
    while True:
        rows = generator.dirichlet(np.ones(n) * 0.5, size=n)
        if np.linalg.cond(rows) < 1e4:
            return rows


def test_properties_general_matrix():
    generator = np.random.default_rng(2)
    for _ in range(200):
        n = int(generator.integers(2, 7))
        mu = _random_preference(generator, n)
        matrix = _random_backbone_matrix(generator, n)
        soup = soup_coefficients(mu, matrix=matrix)
        assert soup.backbones.sum() == pytest.approx(1.0, abs=1e-8)
        np.testing.assert_allclose(matrix.T @ soup.backbones, mu, atol=1e-8)
        np.testing.assert_allclose(soup.backbones, solve_coefficients(matrix, mu), atol=1e-10)


def test_extrapolation_properties():
    generator = np.random.default_rng(3)
    for _ in range(200):
        n = int(generator.integers(2, 7))
        mu = _random_preference(generator, n)
        matrix = _random_backbone_matrix(generator, n)
        factors = 1.0 + generator.uniform(0.0, 1.5, n)
        soup = soup_coefficients(mu, matrix=matrix, extrapolation=factors)
        assert soup.backbones.sum() + soup.base == pytest.approx(1.0, abs=1e-8)
        assert soup.base == pytest.approx(float(np.sum(mu * (1 - factors))))
        # The soup direction from theta_0 is sum_i mu_i k_i times objective i's own soup.
        np.testing.assert_allclose(matrix.T @ soup.backbones, mu * factors, atol=1e-8)


def test_extrapolation_hand_values():
    # B^{-1} = [[1.75, -0.75], [-0.75, 1.75]] and mu * k = (0.75, 0.5).
    soup = soup_coefficients([0.5, 0.5], beta=0.7, extrapolation=[1.5, 1.0])
    np.testing.assert_allclose(soup.backbones, [0.9375, 0.3125])
    assert soup.base == pytest.approx(-0.25)


def test_extrapolation_of_one_changes_nothing():
    plain = soup_coefficients([0.2, 0.5, 0.3], beta=0.8)
    unit = soup_coefficients([0.2, 0.5, 0.3], beta=0.8, extrapolation=[1, 1, 1])
    np.testing.assert_allclose(unit.backbones, plain.backbones)
    assert unit.base == 0.0


@pytest.mark.parametrize("method", ["rewarded-soup", "aba"])
def test_extrapolation_without_inverse(method):
    soup = soup_coefficients([0.25, 0.75], method=method, beta=0.7, extrapolation=[2.0, 1.2])
    np.testing.assert_allclose(soup.backbones, [0.5, 0.9])
    assert soup.base == pytest.approx(0.25 * -1.0 + 0.75 * -0.2)


@pytest.mark.parametrize("beta", [None, 0.7])
def test_rewarded_soup(beta):
    soup = soup_coefficients([0.2, 0.5, 0.3], method="rewarded-soup", beta=beta)
    np.testing.assert_allclose(soup.backbones, [0.2, 0.5, 0.3])
    assert soup.condition_number == 1.0
    np.testing.assert_array_equal(soup.backbone_matrix, np.eye(3))


def test_rewarded_soup_still_validates_beta():
    with pytest.raises(BonesoupError, match="beta"):
        soup_coefficients([0.5, 0.5], method="rewarded-soup", beta=1.5)


def test_aba_uses_preference_with_bone_soup_backbones():
    soup = soup_coefficients([1.0, 0.0], method="aba", beta=0.7)
    np.testing.assert_allclose(soup.backbones, [1.0, 0.0])
    assert soup.condition_number == pytest.approx(2.5)
    np.testing.assert_allclose(soup.backbone_matrix, [[0.7, 0.3], [0.3, 0.7]])


def test_methods_tuple():
    assert METHODS == ("bone-soup", "rewarded-soup", "aba")
    for method in METHODS:
        assert check_method(method) == method


@pytest.mark.parametrize(
    ("method", "suggestion"),
    [("bone-sup", "bone-soup"), ("rewarded_soup", "rewarded-soup"), ("ABA", "aba")],
)
def test_unknown_method_suggests_closest(method, suggestion):
    with pytest.raises(BonesoupError) as error:
        soup_coefficients([0.5, 0.5], method=method, beta=0.7)
    assert f"did you mean {suggestion!r}" in str(error.value)
    assert repr(method) in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": 0.5}, "singular"),
        ({"beta": 0.0}, r"\(0, 1\]"),
        ({"beta": 0.7, "extrapolation": [0.9, 1.0]}, ">= 1"),
        ({"beta": 0.7, "extrapolation": [1.0]}, "exactly 2 numbers"),
        ({"beta": 0.7, "extrapolation": [1.0, float("nan")]}, "finite"),
        ({"beta": 0.7, "extrapolation": ["a", 1.0]}, "numbers >= 1"),
        ({"beta": 0.7, "matrix": [[0.7, 0.3], [0.3, 0.7]]}, "only one"),
        ({}, "needs beta"),
        ({"matrix": circulant_backbone_matrix(3, 0.7)}, "3 x 3"),
        ({"matrix": [[0.5, 0.5], [0.5, 0.5]]}, "linearly dependent"),
    ],
)
def test_soup_coefficients_rejects(kwargs, message):
    with pytest.raises(BonesoupError, match=message):
        soup_coefficients([0.4, 0.6], **kwargs)


def test_soup_coefficients_rejects_bad_preference():
    with pytest.raises(BonesoupError, match="sum to 1.1"):
        soup_coefficients([0.5, 0.6], beta=0.7)


def test_condition_number_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="bonesoup.coefficients"):
        soup_coefficients([0.5, 0.5], beta=0.7)
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="bonesoup.coefficients"):
        soup = soup_coefficients([0.5, 0.5], beta=0.501)
    assert soup.condition_number > 100
    assert len(caplog.records) == 1
    assert "condition number" in caplog.records[0].getMessage()


def test_aba_does_not_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="bonesoup.coefficients"):
        soup_coefficients([0.5, 0.5], method="aba", beta=0.501)
    assert not caplog.records


def test_to_dict_without_extrapolation():
    data = soup_coefficients([0.2, 0.8], beta=0.7).to_dict()
    json.dumps(data)
    np.testing.assert_allclose(data["coefficients"], [-0.25, 1.25])
    assert data["base"] == 0.0
    assert data["extrapolation"] is None
    assert data["method"] == "bone-soup"
    np.testing.assert_allclose(data["preference"], [0.2, 0.8])
    np.testing.assert_allclose(data["backbone_matrix"], [[0.7, 0.3], [0.3, 0.7]])
    assert data["condition_number"] == pytest.approx(2.5)


def test_to_dict_appends_base_when_extrapolating():
    data = soup_coefficients([0.5, 0.5], beta=0.7, extrapolation=[1.5, 1.0]).to_dict()
    assert len(data["coefficients"]) == 3
    np.testing.assert_allclose(data["coefficients"], [0.9375, 0.3125, -0.25])
    assert data["extrapolation"] == [1.5, 1.0]


def test_soup_coefficients_is_frozen():
    soup = soup_coefficients([0.2, 0.8], beta=0.7)
    assert isinstance(soup, SoupCoefficients)
    assert soup.weights is soup.backbones
    with pytest.raises(dataclasses.FrozenInstanceError):
        soup.base = 1.0
    with pytest.raises(ValueError, match="read-only"):
        soup.backbones[0] = 0.0


def test_near_singular_matrix_rejected():
    with pytest.raises(BonesoupError, match=r"condition number 5e\+09 > 10000"):
        soup_coefficients([0.2, 0.8], beta=0.5000000001)


def test_near_singular_matrix_allowed_for_aba():
    coefficients = soup_coefficients([0.2, 0.8], method="aba", beta=0.5000000001)
    assert list(coefficients.backbones) == [0.2, 0.8]
