"""Objective interface, registry, input checks and the score cache.

An objective is a reward function r(prompt, response[, reference]) -> float, scored in batches.
`get_objective(spec)` resolves a spec to an objective:

- a registered name (`relevance`, `conciseness`, ... from `bonesoup.objectives.builtin`);
- a reward-model preset (`helpful`, `harmless`, ... from `bonesoup.objectives.reward_models`);
- `hf:<model id or local path>`, any Hugging Face sequence classifier;
- `module:function`, a Python function f(prompts, responses, references) -> list[float].

Empty responses are valid input: every objective returns a finite score for "" and documents
which one. Non-string responses, mismatched lengths and a missing reference for an objective that
needs one raise `BonesoupError`.
"""

from __future__ import annotations

import abc
import difflib
import importlib
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from bonesoup.errors import BonesoupError

logger = logging.getLogger(__name__)

Factory = Callable[..., "Objective"]

_REGISTRY: dict[str, Factory] = {}


class Objective(abc.ABC):
    """A reward function scored in batches: one float per (prompt, response[, reference]).

    Subclasses set the class attributes and implement `_score`; `score` checks the inputs first.
    """

    name: str = ""
    higher_is_better: bool = True
    value_range: tuple[float, float] = (-math.inf, math.inf)
    description: str = ""
    needs_reference: bool = False

    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        references: Sequence[str | None] | None = None,
    ) -> list[float]:
        """Score each response to its prompt; returns one float per response, in order."""
        checked_references = check_inputs(self, prompts, responses, references)
        if not responses:
            return []
        return [float(value) for value in self._score(prompts, responses, checked_references)]

    @abc.abstractmethod
    def _score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        references: Sequence[str | None],
    ) -> Sequence[float]:
        """Score checked, non-empty batches of equal length."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _check_strings(values: Sequence[Any], field: str, allow_none: bool = False) -> None:
    """Raise BonesoupError unless `values` is a sequence of str; `field` is its plural name."""
    if isinstance(values, str):
        raise BonesoupError(
            f"{field} must be a sequence of strings, got a single str; wrap it in a list"
        )
    for index, value in enumerate(values):
        if value is None and allow_none:
            continue
        if not isinstance(value, str):
            raise BonesoupError(
                f"{field}[{index}] is a {type(value).__name__}, not a str; "
                f"pass decoded text (str) for every {field[:-1]}"
            )


def check_inputs(
    objective: Objective,
    prompts: Sequence[str],
    responses: Sequence[str],
    references: Sequence[str | None] | None,
) -> list[str | None]:
    """Validate a batch and return the references as a list (all None when not given).

    Raises BonesoupError for a non-string item, mismatched lengths, or a missing reference for an
    objective with `needs_reference`.
    """
    _check_strings(responses, "responses")
    _check_strings(prompts, "prompts")
    if len(prompts) != len(responses):
        raise BonesoupError(
            f"got {len(prompts)} prompts but {len(responses)} responses; "
            "pass one prompt per response"
        )
    if references is None:
        checked: list[str | None] = [None] * len(responses)
    else:
        _check_strings(references, "references", allow_none=True)
        if len(references) != len(responses):
            raise BonesoupError(
                f"got {len(references)} references but {len(responses)} responses; "
                "pass one reference (or None) per response"
            )
        checked = list(references)
    if objective.needs_reference:
        missing = [index for index, value in enumerate(checked) if value is None]
        if missing:
            raise BonesoupError(
                f"objective {objective.name!r} needs a reference (the source text) for every "
                f"response, but references[{missing[0]}] is missing; pass references=..."
            )
    return checked


class CachedObjective(Objective):
    """Wrap an objective so each (prompt, response, reference) triple is scored once.

    The cache is an LRU dict bounded to `max_entries` triples (default 100,000; None means
    unbounded). Scores of a batch are computed only for the triples not yet cached, in one call.
    """

    def __init__(self, objective: Objective, max_entries: int | None = 100_000) -> None:
        if max_entries is not None and max_entries < 1:
            raise BonesoupError(f"max_entries={max_entries} must be >= 1, or None for unbounded")
        self.objective = objective
        self.name = objective.name
        self.higher_is_better = objective.higher_is_better
        self.value_range = objective.value_range
        self.description = objective.description
        self.needs_reference = objective.needs_reference
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._cache: OrderedDict[tuple[str, str, str | None], float] = OrderedDict()

    def _score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        references: Sequence[str | None],
    ) -> list[float]:
        keys = list(zip(prompts, responses, references, strict=True))
        todo = list(dict.fromkeys(key for key in keys if key not in self._cache))
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            new_prompts, new_responses, new_references = (list(column) for column in zip(*todo))
            scores = self.objective.score(new_prompts, new_responses, new_references)
            for key, value in zip(todo, scores, strict=True):
                self._store(key, value)
        results = []
        for key in keys:
            value = self._cache.get(key)
            if value is None:  # evicted within this batch because the batch exceeds max_entries
                value = self.objective.score([key[0]], [key[1]], [key[2]])[0]
            else:
                self._cache.move_to_end(key)
            results.append(value)
        return results

    def _store(self, key: tuple[str, str, str | None], value: float) -> None:
        self._cache[key] = value
        if self.max_entries is not None and len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    def clear(self) -> None:
        """Drop every cached score."""
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)

    def __repr__(self) -> str:
        return f"CachedObjective({self.objective!r}, entries={len(self)})"


class FunctionObjective(Objective):
    """Wrap a user function f(prompts, responses, references) -> list[float] as an objective."""

    def __init__(
        self,
        function: Callable[..., Sequence[float]],
        name: str,
        higher_is_better: bool = True,
        needs_reference: bool = False,
    ) -> None:
        self.function = function
        self.name = name
        self.higher_is_better = higher_is_better
        self.needs_reference = needs_reference
        self.description = (function.__doc__ or "user function").strip().splitlines()[0]

    def _score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        references: Sequence[str | None],
    ) -> list[float]:
        try:
            values = self.function(list(prompts), list(responses), list(references))
        except TypeError as error:
            raise BonesoupError(
                f"objective function {self.name!r} failed: {error}; it must take "
                "(prompts, responses, references) lists and return one float per response"
            ) from error
        try:
            scores = [float(value) for value in values]
        except (TypeError, ValueError) as error:
            raise BonesoupError(
                f"objective function {self.name!r} must return a list of floats: {error}"
            ) from error
        if len(scores) != len(responses):
            raise BonesoupError(
                f"objective function {self.name!r} returned {len(scores)} scores for "
                f"{len(responses)} responses; return one float per response"
            )
        bad = [index for index, value in enumerate(scores) if not math.isfinite(value)]
        if bad:
            raise BonesoupError(
                f"objective function {self.name!r} returned {scores[bad[0]]} at index {bad[0]}; "
                "scores must be finite"
            )
        return scores


def register_objective(name: str) -> Callable[[Factory], Factory]:
    """Register a factory (an Objective subclass or a function returning one) under `name`."""

    def decorator(factory: Factory) -> Factory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise BonesoupError(f"objective name {name!r} is already registered; pick another")
        _REGISTRY[name] = factory
        return factory

    return decorator


def _load_builtin_modules() -> None:
    importlib.import_module("bonesoup.objectives.builtin")


def _presets() -> dict[str, dict[str, Any]]:
    from bonesoup.objectives.reward_models import PRESETS

    return PRESETS


def available_objectives() -> dict[str, type[Objective] | Factory | str]:
    """Map each registered name to its factory and each reward-model preset to a description."""
    _load_builtin_modules()
    listing: dict[str, type[Objective] | Factory | str] = dict(sorted(_REGISTRY.items()))
    for name, preset in _presets().items():
        listing[name] = f"{preset['description']} ({preset['model']})"
    return listing


def _load_function(spec: str) -> Callable[..., Sequence[float]]:
    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise BonesoupError(
            f"cannot import module {module_name!r} for objective {spec!r}: {error}; "
            "use module:function with an importable module"
        ) from error
    function = getattr(module, function_name, None)
    if not callable(function):
        raise BonesoupError(
            f"module {module_name!r} has no function {function_name!r} for objective {spec!r}"
        )
    return function


def _unknown_name_error(spec: str) -> BonesoupError:
    names = list(available_objectives())
    close = difflib.get_close_matches(spec, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return BonesoupError(
        f"unknown objective {spec!r}; {hint}valid names: {', '.join(names)}, "
        "or hf:<model id or path>, or module:function"
    )


def _build(spec: str, options: dict[str, Any]) -> Objective:
    _load_builtin_modules()
    if spec in _REGISTRY:
        return _REGISTRY[spec](**options)
    if spec in _presets():
        from bonesoup.objectives.reward_models import from_preset

        return from_preset(spec, **options)
    if spec.startswith("hf:"):
        from bonesoup.objectives.reward_models import RewardModelObjective

        return RewardModelObjective(spec[3:], **options)
    module_name, colon, function_name = spec.partition(":")
    if colon and module_name and function_name:
        return FunctionObjective(_load_function(spec), name=spec, **options)
    raise _unknown_name_error(spec)


def get_objective(spec: str, *, cache: bool = True, **options: Any) -> Objective:
    """Build the objective named by `spec`; keyword options go to its constructor.

    With `cache=True` (the default) the objective is wrapped in `CachedObjective`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise BonesoupError(f"objective spec must be a non-empty string, got {spec!r}")
    try:
        objective = _build(spec.strip(), options)
    except TypeError as error:  # an option the constructor does not take
        raise BonesoupError(f"invalid option for objective {spec!r}: {error}") from error
    return CachedObjective(objective) if cache else objective
