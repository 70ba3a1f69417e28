"""Run configuration: YAML loading, validation errors and overrides."""

from __future__ import annotations

import pytest

from bonesoup.config import (
    RunConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    save_config,
)
from bonesoup.errors import BonesoupError
from bonesoup.pipeline import quick_config


def test_defaults_are_valid():
    config = config_from_dict({})
    assert config.objective_names == ["relevance", "conciseness"]
    assert config.backbones.beta == 0.7


def test_objectives_accept_names_and_mappings():
    config = config_from_dict(
        {"objectives": ["sentiment", {"name": "conciseness", "options": {"target_words": 5}}]}
    )
    assert config.objective_names == ["sentiment", "conciseness"]
    assert config.objectives[1].options == {"target_words": 5}


def test_unknown_key_suggests_closest():
    with pytest.raises(BonesoupError, match=r"unknown key config.trainig; did you mean 'training'"):
        config_from_dict({"trainig": {}})


def test_unknown_nested_key_suggests_closest():
    with pytest.raises(BonesoupError, match=r"config.training.step.*'steps'"):
        config_from_dict({"training": {"step": 3}})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"backbones": {"beta": 0.5}}, r"beta = 0.5 is invalid.*not 1/n = 0.5"),
        ({"backbones": {"beta": 1.5}}, r"beta = 1.5 is invalid: expected a value in \(0, 1\]"),
        ({"backbones": {"beta": 0.0}}, r"beta = 0.0 is invalid"),
        ({"objectives": ["relevance"]}, r"at least 2"),
        ({"objectives": ["relevance", "relevance"]}, r"repeat a name"),
        ({"objectives": []}, r"non-empty list"),
        ({"backbones": {"morlhf": [[0.2, 0.2]]}}, r"morlhf entry \[0.2, 0.2\]"),
        ({"training": {"completions_per_prompt": 1}}, r"completions_per_prompt = 1"),
        ({"training": {"steps": 0}}, r"training.steps = 0"),
        ({"training": {"algorithm": "ppo"}}, r"training.algorithm 'ppo' is invalid"),
        ({"model": {"dtype": "int8"}}, r"model.dtype 'int8' is invalid"),
        ({"evaluation": {"top_p": 0}}, r"evaluation.top_p = 0"),
        ({"evaluation": {"extrapolation_candidates": [0.5]}}, r"each k >= 1"),
        ({"training": "fast"}, r"config.training must be a mapping"),
    ],
)
def test_invalid_values_rejected(data, message):
    with pytest.raises(BonesoupError, match=message):
        config_from_dict(data)


def test_beta_three_objectives_rejects_one_third():
    data = {"objectives": ["relevance", "conciseness", "sentiment"], "backbones": {"beta": 1 / 3}}
    with pytest.raises(BonesoupError, match="not 1/n"):
        config_from_dict(data)


def test_load_config_missing_file(tmp_path):
    with pytest.raises(BonesoupError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_load_config_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training: [unclosed\n")
    with pytest.raises(BonesoupError, match="invalid YAML"):
        load_config(path)


def test_save_and_load_round_trip(tmp_path):
    config = apply_overrides(RunConfig(), ["training.steps=3", "backbones.beta=0.8"])
    path = tmp_path / "config.yaml"
    save_config(config, path)
    loaded = load_config(path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.fingerprint("training") == config.fingerprint("training")
    assert not list(tmp_path.glob(".*.tmp"))


def test_fingerprint_changes_with_section():
    config = RunConfig()
    changed = apply_overrides(config, ["training.steps=99"])
    assert changed.fingerprint("training") != config.fingerprint("training")
    assert changed.fingerprint("model") == config.fingerprint("model")


def test_overrides_parse_yaml_values():
    config = apply_overrides(
        RunConfig(), ["training.seeds=[0, 1]", "objectives=[sentiment, readability]"]
    )
    assert config.training.seeds == [0, 1]
    assert config.objective_names == ["sentiment", "readability"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.steps", "expected section.key=value"),
        ("training.stepz=3", "did you mean 'steps'"),
        ("training.steps=abc", "training.steps = 'abc'"),
    ],
)
def test_invalid_overrides_rejected(override, message):
    with pytest.raises(BonesoupError, match=message):
        apply_overrides(RunConfig(), [override])


def test_quick_config_uses_own_run_dir():
    config = apply_overrides(RunConfig(), ["run_dir=runs/demo/"])
    quick = quick_config(config)
    assert quick.run_dir == "runs/demo-quick"
    assert quick.training.steps < config.training.steps
    assert quick.prompts.test < config.prompts.test


def test_unknown_logger_rejected():
    with pytest.raises(BonesoupError, match="training.logging entry 'mlflow' is invalid"):
        config_from_dict({"training": {"logging": ["mlflow"]}})
