"""The `bonesoup objectives` and `bonesoup score` commands, run through the real CLI entry point."""

from __future__ import annotations

import json

import pytest

from bonesoup.cli import main


def test_objectives_lists_builtins_and_presets(capsys):
    assert main(["objectives"]) == 0
    out = capsys.readouterr().out
    assert "relevance" in out
    assert "[-1, 1]" in out
    assert "conciseness" in out
    assert "Ray2333/gpt2-large-helpful-reward_model" in out


def test_objectives_json(capsys):
    assert main(["objectives", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["faithfulness"]["needs_reference"] is True
    assert rows["readability"]["range"] == ["-inf", "121.22"]
    assert rows["faithful"]["input_format"] == "summary_post"


def test_score_prints_value(capsys):
    argv = ["score", "--objective", "sentiment", "--prompt", "How?", "--response", "I am great!"]
    status = main(argv)
    assert status == 0
    assert float(capsys.readouterr().out) > 0.5


def test_score_json_with_reference(capsys):
    argv = [
        "score",
        "--objective",
        "faithfulness",
        "--response",
        "The council builds a library.",
        "--reference",
        "The council voted to build a library in the town centre.",
        "--json",
    ]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["objective"] == "faithfulness"
    assert 0.5 < result["score"] <= 1.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--objective", "sentiment", "--response", "  "], "--response is empty"),
        (["--objective", "relevanse", "--response", "hi"], "did you mean 'relevance'"),
        (["--objective", "faithfulness", "--response", "hi"], "needs a reference"),
    ],
)
def test_score_errors_exit_2_one_line(capsys, argv, message):
    assert main(["score", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert captured.err.count("\n") == 1
