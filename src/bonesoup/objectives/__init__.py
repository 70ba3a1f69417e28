"""Objectives (reward functions), their registry, caching and normalisation.

`get_objective("relevance")` returns a cached objective; see `base` for the spec forms,
`builtin` for the offline scorers and `reward_models` for Hugging Face classifiers.
"""

from bonesoup.objectives import builtin  # noqa: F401  (registers the built-in objectives)
from bonesoup.objectives.base import (
    CachedObjective,
    FunctionObjective,
    Objective,
    available_objectives,
    check_inputs,
    get_objective,
    register_objective,
)
from bonesoup.objectives.normalization import Normalizer

__all__ = [
    "CachedObjective",
    "FunctionObjective",
    "Normalizer",
    "Objective",
    "available_objectives",
    "check_inputs",
    "get_objective",
    "register_objective",
]
