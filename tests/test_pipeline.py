"""`bonesoup run` end to end on a tiny random Llama: seek, sweep, report, then a rerun that reuses."""

from __future__ import annotations

from pathlib import Path

import yaml

from bonesoup.cli import main
from bonesoup.rundir import RunDir, read_jsonl

METHODS = ["bone-soup", "rewarded-soup", "aba", "theta_0"]


def _write_config(tmp_path: Path, base_dir: Path) -> Path:
    data = {
        "run_dir": str(tmp_path / "run"),
        "model": {"name_or_path": str(base_dir)},
        "prompts": {"source": "chitchat", "max_words": 12, "train": 8, "calibration": 4,
                    "validation": 2, "test": 4},
        "objectives": ["conciseness", "sentiment"],
        "normalization": {"samples_per_prompt": 2},
        "training": {"steps": 2, "prompts_per_step": 2, "completions_per_prompt": 2,
                     "max_new_tokens": 8, "save_steps": 1, "full_finetune": True,
                     "workers": 2, "heldout_prompts": 2},
        "evaluation": {"methods": METHODS, "grid": 2, "max_new_tokens": 8, "batch_size": 4,
                       "workers": 1},
    }  # fmt: skip
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_run_then_rerun_reuses_work(tmp_path, tiny_base_dir, capsys):
    config_path = _write_config(tmp_path, tiny_base_dir)
    assert main(["run", str(config_path)]) == 0
    output = capsys.readouterr().out
    run = RunDir(tmp_path / "run")

    headlines = [line for line in output.splitlines() if line.startswith("Bone Soups hypervolume")]
    assert len(headlines) == 1
    assert f"report: {run.report_md}" in output
    assert "rewarded-soup-1" in output  # the held-out table lists every backbone
    assert run.report_md.read_text().startswith("Bone Soups hypervolume")
    assert run.report_html.is_file()
    assert (run.plots / "fronts.png").is_file()

    rows = read_jsonl(run.eval / "rows.jsonl")
    methods = [row["method"] for row in rows]
    assert methods.count("theta_0") == 1
    for method in ("bone-soup", "rewarded-soup", "aba"):
        assert methods.count(method) == 3  # grid 2: mu_1 in {0, 0.5, 1}

    backbone_json = run.backbone(0, "bone-soup-0") / "backbone.json"
    trained_at = backbone_json.stat().st_mtime_ns
    assert main(["run", str(config_path)]) == 0
    assert backbone_json.stat().st_mtime_ns == trained_at
    assert len(read_jsonl(run.eval / "rows.jsonl")) == len(rows)
