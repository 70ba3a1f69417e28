"""Tests for the quadratic toy benchmark: closed-form optima, regret, intervals, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize

from bonesoup.backbone import circulant_backbone_matrix
from bonesoup.cli import main
from bonesoup.errors import BonesoupError
from bonesoup.toy import (
    QuadraticRewards,
    backbone_optima,
    compare_methods,
    default_quadratics,
    paper_interval,
    random_quadratics,
    run_toy,
    soup_parameters,
)


def _numerical_maximiser(quadratics: QuadraticRewards, weights: np.ndarray) -> np.ndarray:
    def negative(theta: np.ndarray) -> float:
        return -float(weights @ quadratics.rewards(theta))

    start = np.zeros(quadratics.centers.shape[1])
    # BFGS may stop with "precision loss" once the gradient is at rounding level, so the
    # callers compare the point it reached instead of its success flag.
    result = minimize(negative, start, method="BFGS", options={"gtol": 1e-9})
    return result.x


@pytest.mark.parametrize(
    "quadratics",
    [default_quadratics(2), default_quadratics(3), random_quadratics(3, 4, seed=5)],
    ids=["fixed-2", "fixed-3", "random-3x4"],
)
def test_optimum_matches_scipy(quadratics):
    generator = np.random.default_rng(0)
    for _ in range(5):
        weights = generator.dirichlet(np.ones(quadratics.n))
        np.testing.assert_allclose(
            quadratics.optimum(weights), _numerical_maximiser(quadratics, weights), atol=1e-5
        )


@pytest.mark.parametrize("beta", [0.6, 0.7, 0.8])
def test_backbone_optima_match_scipy(beta):
    quadratics = default_quadratics(3)
    matrix = circulant_backbone_matrix(3, beta)
    optima = backbone_optima(quadratics, matrix)
    assert optima.shape == (3, 3)
    for row, optimum in zip(matrix, optima):
        np.testing.assert_allclose(optimum, _numerical_maximiser(quadratics, row), atol=1e-5)


def test_rewards_values():
    quadratics = QuadraticRewards(
        centers=np.array([[1.0, 0.0], [0.0, 1.0]]),
        curvatures=np.array([np.diag([2.0, 1.0]), np.diag([1.0, 3.0])]),
    )
    # theta = (0, 0): r_1 = -(1 * 2) = -2, r_2 = -(1 * 3) = -3.
    np.testing.assert_allclose(quadratics.rewards(np.zeros(2)), [-2.0, -3.0])
    np.testing.assert_allclose(quadratics.optimum(np.array([1.0, 0.0])), [1.0, 0.0])


def test_regret_is_quadratic_form():
    quadratics = default_quadratics(2)
    mu = np.array([0.3, 0.7])
    theta = np.array([0.2, -0.4])
    gap = theta - quadratics.optimum(mu)
    curvature = 0.3 * quadratics.curvatures[0] + 0.7 * quadratics.curvatures[1]
    assert quadratics.regret(mu, theta) == pytest.approx(gap @ curvature @ gap)
    assert quadratics.regret(mu, quadratics.optimum(mu)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("beta", [0.6, 0.7, 0.8])
def test_corner_regret(beta):
    result = compare_methods(default_quadratics(2), beta, points=11)
    assert result["corner_regret"]["rewarded-soup"] == pytest.approx([0.0, 0.0], abs=1e-12)
    for value in result["corner_regret"]["bone-soup"]:
        assert value > 1e-6
    for value in result["corner_regret"]["aba"]:
        assert value > 1e-6


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("beta", [0.6, 0.7, 0.8])
def test_bone_soup_exact_at_backbone_rows(n, beta):
    # mu = B[j] gives c = e_j, so the soup is backbone j, which is the oracle for B[j].
    quadratics = default_quadratics(n)
    for row in circulant_backbone_matrix(n, beta):
        theta = soup_parameters(quadratics, row, "bone-soup", beta)
        assert quadratics.regret(row, theta) == pytest.approx(0.0, abs=1e-10)


def test_equal_curvature_makes_soups_exact():
    curvature = np.array([[2.0, 0.5], [0.5, 1.0]])
    quadratics = QuadraticRewards(
        centers=np.array([[1.0, 0.0], [-0.5, 2.0]]), curvatures=np.array([curvature, curvature])
    )
    result = compare_methods(quadratics, 0.7, points=21)
    assert result["regret"]["bone-soup"]["max"] == pytest.approx(0.0, abs=1e-12)
    assert result["regret"]["rewarded-soup"]["max"] == pytest.approx(0.0, abs=1e-12)
    assert result["regret"]["aba"]["max"] > 0.1
    assert result["bone_soup_better_intervals"] == []
    assert result["contains_paper_interval"] is False


def _one_dimensional(h1: float, h2: float) -> QuadraticRewards:
    return QuadraticRewards(centers=np.array([[0.0], [1.0]]), curvatures=np.array([[[h1]], [[h2]]]))


@pytest.mark.parametrize(("h1", "h2"), [(1.0, 3.0), (2.0, 0.5), (1.0, 30.0)])
@pytest.mark.parametrize("beta", [0.6, 0.7, 0.8])
def test_interval_one_dimensional_closed_form(h1, h2, beta):
    # In d = 1 with D(t) = t h1 + (1 - t) h2 and rho = h1 h2 / (D(beta) D(1 - beta)), the
    # regret ratio bone/rewarded is ((beta (1 - beta) - u) / u)^2 rho^2 with u = t (1 - t),
    # so Bone Soups wins exactly where u > beta (1 - beta) rho / (1 + rho).
    def weight(t: float) -> float:
        return t * h1 + (1 - t) * h2

    rho = h1 * h2 / (weight(beta) * weight(1 - beta))
    threshold = beta * (1 - beta) * rho / (1 + rho)
    low = (1 - math.sqrt(1 - 4 * threshold)) / 2
    result = compare_methods(_one_dimensional(h1, h2), beta, points=101)
    intervals = result["bone_soup_better_intervals"]
    assert len(intervals) == 1
    assert intervals[0]["boundaries"] == pytest.approx([low, 1 - low], abs=1e-8)


@pytest.mark.parametrize("beta", [0.6, 0.7, 0.8])
def test_nearly_equal_curvature_gives_stated_interval(beta):
    quadratics = _one_dimensional(1.0, 1.0001)
    boundaries = compare_methods(quadratics, beta)["bone_soup_better_intervals"][0]["boundaries"]
    assert boundaries == pytest.approx(list(paper_interval(beta)), abs=1e-4)


def test_paper_interval_value():
    low, high = paper_interval(0.7)
    assert low == pytest.approx(0.1192, abs=1e-4)
    assert high == pytest.approx(0.8808, abs=1e-4)


@pytest.mark.parametrize("seed", range(8))
def test_random_quadratics_contain_stated_interval(seed):
    quadratics = random_quadratics(2, dim=1 + seed % 4, seed=seed)
    for beta in (0.6, 0.7, 0.8):
        result = compare_methods(quadratics, beta, points=51)
        assert result["contains_paper_interval"] is True
        assert len(result["bone_soup_better_intervals"]) == 1
        low, high = result["bone_soup_better_intervals"][0]["boundaries"]
        stated_low, stated_high = paper_interval(beta)
        assert low <= stated_low + 1e-9
        assert high >= stated_high - 1e-9


def test_default_quadratics_results():
    report = run_toy()
    json.dumps(report)
    assert set(report["results"]) == {"0.6", "0.7", "0.8"}
    for key, result in report["results"].items():
        assert result["beta"] == float(key)
        assert result["fine_grid_points"] == 101
        assert result["contains_paper_interval"] is True
        regret = result["regret"]
        assert regret["bone-soup"]["mean"] < regret["rewarded-soup"]["mean"]
        fronts = result["fronts"]
        assert len(fronts["preferences"]) == 11
        for method in ("oracle", "bone-soup", "rewarded-soup", "aba"):
            assert np.array(fronts[method]).shape == (11, 2)


def test_oracle_front_dominates_scalarised():
    fronts = compare_methods(default_quadratics(3), 0.7)["fronts"]
    for index, mu in enumerate(np.array(fronts["preferences"])):
        best = mu @ np.array(fronts["oracle"][index])
        for method in ("bone-soup", "rewarded-soup", "aba"):
            assert mu @ np.array(fronts[method][index]) <= best + 1e-12


def test_three_objectives_summary():
    result = compare_methods(default_quadratics(3), 0.7)
    assert result["fine_grid_points"] == 231
    assert 0.0 <= result["bone_soup_better_fraction"] <= 1.0
    assert "bone_soup_better_intervals" not in result
    assert result["corner_regret"]["rewarded-soup"] == pytest.approx([0, 0, 0], abs=1e-12)


def test_rejects_invalid_inputs():
    with pytest.raises(BonesoupError, match="positive definite"):
        QuadraticRewards(centers=np.eye(2), curvatures=np.array([np.eye(2), -np.eye(2)]))
    with pytest.raises(BonesoupError, match="shape"):
        QuadraticRewards(centers=np.eye(2), curvatures=np.ones((2, 3, 3)))
    with pytest.raises(BonesoupError, match="--seed"):
        default_quadratics(4)
    with pytest.raises(BonesoupError, match="singular"):
        compare_methods(default_quadratics(2), 0.5)


def test_cli_json_subprocess():
    command = [str(Path(sys.executable).with_name("bonesoup")), "toy", "--beta", "0.7", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data["results"]) == ["0.7"]
    interval = data["results"]["0.7"]["bone_soup_better_intervals"][0]["boundaries"]
    assert interval[0] < 0.1192
    assert interval[1] > 0.8808


def test_cli_summary_and_errors(capsys):
    assert main(["toy", "--beta", "0.7", "--seed", "3", "--dim", "2", "--points", "21"]) == 0
    out = capsys.readouterr().out
    assert "beta 0.7" in out
    assert "mu_1 intervals" in out
    assert main(["toy", "--objectives", "4"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "fixed quadratics" in captured.err
    assert main(["toy", "--beta", "1.5"]) == 2
    assert "invalid beta" in capsys.readouterr().err
    assert main(["toy", "--dim", "3"]) == 2
    assert "add --seed" in capsys.readouterr().err
