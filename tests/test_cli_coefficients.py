"""Tests for `bonesoup coefficients`, run as a real command and through cli.main."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bonesoup.cli import main

BONESOUP = Path(sys.executable).with_name("bonesoup")


def run_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BONESOUP), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_json_output_subprocess():
    result = run_command("coefficients", "--beta", "0.7", "--preference", "0.2,0.8", "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    np.testing.assert_allclose(data["coefficients"], [-0.25, 1.25])
    assert data["condition_number"] == pytest.approx(2.5)
    assert data["method"] == "bone-soup"
    np.testing.assert_allclose(data["preference"], [0.2, 0.8])
    np.testing.assert_allclose(data["backbone_matrix"], [[0.7, 0.3], [0.3, 0.7]])


def _json(capsys, *args: str) -> dict:
    assert main(["coefficients", *args, "--json"]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out)


def test_json_extrapolation_appends_base(capsys):
    data = _json(capsys, "--beta", "0.7", "--preference", "0.5,0.5", "--extrapolation", "1.5,1")
    np.testing.assert_allclose(data["coefficients"], [0.9375, 0.3125, -0.25])


def test_default_beta_is_0_7(capsys):
    data = _json(capsys, "--preference", "1,0")
    np.testing.assert_allclose(data["coefficients"], [1.75, -0.75])


def test_three_objectives(capsys):
    data = _json(capsys, "--beta", "0.7", "--preference", "0.2,0.5,0.3")
    np.testing.assert_allclose(data["coefficients"], [1 / 11, 7 / 11, 3 / 11])


@pytest.mark.parametrize("method", ["rewarded-soup", "aba"])
def test_methods_without_inverse(capsys, method):
    data = _json(capsys, "--beta", "0.7", "--preference", "0.2,0.8", "--method", method)
    np.testing.assert_allclose(data["coefficients"], [0.2, 0.8])
    assert data["method"] == method


def test_rewarded_soup_condition_number(capsys):
    data = _json(capsys, "--preference", "0.2,0.8", "--method", "rewarded-soup")
    assert data["condition_number"] == 1.0
    assert data["backbone_matrix"] == [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize("suffix", ["json", "csv"])
def test_matrix_file(tmp_path, capsys, suffix):
    path = tmp_path / f"b.{suffix}"
    rows = [[0.8, 0.2], [0.4, 0.6]]
    if suffix == "json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("0.8,0.2\n0.4,0.6\n")
    data = _json(capsys, "--beta", "0.7", "--preference", "0.5,0.5", "--matrix", str(path))
    coefficients = np.array(data["coefficients"])
    np.testing.assert_allclose(np.array(rows).T @ coefficients, [0.5, 0.5])
    assert data["backbone_matrix"] == rows


def test_human_table(capsys):
    assert main(["coefficients", "--beta", "0.7", "--preference", "1,0"]) == 0
    out = capsys.readouterr().out
    assert "method: bone-soup" in out
    assert "condition number: 2.5" in out
    assert "backbone 1        1.7500" in out
    assert "backbone 2       -0.7500" in out
    assert "theta_0" not in out


def test_human_table_with_extrapolation(capsys):
    args = ["coefficients", "--preference", "0.5,0.5", "--extrapolation", "1.5,1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "theta_0          -0.2500" in out


ERROR_CASES = [
    (["--beta", "1.5", "--preference", "0.2,0.8"], "invalid beta"),
    (["--beta", "0", "--preference", "0.2,0.8"], "invalid beta"),
    (["--beta", "abc", "--preference", "0.2,0.8"], "not a number"),
    (["--beta", "0.5", "--preference", "0.2,0.8"], "singular"),
    (["--beta", "0.7", "--preference", "0.2,0.8,0.0", "--matrix", "{matrix}"], "3 weights"),
    (["--beta", "0.7", "--preference", "0.2,0.9"], "sum to 1.1"),
    (["--beta", "0.7", "--preference", "1.2,-0.2"], "non-negative"),
    (["--beta", "0.7", "--preference", "nan,1"], "finite"),
    (["--beta", "0.7", "--preference", "0.2,x"], "not a number"),
    (["--beta", "0.7", "--preference", "1"], "at least two"),
    (["--beta", "0.7", "--preference", "0.5,0.5", "--extrapolation", "0.5,1"], ">= 1"),
    (["--beta", "0.7", "--preference", "0.5,0.5", "--extrapolation", "1,1,1"], "exactly 2"),
    (["--beta", "0.7", "--preference", "0.5,0.5", "--extrapolation", "1,y"], "not a number"),
    (["--beta", "0.7", "--preference", "0.5,0.5", "--method", "bone-sup"], "did you mean"),
    (["--beta", "0.7", "--preference", "0.5,0.5", "--matrix", "{missing}"], "could not be read"),
    (["--preference", "0.5,0.5", "--matrix", "{singular}"], "linearly dependent"),
]


def _fill_paths(args: list[str], tmp_path: Path) -> list[str]:
    matrix = tmp_path / "b.json"
    matrix.write_text(json.dumps([[0.8, 0.2], [0.4, 0.6]]))
    singular = tmp_path / "singular.csv"
    singular.write_text("0.5,0.5\n0.5,0.5\n")
    paths = {"matrix": matrix, "missing": tmp_path / "absent.json", "singular": singular}
    return [arg.format(**{key: str(value) for key, value in paths.items()}) for arg in args]


@pytest.mark.parametrize(("args", "message"), ERROR_CASES)
@pytest.mark.parametrize("as_json", [False, True])
def test_errors_in_process(tmp_path, capsys, args, message, as_json):
    argv = ["coefficients", *_fill_paths(args, tmp_path)] + (["--json"] if as_json else [])
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("bonesoup: error: ")
    assert message in lines[0]


def test_missing_preference_exits_2(capsys):
    # argparse reports a missing required option by raising SystemExit(2).
    with pytest.raises(SystemExit) as exit_info:
        main(["coefficients", "--beta", "0.7"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--preference" in captured.err


# Every case runs in process above. A subprocess pays the start-up of the whole CLI, so only
# three cases also run as the real command.
@pytest.mark.parametrize("index", [3, 5, 13], ids=lambda index: ERROR_CASES[index][1])
def test_errors_subprocess(tmp_path, index):
    args, message = ERROR_CASES[index]
    result = run_command("coefficients", *_fill_paths(args, tmp_path), "--json")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert message in lines[0]
