"""Sweep with real LoRA adapters as backbones: stacked-adapter soups and MOD through PEFT."""

from __future__ import annotations

import json

import pytest
from conftest import build_tiny_llama
from test_evaluate import _config

from bonesoup.config import save_config
from bonesoup.evaluate import evaluate_run
from bonesoup.objectives import Normalizer
from bonesoup.rundir import RunDir, read_jsonl


def _save_adapter(folder, seed: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    get_peft_model(build_tiny_llama(seed=0), config).save_pretrained(folder)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_base_dir):
    root = tmp_path_factory.mktemp("lora") / "run"
    run = RunDir(root)
    for index, name in enumerate(
        ["bone-soup-0", "bone-soup-1", "rewarded-soup-0", "rewarded-soup-1"]
    ):
        folder = run.backbone(0, name)
        _save_adapter(folder, seed=20 + index)
        (folder / "backbone.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "method": name.rsplit("-", 1)[0],
                    "weights": [1.0, 0.0],
                    "seed": 0,
                    "status": "done",
                }
            )
        )
    Normalizer(
        means={"conciseness": 0.5, "sentiment": 0.0},
        stds={"conciseness": 0.3, "sentiment": 0.5},
        counts={"conciseness": 8, "sentiment": 8},
    ).save(run.normalization)
    save_config(_config(tiny_base_dir, root), run.config)
    evaluate_run(root, methods=["bone-soup", "rewarded-soup", "mod", "theta_0"])
    return root


def test_lora_sweep_rows(lora_run):
    rows = read_jsonl(RunDir(lora_run).eval / "rows.jsonl")
    methods = sorted(row["method"] for row in rows)
    assert methods == ["bone-soup"] * 3 + ["mod"] * 3 + ["rewarded-soup"] * 3 + ["theta_0"]


def test_lora_mod_corner_matches_rewarded_soup(lora_run):
    # At a corner MOD is one backbone alone, the same model as the Rewarded Soups corner soup,
    # and both sample with the same seed for that preference.
    responses = read_jsonl(RunDir(lora_run).eval / "responses.jsonl")
    for corner in ([1.0, 0.0], [0.0, 1.0]):
        mod = [
            r["response"] for r in responses if r["method"] == "mod" and r["preference"] == corner
        ]
        soup = [
            r["response"]
            for r in responses
            if r["method"] == "rewarded-soup" and r["preference"] == corner
        ]
        assert len(mod) == 4
        assert mod == soup
