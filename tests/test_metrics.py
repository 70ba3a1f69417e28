"""Front metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from bonesoup.errors import BonesoupError
from bonesoup.evaluate.metrics import (
    controllability,
    hypervolume,
    non_dominated,
    preference_alignment,
    reference_point,
    summarize,
)
from bonesoup.preferences import preference_grid


def test_hypervolume_2d_staircase():
    # Rectangles [0,1]x[0,3], [1,2]x[0,2], [2,3]x[0,1]: 3 + 2 + 1.
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [0, 0]) == pytest.approx(6.0)


def test_hypervolume_2d_ignores_dominated_and_outside_points():
    points = [[1, 3], [2, 2], [3, 1], [1, 1], [-1, 5]]
    assert hypervolume(points, [0, 0]) == pytest.approx(6.0)


def test_hypervolume_2d_shifted_reference():
    assert hypervolume([[3, 4]], [1, 1]) == pytest.approx(6.0)
    assert hypervolume([[3, 4], [2, 5]], [1, 1]) == pytest.approx(2 * 3 + 1 * 1)


def test_hypervolume_3d_single_box():
    assert hypervolume([[1, 2, 3]], [0, 0, 0]) == pytest.approx(6.0)


def test_hypervolume_3d_inclusion_exclusion():
    # Boxes of volume 2 each; pairwise overlaps are unit cubes, the triple overlap too: 6 - 3 + 1.
    points = [[2, 1, 1], [1, 2, 1], [1, 1, 2]]
    assert hypervolume(points, [0, 0, 0]) == pytest.approx(4.0)
    assert hypervolume(points[:2], [0, 0, 0]) == pytest.approx(3.0)


def test_hypervolume_no_point_above_reference():
    assert hypervolume([[0, 1], [1, 0]], [0, 0]) == 0.0


def test_hypervolume_rejects_mismatched_reference():
    with pytest.raises(BonesoupError, match="reference point"):
        hypervolume([[1, 2]], [0, 0, 0])


def test_non_dominated_maximisation():
    mask = non_dominated([[1, 3], [2, 2], [3, 1], [1, 1], [2, 2]])
    assert mask.tolist() == [True, True, True, False, True]


def test_reference_point_margin():
    reference = reference_point([[0, 1], [2, 3], [1, 2]])
    assert reference.tolist() == pytest.approx([-0.2, 0.8])


def test_reference_point_constant_objective():
    reference = reference_point([[1, 5], [2, 5]])
    assert reference.tolist() == pytest.approx([0.9, 4.99])


def _two_objective_grid() -> np.ndarray:
    return np.stack(preference_grid(2))


def test_controllability_monotone_front():
    mu = _two_objective_grid()
    result = controllability(mu, mu.copy())
    assert result["spearman"] == pytest.approx([1.0, 1.0])
    assert result["ordered"] == [10, 10]
    assert result["pairs"] == [10, 10]


def test_controllability_one_swapped_neighbour():
    mu = _two_objective_grid()
    rewards = mu.copy()
    rewards[[5, 6], 0] = rewards[[6, 5], 0]  # r_1 at mu_1 = 0.5 and 0.6 swapped
    result = controllability(mu, rewards)
    # Spearman = 1 - 6 sum d^2 / (g (g^2 - 1)) with d = (1, 1): 1 - 12 / 1320.
    assert result["spearman"][0] == pytest.approx(1 - 12 / 1320)
    assert result["ordered"][0] == 9
    assert result["ordered"][1] == 10


def test_controllability_reversed_and_constant():
    mu = _two_objective_grid()
    rewards = np.stack([-mu[:, 0], np.full(len(mu), 0.3)], axis=1)
    result = controllability(mu, rewards)
    assert result["spearman"][0] == pytest.approx(-1.0)
    assert result["ordered"][0] == 0
    assert result["spearman"][1] is None
    assert result["ordered"][1] == 0


def test_controllability_three_objective_levels():
    mu = np.stack(preference_grid(3))
    result = controllability(mu, mu.copy())
    # mu_1 takes 8 distinct values on the 13-point grid: 0, .1, .2, 1/3, .4, .6, .8, 1.
    assert result["pairs"] == [7, 7, 7]
    assert result["ordered"] == [7, 7, 7]
    assert result["spearman"] == pytest.approx([1.0, 1.0, 1.0])


def test_preference_alignment_hand_case():
    assert preference_alignment([[1, 0], [0, 1]], [[2, 5], [3, 4]]) == pytest.approx(3.0)
    assert preference_alignment([[0.5, 0.5]], [[2, 4]]) == pytest.approx(3.0)


def test_summarize_seeds():
    summary = summarize([1.0, 3.0, None])
    assert summary["mean"] == pytest.approx(2.0)
    assert summary["std"] == pytest.approx(np.sqrt(2.0))
    assert summary["count"] == 2
    assert summarize([5.0])["std"] == 0.0
    assert summarize([None])["mean"] is None
