"""Seek: train the backbones, each with KL-regularised RL on its own mixture of rewards.

Backbone j of Bone Soups is trained on h_j = sum_i B[j, i] z_i, where B is the backbone matrix
(circulant with `backbones.beta` on the diagonal unless `backbones.matrix` is given) and z_i is
objective i normalised with statistics of the starting model theta_0's own samples. Rewarded
Soups backbones use B = identity, MORLHF points use any weight vector.

    bonesoup seek configs/demo.yaml            # train every missing backbone
    bonesoup seek configs/demo.yaml --dry-run  # validate config, objectives, prompts and plan

Steps: `calibrate` fits RUN_DIR/normalization.json, theta_0's held-out scores are sampled once,
then every missing backbone trains in its own process (`training.workers` at a time). Finished
backbones with the same fingerprint are reused; an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bonesoup.backbone import check_backbone_matrix, circulant_backbone_matrix
from bonesoup.config import RunConfig, save_config
from bonesoup.errors import BonesoupError
from bonesoup.objectives import Normalizer, get_objective
from bonesoup.rundir import RunDir, write_json_atomic
from bonesoup.seek_heldout import (
    ensure_theta0_heldout,
    sampling_fingerprint,
    theta0_heldout_is_current,
)
from bonesoup.training import (
    BackboneSpec,
    backbone_fingerprint,
    is_backbone_done,
    read_backbone_json,
    work_dir,
)
from bonesoup.training_loop import identity_normalizer
from bonesoup.training_sampling import (
    SamplingSettings,
    load_formatted_prompts,
    sample_responses,
    score_objectives,
)

logger = logging.getLogger(__name__)

METHODS = ("bone-soup", "rewarded-soup")


class SeekError(BonesoupError):
    """One or more backbones failed to train; the message lists them with their log files."""


def backbone_matrix(config: RunConfig) -> np.ndarray:
    """Return the n x n backbone matrix B: `backbones.matrix` if given, else circulant(n, beta)."""
    n = len(config.objectives)
    if config.backbones.matrix is not None:
        matrix = check_backbone_matrix(config.backbones.matrix)
        if matrix.shape[0] != n:
            raise BonesoupError(
                f"backbones.matrix is {matrix.shape[0]} x {matrix.shape[1]} but there are {n} "
                f"objectives; give one row and one column per objective"
            )
        return matrix
    return circulant_backbone_matrix(n, config.backbones.beta)


def plan_backbones(config: RunConfig) -> list[BackboneSpec]:
    """List every backbone of the run: per training seed, bone-soup-<j>, rewarded-soup-<j>, morlhf-<k>.

    bone-soup-<j> trains on row j of B, rewarded-soup-<j> on objective j alone (row j of the
    identity), morlhf-<k> on the k-th weight vector of `backbones.morlhf`.
    """
    n = len(config.objectives)
    rows_by_method: dict[str, np.ndarray] = {}
    for method in config.backbones.methods:
        if method == "bone-soup":
            rows_by_method[method] = backbone_matrix(config)
        elif method == "rewarded-soup":
            rows_by_method[method] = np.eye(n)
        else:
            raise BonesoupError(
                f"backbones.methods contains {method!r}, which is invalid; use bone-soup and/or "
                "rewarded-soup (MORLHF points go in backbones.morlhf)"
            )
    specs = []
    for seed in config.training.seeds:
        for method, rows in rows_by_method.items():
            for j, row in enumerate(rows):
                specs.append(BackboneSpec(f"{method}-{j}", method, _floats(row), int(seed)))
        for k, weights in enumerate(config.backbones.morlhf):
            specs.append(BackboneSpec(f"morlhf-{k}", "morlhf", _floats(weights), int(seed)))
    return specs


def _floats(row: Any) -> list[float]:
    return [round(float(value), 12) for value in row]


def calibrate(config: RunConfig, run_dir: str | Path, model=None, tokenizer=None) -> Normalizer:
    """Fit per-objective mean and std on theta_0's samples and save RUN_DIR/normalization.json.

    theta_0 answers `prompts.calibration` training prompts `normalization.samples_per_prompt`
    times each, with the training sampling settings (max_new_tokens, temperature, top_p) and
    seed `config.seed`. A saved file with the same fingerprint is reused. With
    normalization.method "none" the statistics are mean 0 and std 1 (raw scores).
    """
    run = RunDir(Path(run_dir))
    if config.normalization.method == "none":
        return identity_normalizer(config.objective_names)
    fingerprint = sampling_fingerprint(config, config.normalization.samples_per_prompt)
    existing = _read_normalization(run.normalization)
    if existing is not None and existing[1] == fingerprint:
        return existing[0]
    if model is None or tokenizer is None:
        model, tokenizer = load_theta0(config)
    scores = _calibration_scores(config, model, tokenizer)
    normalizer = Normalizer.fit(config.objective_names, scores)
    write_json_atomic(run.normalization, {**normalizer.to_json(), "fingerprint": fingerprint})
    for name in config.objective_names:
        logger.info(
            "normalization: %s mean %.4g std %.4g (%d samples)",
            name,
            normalizer.means[name],
            normalizer.stds[name],
            normalizer.counts[name],
        )
    return normalizer


def _read_normalization(path: Path) -> tuple[Normalizer, str | None] | None:
    import json

    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return Normalizer.from_json(data), data.get("fingerprint")


def _calibration_scores(config: RunConfig, model, tokenizer) -> dict[str, list[float]]:
    repeats = config.normalization.samples_per_prompt
    examples, texts = load_formatted_prompts(config, tokenizer, "train", config.prompts.calibration)
    if not examples:
        raise BonesoupError(f"prompt source {config.prompts.source!r} has no training prompts")
    training = config.training
    settings = SamplingSettings(
        training.max_new_tokens, training.temperature, training.top_p, seed=config.seed
    )
    logger.info("calibration: sampling theta_0 on %d prompts x %d", len(examples), repeats)
    responses = sample_responses(
        model, tokenizer, [t for t in texts for _ in range(repeats)], settings
    )
    repeated = [example for example in examples for _ in range(repeats)]
    objectives = [get_objective(item.name, **item.options) for item in config.objectives]
    return score_objectives(
        objectives, [e.prompt for e in repeated], responses, [e.reference for e in repeated]
    )


def load_theta0(config: RunConfig):
    """Load the starting model theta_0 and its tokenizer (left padding) for sampling."""
    from bonesoup.models import load_causal_lm, load_tokenizer, resolve_model_path

    path = resolve_model_path(config.model.name_or_path)
    tokenizer = load_tokenizer(path, config.model.trust_remote_code)
    model = load_causal_lm(path, config.model.dtype, config.model.trust_remote_code)
    return model, tokenizer


@dataclass
class SeekPlan:
    specs: list[BackboneSpec]
    done: list[BackboneSpec]
    missing: list[BackboneSpec]


def make_plan(config: RunConfig, run_dir: str | Path, seeds: list[int] | None = None) -> SeekPlan:
    """Split the planned backbones into finished (same fingerprint) and missing ones."""
    run = RunDir(Path(run_dir))
    specs = [s for s in plan_backbones(config) if seeds is None or s.seed in seeds]
    if not specs:
        raise BonesoupError(
            f"no backbones planned for seeds {seeds}; training.seeds is {config.training.seeds}"
        )
    done = [
        s
        for s in specs
        if is_backbone_done(run.backbone(s.seed, s.name), backbone_fingerprint(config, s))
    ]
    missing = [s for s in specs if s not in done]
    return SeekPlan(specs, done, missing)


def seek(
    config: RunConfig, run_dir: str | Path, seeds: list[int] | None = None, progress: bool = True
) -> list[Path]:
    """Train every missing backbone of the run; return the folders of all planned backbones.

    Raises:
        SeekError: a backbone process failed; the others still ran, and the message names
            each failed backbone's log file.
    """
    from bonesoup.seek_workers import run_workers

    run = RunDir(Path(run_dir))
    run.root.mkdir(parents=True, exist_ok=True)
    plan = make_plan(config, run.root, seeds)
    for spec in plan.done:
        logger.info("%s (seed %d): already trained, reusing it", spec.name, spec.seed)
    if plan.missing:
        _prepare_baselines(config, run)
        for spec in plan.missing:
            _write_work_inputs(config, run, spec)
        failures = run_workers(config, run, plan.missing, progress=progress)
        if failures:
            raise SeekError(
                f"{len(failures)} of {len(plan.missing)} backbones failed: "
                + "; ".join(f"{name} (log: {log})" for name, log in failures)
                + ". Fix the cause and rerun the same command: finished backbones are reused"
            )
    _log_heldout(config, run.root, seeds)
    return [run.backbone(spec.seed, spec.name) for spec in plan.specs]


def _log_heldout(config: RunConfig, run_dir: Path, seeds: list[int] | None) -> None:
    for row in heldout_table(config, run_dir, seeds):
        if row["backbone"] is not None:
            logger.info(
                "%s (seed %d): held-out h %.3f, theta_0 %.3f on %s validation prompts",
                row["name"],
                row["seed"],
                row["backbone"],
                row["theta_0"],
                row["prompts"],
            )


def _prepare_baselines(config: RunConfig, run: RunDir) -> None:
    """Fit the normalisation and sample theta_0's held-out scores, loading theta_0 once if needed."""
    loaded: list = []

    def theta0():
        if not loaded:
            loaded.extend(load_theta0(config))
        return loaded

    fingerprint = sampling_fingerprint(config, config.normalization.samples_per_prompt)
    existing = _read_normalization(run.normalization)
    if config.normalization.method != "none" and (existing is None or existing[1] != fingerprint):
        calibrate(config, run.root, *theta0())
    if not theta0_heldout_is_current(config, run):
        ensure_theta0_heldout(config, run, *theta0())
    loaded.clear()
    gc.collect()


def _write_work_inputs(config: RunConfig, run: RunDir, spec: BackboneSpec) -> None:
    work = work_dir(run.root, spec.seed, spec.name)
    work.mkdir(parents=True, exist_ok=True)
    save_config(config, work / "config.yaml")
    write_json_atomic(work / "spec.json", spec.__dict__)


def heldout_table(config: RunConfig, run_dir: str | Path, seeds: list[int] | None = None):
    """Return one row per finished backbone: name, seed, weights, held-out h of theta_0 and backbone."""
    run = RunDir(Path(run_dir))
    rows = []
    for spec in plan_backbones(config):
        if seeds is not None and spec.seed not in seeds:
            continue
        data = read_backbone_json(run.backbone(spec.seed, spec.name)) or {}
        heldout = data.get("heldout", {})
        rows.append(
            {
                "name": spec.name,
                "seed": spec.seed,
                "weights": spec.weights,
                "theta_0": heldout.get("theta_0", {}).get("reward/scalarized"),
                "backbone": heldout.get("backbone", {}).get("reward/scalarized"),
                "prompts": heldout.get("prompts"),
            }
        )
    return rows


def dry_run(config: RunConfig, run_dir: str | Path, seeds: list[int] | None = None) -> dict:
    """Validate config, objectives, prompts, tokenizer and plan without training anything.

    Builds every objective (loading reward models), loads a few prompts of each split, formats
    one with the tokenizer's chat template and builds the TRL trainer arguments of each backbone.
    """
    from bonesoup.models import load_tokenizer
    from bonesoup.training_loop import _trainer_args

    plan = make_plan(config, run_dir, seeds)
    objectives = {item.name: get_objective(item.name, **item.options) for item in config.objectives}
    model_path = config.model.name_or_path
    if model_path == "embedded":
        from bonesoup.models import find_embedded_gguf

        find_embedded_gguf()
        tokenizer = None
    else:
        tokenizer = load_tokenizer(model_path, config.model.trust_remote_code)
    counts = {}
    example_text = None
    for split, limit in (
        ("train", config.prompts.train),
        ("validation", config.prompts.validation),
    ):
        if tokenizer is None:
            from bonesoup.prompts import load_prompts
            from bonesoup.training_sampling import prompt_options

            examples = load_prompts(config.prompts.source, split, limit, **prompt_options(config))
        else:
            examples, texts = load_formatted_prompts(config, tokenizer, split, limit)
            example_text = example_text or (texts[0] if texts else None)
        counts[split] = len(examples)
        if not examples and (split == "train" or config.training.heldout_prompts > 0):
            raise BonesoupError(
                f"prompt source {config.prompts.source!r} has no {split} prompts; check "
                "prompts.path, or set training.heldout_prompts=0 to skip the held-out check"
            )
    needed = config.training.steps * config.training.prompts_per_step
    if counts["train"] < config.training.prompts_per_step:
        raise BonesoupError(
            f"{counts['train']} training prompts is fewer than training.prompts_per_step = "
            f"{config.training.prompts_per_step}; raise prompts.train or lower prompts_per_step"
        )
    for spec in plan.missing:
        _trainer_args(config, spec, work_dir(Path(run_dir), spec.seed, spec.name))
    return {
        "backbones": [spec.__dict__ for spec in plan.specs],
        "done": [spec.name for spec in plan.done],
        "missing": [spec.name for spec in plan.missing],
        "objectives": {name: type(obj).__name__ for name, obj in objectives.items()},
        "prompts": counts,
        "prompt_epochs": round(needed / counts["train"], 2),
        "example_prompt": example_text,
    }
