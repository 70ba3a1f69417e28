"""Seek on a tiny random Llama: plan, calibration, RL training in worker processes, reuse, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bonesoup.config import apply_overrides, config_from_dict
from bonesoup.errors import BonesoupError
from bonesoup.rundir import RunDir, read_jsonl
from bonesoup.seek import SeekError, calibrate, plan_backbones, seek
from bonesoup.training import backbone_fingerprint, read_backbone_json, work_dir

TESTS_DIR = Path(__file__).parent
PROMPTS = [
    "What is the capital of France?",
    "Tell me a short joke about dogs.",
    "How are you feeling today?",
    "Why is the sky blue in the day?",
    "What do you like to eat for dinner?",
    "Where do foxes live in the winter?",
    "Is a short answer better than a long one?",
    "Who jumps over the lazy dog?",
]


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    rows = [json.dumps({"id": str(i), "prompt": p}) for i, p in enumerate(PROMPTS)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(autouse=True)
def support_on_path(monkeypatch):
    """Let worker processes import the objective functions of test_seek_support."""
    paths = [str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    monkeypatch.syspath_prepend(str(TESTS_DIR))


def tiny_config(model_dir: Path, prompts_file: Path, run_dir: Path, **training):
    data = {
        "run_dir": str(run_dir),
        "model": {"name_or_path": str(model_dir)},
        "prompts": {
            "source": "jsonl",
            "path": str(prompts_file),
            "train": 8,
            "calibration": 4,
            "validation": 4,
        },
        "objectives": [
            {"name": "conciseness", "options": {"target_words": 0, "slope_words": 3}},
            "test_seek_support:char_length",
        ],
        "normalization": {"samples_per_prompt": 2},
        "training": {
            "steps": 2,
            "prompts_per_step": 2,
            "completions_per_prompt": 2,
            "max_new_tokens": 8,
            "save_steps": 1,
            "full_finetune": True,
            "learning_rate": 1e-3,
            "kl_coef": 0.05,
            "workers": 2,
            "heldout_prompts": 4,
            **training,
        },
    }
    return config_from_dict(data)


def test_plan_backbones_two_objectives():
    config = config_from_dict(
        {"backbones": {"beta": 0.7, "morlhf": [[0.5, 0.5]]}, "training": {"seeds": [0, 1]}}
    )
    specs = plan_backbones(config)
    names = [(s.name, s.seed) for s in specs]
    assert names[:5] == [
        ("bone-soup-0", 0),
        ("bone-soup-1", 0),
        ("rewarded-soup-0", 0),
        ("rewarded-soup-1", 0),
        ("morlhf-0", 0),
    ]
    assert len(specs) == 10
    assert specs[0].weights == pytest.approx([0.7, 0.3])
    assert specs[1].weights == pytest.approx([0.3, 0.7])
    assert specs[3].weights == [0.0, 1.0]
    assert specs[4].weights == [0.5, 0.5]
    assert specs[4].method == "morlhf"


def test_plan_backbones_three_objectives_circulant():
    config = config_from_dict(
        {
            "objectives": ["relevance", "conciseness", "sentiment"],
            "backbones": {"beta": 0.8, "methods": ["bone-soup"]},
        }
    )
    specs = plan_backbones(config)
    assert [s.name for s in specs] == ["bone-soup-0", "bone-soup-1", "bone-soup-2"]
    assert specs[1].weights == pytest.approx([0.1, 0.8, 0.1])


def test_plan_backbones_explicit_matrix():
    config = config_from_dict(
        {"backbones": {"matrix": [[0.6, 0.4], [0.2, 0.8]], "methods": ["bone-soup"]}}
    )
    assert [s.weights for s in plan_backbones(config)] == [[0.6, 0.4], [0.2, 0.8]]


def test_plan_backbones_rejects_unknown_method():
    config = config_from_dict({"backbones": {"methods": ["bone-soups"]}})
    with pytest.raises(BonesoupError, match="bone-soups"):
        plan_backbones(config)


def test_apply_overrides_parses_yaml_values():
    config = apply_overrides(
        config_from_dict({}),
        ["training.steps=3", "training.seeds=[1, 2]", "objectives.1.options={target_words: 5}"],
    )
    assert config.training.steps == 3
    assert config.training.seeds == [1, 2]
    assert config.objectives[1].options == {"target_words": 5}


def test_apply_overrides_rejects_unknown_key():
    with pytest.raises(BonesoupError, match="did you mean 'steps'"):
        apply_overrides(config_from_dict({}), ["training.stepz=3"])
    with pytest.raises(BonesoupError, match="section.key=value"):
        apply_overrides(config_from_dict({}), ["training.steps"])


def test_fingerprint_ignores_worker_count(tiny_base_dir, prompts_file, tmp_path):
    config = tiny_config(tiny_base_dir, prompts_file, tmp_path)
    spec = plan_backbones(config)[0]
    more_workers = apply_overrides(config, ["training.workers=1", "prompts.test=5"])
    more_steps = apply_overrides(config, ["training.steps=3"])
    assert backbone_fingerprint(more_workers, spec) == backbone_fingerprint(config, spec)
    assert backbone_fingerprint(more_steps, spec) != backbone_fingerprint(config, spec)


def test_calibrate_fits_and_reuses(tiny_base_dir, prompts_file, tmp_path):
    config = tiny_config(tiny_base_dir, prompts_file, tmp_path)
    normalizer = calibrate(config, tmp_path)
    saved = json.loads((tmp_path / "normalization.json").read_text())
    assert set(saved["objectives"]) == {"conciseness", "test_seek_support:char_length"}
    assert saved["objectives"]["conciseness"]["count"] == 8  # 4 prompts x 2 samples
    assert normalizer.stds["test_seek_support:char_length"] > 0
    modified = (tmp_path / "normalization.json").stat().st_mtime_ns
    again = calibrate(config, tmp_path)
    assert (tmp_path / "normalization.json").stat().st_mtime_ns == modified
    assert again.means == normalizer.means


def test_calibrate_none_is_identity(tiny_base_dir, prompts_file, tmp_path):
    config = apply_overrides(
        tiny_config(tiny_base_dir, prompts_file, tmp_path), ["normalization.method=none"]
    )
    normalizer = calibrate(config, tmp_path)
    assert normalizer.normalize("conciseness", [0.25, 2.0]) == [0.25, 2.0]
    assert not (tmp_path / "normalization.json").exists()


@pytest.fixture(scope="module")
def trained_run(tiny_base_dir, prompts_file, tmp_path_factory):
    """Seek once with two objectives: 2 bone-soup + 2 rewarded-soup backbones, 2 processes."""
    run_dir = tmp_path_factory.mktemp("run")
    config = tiny_config(tiny_base_dir, prompts_file, run_dir)
    env_path = os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])
    os.environ["PYTHONPATH"] = env_path
    paths = seek(config, run_dir, progress=False)
    return config, run_dir, paths


def test_seek_saves_loadable_backbones(trained_run):
    from transformers import AutoModelForCausalLM

    _, _, paths = trained_run
    assert [p.name for p in paths] == [
        "bone-soup-0",
        "bone-soup-1",
        "rewarded-soup-0",
        "rewarded-soup-1",
    ]
    for path in paths:
        assert (path / "model.safetensors").is_file()
        assert not (path / "training_args.bin").exists()
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
        assert model.config.num_hidden_layers == 2


def test_seek_backbone_json_records_run(trained_run):
    config, _, paths = trained_run
    data = read_backbone_json(paths[0])
    assert data["status"] == "done"
    assert data["weights"] == pytest.approx([0.7, 0.3])
    assert data["steps"] == 2
    assert data["format"] == "full"
    assert set(data["versions"]) >= {"torch", "transformers", "trl", "peft", "bonesoup"}
    assert data["config"]["training"]["steps"] == 2
    heldout = data["heldout"]
    assert heldout["prompts"] == 4
    for side in ("theta_0", "backbone"):
        expected = sum(
            w * heldout[side][f"reward/{name}/mean"]
            for w, name in zip(data["weights"], config.objective_names)
        )
        assert heldout[side]["reward/scalarized"] == pytest.approx(expected)


def test_seek_log_scalarized_is_weighted_sum(trained_run):
    config, _, paths = trained_run
    for path in paths:
        weights = read_backbone_json(path)["weights"]
        rows = read_jsonl(path / "train_log.jsonl")
        assert [row["step"] for row in rows] == [1, 2]
        for row in rows:
            expected = sum(
                w * row[f"reward/{name}/mean"] for w, name in zip(weights, config.objective_names)
            )
            assert row["reward/scalarized"] == pytest.approx(expected, abs=1e-6)
            # TRL's own weighted reward (before the KL penalty) is the same number.
            assert row["trl/reward"] == pytest.approx(expected, abs=1e-5)
            assert row["reward/conciseness/raw_mean"] is not None
            assert {"kl", "completion_length", "seconds"} <= set(row)


def test_seek_log_mean_is_normalized_raw(trained_run):
    _, run_dir, paths = trained_run
    stats = json.loads((run_dir / "normalization.json").read_text())["objectives"]
    name = "test_seek_support:char_length"
    for row in read_jsonl(paths[0] / "train_log.jsonl"):
        expected = (row[f"reward/{name}/raw_mean"] - stats[name]["mean"]) / stats[name]["std"]
        assert row[f"reward/{name}/mean"] == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_seek_reuses_finished_backbones(trained_run):
    config, run_dir, paths = trained_run
    before = {p.name: (p / "backbone.json").stat().st_mtime_ns for p in paths}
    again = seek(config, run_dir, progress=False)
    assert again == paths
    assert {p.name: (p / "backbone.json").stat().st_mtime_ns for p in again} == before


def test_seek_three_objectives(tiny_base_dir, prompts_file, tmp_path):
    config = apply_overrides(
        tiny_config(tiny_base_dir, prompts_file, tmp_path),
        [
            "objectives=[conciseness, test_seek_support:char_length, sentiment]",
            "backbones.methods=[bone-soup]",
            "training.steps=1",
            "training.heldout_prompts=2",
        ],
    )
    paths = seek(config, tmp_path, progress=False)
    assert len(paths) == 3
    for path, weights in zip(paths, ([0.7, 0.15, 0.15], [0.15, 0.7, 0.15], [0.15, 0.15, 0.7])):
        data = read_backbone_json(path)
        assert data["weights"] == pytest.approx(weights)
        row = read_jsonl(path / "train_log.jsonl")[-1]
        expected = sum(w * row[f"reward/{n}/mean"] for w, n in zip(weights, config.objective_names))
        assert row["reward/scalarized"] == pytest.approx(expected, abs=1e-6)


def test_seek_grpo_with_lora(tiny_base_dir, prompts_file, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = apply_overrides(
        tiny_config(tiny_base_dir, prompts_file, tmp_path),
        [
            "training.algorithm=grpo",
            "training.full_finetune=false",
            "training.lora={r: 4, alpha: 8}",
            "backbones.methods=[]",
            "backbones.morlhf=[[0.5, 0.5]]",
        ],
    )
    (path,) = seek(config, tmp_path, progress=False)
    assert path.name == "morlhf-0"
    assert (path / "adapter_config.json").is_file()
    assert (path / "adapter_model.safetensors").is_file()
    assert read_backbone_json(path)["format"] == "lora"
    base = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    model = PeftModel.from_pretrained(base, path)
    assert model.peft_config["default"].r == 4
    row = read_jsonl(path / "train_log.jsonl")[-1]
    expected = 0.5 * sum(row[f"reward/{name}/mean"] for name in config.objective_names)
    assert row["reward/scalarized"] == pytest.approx(expected, abs=1e-6)


def _wait_for_checkpoint(folder: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    """Wait until `folder` contains a complete checkpoint (trainer_state.json is written last)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            json.loads((folder / "trainer_state.json").read_text())
            return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        assert process.poll() is None, "worker ended before writing its first checkpoint"
        assert time.monotonic() < deadline, f"no complete {folder} after {timeout} s"
        time.sleep(0.05)


def test_killed_backbone_resumes_from_checkpoint(tiny_base_dir, prompts_file, tmp_path):
    config = apply_overrides(
        tiny_config(tiny_base_dir, prompts_file, tmp_path),
        [
            "objectives=[conciseness, test_seek_support:slow_char_length]",
            "backbones.methods=[rewarded-soup]",
            "training.steps=4",
            "training.workers=1",
        ],
    )
    spec = plan_backbones(config)[0]
    # Prepare calibration and the work folder exactly as seek does, then run the worker alone.
    from bonesoup.seek import _prepare_baselines, _write_work_inputs

    run = RunDir(tmp_path)
    _prepare_baselines(config, run)
    _write_work_inputs(config, run, spec)
    work = work_dir(tmp_path, spec.seed, spec.name)
    command = [
        sys.executable,
        "-m",
        "bonesoup.training",
        "--run-dir",
        str(tmp_path),
        "--seed",
        "0",
        "--name",
        spec.name,
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_checkpoint(work / "checkpoints" / "checkpoint-1", process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not run.backbone(0, spec.name).exists()
    # A checkpoint cut short by the kill (no trainer_state.json yet) must be skipped.
    (work / "checkpoints" / "checkpoint-3").mkdir()

    paths = seek(config, tmp_path, progress=False)
    data = read_backbone_json(paths[0])
    assert data["status"] == "done"
    assert data["resumed_from_step"] in (1, 2)
    assert data["steps"] == 4
    steps = [row["step"] for row in read_jsonl(paths[0] / "train_log.jsonl")]
    assert steps == [1, 2, 3, 4]
    assert "resuming from" in (work / "worker.log").read_text()


def test_failed_backbone_reports_log_and_others_finish(tiny_base_dir, prompts_file, tmp_path):
    config = apply_overrides(
        tiny_config(tiny_base_dir, prompts_file, tmp_path),
        [
            "objectives=[conciseness, test_seek_support:fails_in_rewarded_soup_0]",
            "normalization.method=none",
            "backbones.methods=[rewarded-soup]",
            "training.steps=1",
            "training.heldout_prompts=0",
        ],
    )
    with pytest.raises(SeekError, match=r"rewarded-soup-0 \(seed 0\) \(log: .*worker.log\)"):
        seek(config, tmp_path, progress=False)
    assert (
        read_backbone_json(tmp_path / "seed-0" / "backbones" / "rewarded-soup-1")["status"]
        == "done"
    )
    assert not (tmp_path / "seed-0" / "backbones" / "rewarded-soup-0").exists()
    log = (work_dir(tmp_path, 0, "rewarded-soup-0") / "worker.log").read_text()
    assert "deliberate failure" in log


@pytest.fixture(scope="module")
def tiny_classifier_dirs(tmp_path_factory, tiny_tokenizer) -> list[Path]:
    """Three tiny random sequence classifiers (2 labels) standing in for the hub reward models."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    paths = []
    for index in range(3):
        config = LlamaConfig(
            vocab_size=len(tiny_tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_labels=2,
            pad_token_id=tiny_tokenizer.pad_token_id,
        )
        torch.manual_seed(index)
        path = tmp_path_factory.mktemp(f"classifier{index}")
        LlamaForSequenceClassification(config).save_pretrained(path)
        tiny_tokenizer.save_pretrained(path)
        paths.append(path)
    return paths


HH_ROW = {
    "chosen": "\n\nHuman: What is the capital of France?\n\nAssistant: Paris.",
    "rejected": "\n\nHuman: What is the capital of France?\n\nAssistant: No.",
}
SUMMARIZE_ROW = {
    "info": {
        "id": "p1",
        "post": "The fox jumps over the lazy dog.",
        "title": "Fox",
        "subreddit": "animals",
    },
    "summaries": [{"text": "Fox jumps."}, {"text": "Dog sleeps."}],
    "choice": 0,
}


@pytest.mark.parametrize(
    ("config_name", "row", "presets"),
    [
        ("hh-rlhf.yaml", HH_ROW, ["helpful", "harmless", "humor"]),
        ("summary.yaml", SUMMARIZE_ROW, ["summary", "faithful", "deberta"]),
    ],
)
def test_dry_run_paper_configs(
    config_name, row, presets, tiny_base_dir, tiny_classifier_dirs, tmp_path, capsys
):
    from bonesoup.cli import main

    data = tmp_path / "rows.jsonl"
    # hh-rlhf validation prompts are the test rows outside every 4th one, so write 4 rows.
    data.write_text((json.dumps(row) + "\n") * 4)
    config_path = TESTS_DIR.parent / "configs" / config_name
    overrides = [
        f"model.name_or_path={tiny_base_dir}",
        f"prompts.path={data}",
        f"run_dir={tmp_path / 'run'}",
        "prompts.train=1",
        "training.prompts_per_step=1",
    ]
    if config_name == "summary.yaml":  # its validation split starts after 2,000 test posts
        overrides.append("training.heldout_prompts=0")
    overrides += [
        f"objectives.{i}.options={{model_name_or_path: {path}}}"
        for i, path in enumerate(tiny_classifier_dirs)
    ]
    argv = ["seek", str(config_path), "--dry-run"]
    for override in overrides:
        argv += ["--set", override]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["objectives"]) == presets
    assert len(report["backbones"]) == 6  # 3 bone-soup + 3 rewarded-soup
    assert report["backbones"][0]["weights"] == pytest.approx([0.7, 0.15, 0.15])
    assert report["prompts"]["train"] == 1
    assert not (tmp_path / "run" / "seed-0").exists()


def test_seek_rejects_unknown_override(tmp_path, capsys):
    from bonesoup.cli import main

    config_path = TESTS_DIR.parent / "configs" / "demo.yaml"
    assert main(["seek", str(config_path), "--dry-run", "--set", "training.stepz=2"]) == 2
    assert "did you mean 'steps'" in capsys.readouterr().err
