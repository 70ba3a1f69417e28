"""End-to-end sweep on a tiny random Llama: rows, resume, metrics, plots, report and the CLI.

The backbones are theta_0 plus seeded noise, saved as real safetensors checkpoints, so the sweep
builds real soups. The objectives (conciseness, sentiment) are cheap offline scorers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import build_tiny_llama, perturb_model

from bonesoup.cli import main
from bonesoup.config import config_from_dict, save_config
from bonesoup.evaluate import compute_metrics, evaluate_run, write_report
from bonesoup.evaluate.jobs import sampling_seed
from bonesoup.objectives import Normalizer
from bonesoup.rundir import RunDir, read_jsonl

BACKBONES = {
    "bone-soup-0": [0.7, 0.3],
    "bone-soup-1": [0.3, 0.7],
    "rewarded-soup-0": [1.0, 0.0],
    "rewarded-soup-1": [0.0, 1.0],
    "morlhf-0": [0.5, 0.5],
}
ALL_METHODS = [
    "bone-soup",
    "bone-soup-extrapolated",
    "rewarded-soup",
    "aba",
    "morlhf",
    "theta_0",
    "mod",
]


def _config(base_dir: Path, run_dir: Path, workers: int = 1, seeds: tuple[int, ...] = (0,)):
    return config_from_dict(
        {
            "run_dir": str(run_dir),
            "model": {"name_or_path": str(base_dir)},
            "prompts": {"source": "chitchat", "max_words": 12, "test": 4, "validation": 2},
            "objectives": ["conciseness", "sentiment"],
            "backbones": {"beta": 0.7, "morlhf": [[0.5, 0.5]]},
            "training": {"seeds": list(seeds)},
            "evaluation": {
                "methods": ALL_METHODS,
                "grid": 2,
                "max_new_tokens": 8,
                "batch_size": 4,
                "workers": workers,
                "extrapolation_candidates": [1.0, 1.5],
            },
        }
    )


def _write_run(
    root: Path, base_dir: Path, tokenizer, workers: int = 1, seeds: tuple[int, ...] = (0,)
) -> Path:
    """A run folder with full-weight backbones, normalization.json and config.yaml."""
    run = RunDir(root)
    for seed in seeds:
        for index, (name, weights) in enumerate(BACKBONES.items()):
            folder = run.backbone(seed, name)
            model = perturb_model(build_tiny_llama(seed=0), seed=10 + index + 100 * seed, scale=0.3)
            model.save_pretrained(folder)
            method = name.rsplit("-", 1)[0]
            (folder / "backbone.json").write_text(
                json.dumps(
                    {
                        "name": name,
                        "method": method,
                        "weights": weights,
                        "seed": seed,
                        "status": "done",
                    }
                )
            )
    Normalizer(
        means={"conciseness": 0.5, "sentiment": 0.0},
        stds={"conciseness": 0.3, "sentiment": 0.5},
        counts={"conciseness": 8, "sentiment": 8},
    ).save(run.normalization)
    save_config(_config(base_dir, root, workers, seeds), run.config)
    return root


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory, tiny_base_dir, tiny_tokenizer) -> Path:
    root = _write_run(tmp_path_factory.mktemp("run") / "run", tiny_base_dir, tiny_tokenizer)
    evaluate_run(root)
    return root


def _rows(root: Path) -> list[dict]:
    return read_jsonl(RunDir(root).eval / "rows.jsonl")


def test_sweep_writes_one_row_per_job(evaluated_run):
    rows = _rows(evaluated_run)
    keys = [row["key"] for row in rows]
    assert len(keys) == len(set(keys))
    counts = {method: sum(row["method"] == method for row in rows) for method in ALL_METHODS}
    assert counts == {
        "bone-soup": 3,
        "bone-soup-extrapolated": 3,
        "rewarded-soup": 3,
        "aba": 3,
        "morlhf": 1,
        "theta_0": 1,
        "mod": 3,
    }


def test_rows_hold_raw_and_normalized_means(evaluated_run):
    row = next(r for r in _rows(evaluated_run) if r["method"] == "bone-soup")
    for name, mean, std in (("conciseness", 0.5, 0.3), ("sentiment", 0.0, 0.5)):
        raw = row[f"reward/{name}/mean"]
        assert row[f"reward/{name}/normalized_mean"] == pytest.approx((raw - mean) / std)
        assert row[f"reward/{name}/std"] >= 0
    assert row["samples"] == 4
    assert row["new_tokens"] > 0
    theta_0 = next(r for r in _rows(evaluated_run) if r["method"] == "theta_0")
    assert theta_0["preference"] is None
    assert theta_0["coefficients"] == []


def test_soup_coefficients_recorded(evaluated_run):
    rows = {(r["method"], tuple(r["preference"] or ())): r for r in _rows(evaluated_run)}
    assert rows[("bone-soup", (1.0, 0.0))]["coefficients"] == pytest.approx([1.75, -0.75])
    assert rows[("aba", (1.0, 0.0))]["coefficients"] == pytest.approx([1.0, 0.0])
    assert rows[("rewarded-soup", (0.5, 0.5))]["coefficients"] == pytest.approx([0.5, 0.5])
    assert rows[("morlhf", (0.5, 0.5))]["backbone"] == "morlhf-0"


def test_equal_noise_for_equal_soups(evaluated_run):
    # At mu = (0.5, 0.5) bone-soup and aba both give c = (0.5, 0.5) on the same backbones, and
    # every method samples with the same seed per preference: their responses must match.
    responses = read_jsonl(RunDir(evaluated_run).eval / "responses.jsonl")

    def texts(method):
        return [
            r["response"]
            for r in responses
            if r["method"] == method and r["preference"] == [0.5, 0.5]
        ]

    assert texts("bone-soup") == texts("aba")
    assert len(texts("bone-soup")) == 4
    assert texts("bone-soup") != texts("rewarded-soup")
    assert sampling_seed(0, (0.5, 0.5)) != sampling_seed(0, (1.0, 0.0))


def test_extrapolation_choice_stored(evaluated_run):
    data = json.loads((RunDir(evaluated_run).eval / "extrapolation.json").read_text())
    factors = data["seeds"]["0"]["factors"]
    assert len(factors) == 2
    assert set(factors) <= {1.0, 1.5}
    assert data["candidates"] == [1.0, 1.5]
    rows = [r for r in _rows(evaluated_run) if r["method"] == "bone-soup-extrapolated"]
    assert all(r["extrapolation"] == factors for r in rows)
    validation = read_jsonl(RunDir(evaluated_run).eval / "validation_rows.jsonl")
    assert len(validation) == 4
    assert all(r["samples"] == 2 for r in validation)


def test_metrics_file(evaluated_run):
    metrics = compute_metrics(evaluated_run)
    saved = json.loads((RunDir(evaluated_run).eval / "metrics.json").read_text())
    assert saved["reference_point"] == metrics["reference_point"]
    assert set(metrics["methods"]) == set(ALL_METHODS)
    for method in ALL_METHODS:
        assert metrics["methods"][method]["hypervolume"]["mean"] > 0
    assert "spearman" in metrics["methods"]["bone-soup"]
    assert metrics["comparison"]["seeds"] == 1


def test_report_and_plots(evaluated_run):
    report = write_report(evaluated_run)
    first_line = report.read_text().splitlines()[0]
    assert first_line.startswith("Bone Soups hypervolume ")
    assert "vs Rewarded Soups" in first_line
    assert "over 1 training seed;" in first_line
    html = RunDir(evaluated_run).report_html.read_text()
    assert "<table>" in html
    for stem in ("fronts", "rewards_vs_preference"):
        for extension in ("png", "svg"):
            assert (RunDir(evaluated_run).plots / f"{stem}.{extension}").stat().st_size > 0


def test_resume_skips_finished_rows(evaluated_run, tmp_path):
    root = tmp_path / "resumed"
    shutil.copytree(evaluated_run, root)
    config_text = (root / "config.yaml").read_text().replace(str(evaluated_run), str(root))
    (root / "config.yaml").write_text(config_text)
    rows_path = RunDir(root).eval / "rows.jsonl"
    lines = rows_path.read_text().splitlines()
    kept, dropped = lines[:-3], lines[-3:]
    rows_path.write_text("\n".join(kept) + "\n")

    evaluate_run(root)
    after = rows_path.read_text().splitlines()
    assert after[: len(kept)] == kept
    assert len(after) == len(lines)
    # The recomputed rows equal the dropped ones: same soups, same sampling seed.
    recomputed = {json.loads(line)["key"]: json.loads(line) for line in after[len(kept) :]}
    for line in dropped:
        original = json.loads(line)
        again = recomputed[original["key"]]
        assert again["reward/conciseness/mean"] == pytest.approx(
            original["reward/conciseness/mean"]
        )

    evaluate_run(root)
    assert rows_path.read_text().splitlines() == after


def test_changed_settings_rejected(evaluated_run, tmp_path):
    from bonesoup.config import load_config
    from bonesoup.errors import BonesoupError

    config = load_config(RunDir(evaluated_run).config)
    config.evaluation.max_new_tokens = 6
    meta = (RunDir(evaluated_run).eval / "meta.json").read_text()
    with pytest.raises(BonesoupError, match="other evaluation settings"):
        evaluate_run(evaluated_run, config)
    assert (RunDir(evaluated_run).eval / "meta.json").read_text() == meta


def test_cli_evaluate_workers_and_report(tmp_path, tiny_base_dir, tiny_tokenizer, capsys):
    root = _write_run(tmp_path / "cli", tiny_base_dir, tiny_tokenizer, workers=2)
    status = main(
        ["evaluate", str(root), "--methods", "bone-soup,rewarded-soup,theta_0", "--seeds", "1"]
    )
    output = capsys.readouterr().out
    assert status == 0
    assert output.startswith("Bone Soups hypervolume ")
    assert len(_rows(root)) == 7
    assert main(["report", str(root)]) == 0
    assert RunDir(root).report_md.read_text().splitlines()[0] == output.splitlines()[0]


def test_cli_evaluate_unknown_method(tmp_path, tiny_base_dir, tiny_tokenizer, capsys):
    root = _write_run(tmp_path / "bad", tiny_base_dir, tiny_tokenizer)
    assert main(["evaluate", str(root), "--methods", "bone-sop"]) == 2
    captured = capsys.readouterr()
    assert "did you mean 'bone-soup'" in captured.err
    assert captured.out == ""


def test_two_seeds_mean_and_spread(tmp_path, tiny_base_dir, tiny_tokenizer):
    root = _write_run(tmp_path / "seeds", tiny_base_dir, tiny_tokenizer, seeds=(0, 1))
    evaluate_run(root, methods=["bone-soup", "rewarded-soup"])
    rows = _rows(root)
    assert sorted({row["seed"] for row in rows}) == [0, 1]
    assert len(rows) == 12
    metrics = compute_metrics(root)
    assert metrics["seeds"] == [0, 1]
    assert metrics["methods"]["bone-soup"]["hypervolume"]["count"] == 2
    report = write_report(root, metrics)
    first_line = report.read_text().splitlines()[0]
    assert "over 2 training seeds;" in first_line
    assert "±" in first_line
