"""Beta selection helpers: sub-run configuration, candidate checks, shared-reference ranking."""

from __future__ import annotations

import numpy as np
import pytest

from bonesoup.config import RunConfig
from bonesoup.errors import BonesoupError
from bonesoup.evaluate.metrics import hypervolume
from bonesoup.evaluate.select_beta import candidate_config, check_candidates, summarize_candidates


def test_candidate_config_scales_steps(tmp_path):
    config = RunConfig()
    config.training.steps = 12
    candidate = candidate_config(config, 0.8, 0.25, tmp_path / "beta-0.8")
    assert candidate.backbones.beta == 0.8
    assert candidate.training.steps == 3
    assert candidate.training.save_steps == 3
    assert candidate.backbones.methods == ["bone-soup"]
    assert candidate.backbones.morlhf == []
    assert candidate.evaluation.methods == ["bone-soup"]
    assert candidate.run_dir == str(tmp_path / "beta-0.8")
    assert config.backbones.beta == 0.7


@pytest.mark.parametrize(
    ("betas", "fraction", "message"),
    [([0.7], 0.25, "at least 2"), ([0.6, 0.5], 0.25, "not 1/n"), ([0.6, 0.7], 0.0, "fraction")],
)
def test_check_candidates_rejects(betas, fraction, message):
    with pytest.raises(BonesoupError, match=message):
        check_candidates(betas, fraction, 2)


def test_summarize_candidates_shared_reference():
    points = {
        0.6: {0: np.array([[0.0, 1.0], [1.0, 0.0]])},
        0.7: {
            0: np.array([[0.0, 1.0], [0.8, 0.8], [1.0, 0.0]]),
            1: np.array([[0.0, 1.0], [0.6, 0.6], [1.0, 0.0]]),
        },
    }
    summary = summarize_candidates(points)
    assert summary["best_beta"] == 0.7
    reference = np.array(summary["reference_point"])
    assert reference.tolist() == pytest.approx([-0.1, -0.1])
    expected = np.mean([hypervolume(points[0.7][s], reference) for s in (0, 1)])
    assert summary["hypervolume"]["0.7"]["mean"] == pytest.approx(expected)
    assert summary["hypervolume"]["0.7"]["count"] == 2
