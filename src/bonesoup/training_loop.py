"""The RL run of one backbone on TRL: reward functions, trainer arguments, logging and saving.

`run_training` builds one reward function per objective (each returns the normalised score
z_i = (r_i - mean_i) / std_i), passes the backbone's weights as `reward_weights` and the KL
coefficient as `beta`, trains for `training.steps` optimiser steps and saves the adapter or the
full weights to the staging folder, followed by the held-out check of h_j against theta_0.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from bonesoup.config import RunConfig
from bonesoup.objectives import Normalizer, Objective, get_objective
from bonesoup.rundir import RunDir, append_jsonl
from bonesoup.training import BackboneSpec
from bonesoup.training_sampling import (
    SamplingSettings,
    reward_summary,
    sample_responses,
    score_objectives,
)

logger = logging.getLogger(__name__)


class ObjectiveReward:
    """TRL reward function for one objective: returns normalised scores, keeps the raw ones.

    TRL names the logged metric `rewards/<__name__>/mean` and passes dataset columns as keyword
    arguments: `raw_prompt` (the prompt before the chat template) and `reference`.
    """

    def __init__(self, objective: Objective, name: str, normalizer: Normalizer) -> None:
        self.objective = objective
        self.__name__ = name
        self.normalizer = normalizer
        self.raw_scores: list[float] = []
        self.normalized_scores: list[float] = []

    def __call__(self, prompts: list, completions: list, **columns: Any) -> list[float]:
        raw_prompts = columns.get("raw_prompt") or prompts
        references = columns.get("reference") if self.objective.needs_reference else None
        responses = [_completion_text(completion) for completion in completions]
        raw = self.objective.score(list(raw_prompts), responses, references)
        normalized = self.normalizer.normalize(self.__name__, raw)
        self.raw_scores.extend(raw)
        self.normalized_scores.extend(normalized)
        return normalized

    def drain(self) -> tuple[list[float], list[float]]:
        """Return and clear the raw and normalised scores gathered since the last call."""
        raw, normalized = self.raw_scores, self.normalized_scores
        self.raw_scores, self.normalized_scores = [], []
        return raw, normalized


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(message.get("content", "") for message in completion)  # conversational form


class TrainLogCallback(TrainerCallback):
    """Append one row per logged step to train_log.jsonl with the metric names of this project.

    `reward/<objective>/mean` is the mean normalised score as optimised, `reward/<objective>/raw_mean`
    the raw one (on the main process only when data parallel), `reward/scalarized` = sum_i w_i reward/<objective_i>/mean, `kl` TRL's mean
    per-token log-ratio log(pi / pi_0) of the sampled tokens.
    """

    def __init__(self, path: Path, rewards: list[ObjectiveReward], weights: list[float]) -> None:
        self.path = path
        self.rewards = rewards
        self.weights = weights
        self.start = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if not logs or not any(key.startswith("rewards/") for key in logs):
            return
        raw_scores = [reward.drain()[0] for reward in self.rewards]
        if not state.is_world_process_zero:
            return
        row: dict[str, Any] = {
            "step": state.global_step,
            "seconds": time.perf_counter() - self.start,
        }
        scalarized = 0.0
        for reward, weight, raw in zip(self.rewards, self.weights, raw_scores):
            name = reward.__name__
            # TRL's mean is gathered over all processes; the raw mean is this process's share.
            mean = logs[f"rewards/{name}/mean"]
            row[f"reward/{name}/mean"] = mean
            row[f"reward/{name}/raw_mean"] = statistics.fmean(raw) if raw else None
            scalarized += weight * mean
        row["reward/scalarized"] = scalarized
        row["trl/reward"] = logs.get("reward")
        row["kl"] = logs.get("kl", 0.0)
        row["completion_length"] = logs.get("completions/mean_length")
        row["loss"] = logs.get("loss")
        row["step_time"] = logs.get("step_time")
        append_jsonl(self.path, row)


def build_reward_functions(config: RunConfig, normalizer: Normalizer) -> list[ObjectiveReward]:
    """Return one reward function per configured objective, in config order."""
    functions = []
    for item in config.objectives:
        objective = get_objective(item.name, **item.options)
        functions.append(ObjectiveReward(objective, item.name, normalizer))
    return functions


def load_normalizer(config: RunConfig, run: RunDir) -> Normalizer:
    """Read RUN_DIR/normalization.json, or identity statistics for normalization.method none."""
    if config.normalization.method == "none":
        return identity_normalizer(config.objective_names)
    return Normalizer.load(run.normalization)


def identity_normalizer(names: list[str]) -> Normalizer:
    """Return a normaliser with mean 0 and std 1 for every objective (raw scores pass through)."""
    return Normalizer(
        means={name: 0.0 for name in names},
        stds={name: 1.0 for name in names},
        counts={name: 0 for name in names},
    )


def _trainer_args(config: RunConfig, spec: BackboneSpec, work: Path):
    """Build RLOOConfig or GRPOConfig; CPU needs use_cpu, no bf16 and no gradient checkpointing."""
    training = config.training
    on_gpu = torch.cuda.is_available()
    common: dict[str, Any] = {
        "output_dir": str(work / "checkpoints"),
        "max_steps": training.steps,
        "per_device_train_batch_size": training.prompts_per_step * training.completions_per_prompt,
        "gradient_accumulation_steps": 1,
        "num_generations": training.completions_per_prompt,
        "max_completion_length": training.max_new_tokens,
        "learning_rate": training.learning_rate,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "beta": training.kl_coef,
        "reward_weights": list(spec.weights),
        "temperature": training.temperature,
        "top_p": training.top_p,
        "use_cpu": not on_gpu,
        "bf16": on_gpu and config.model.dtype == "bfloat16",
        "fp16": on_gpu and config.model.dtype == "float16",
        "gradient_checkpointing": False,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": training.save_steps,
        "save_total_limit": 1,
        "seed": spec.seed,
        "data_seed": spec.seed,
        "report_to": list(training.logging) or "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    if training.algorithm == "grpo":
        from trl import GRPOConfig

        # Rewards are already on a common scale; dividing by the group std would reweight them.
        return GRPOConfig(**common, scale_rewards="none")
    from trl import RLOOConfig

    return RLOOConfig(**common, normalize_advantages=False)


def _peft_config(config: RunConfig):
    if config.training.full_finetune:
        return None
    from peft import LoraConfig

    lora = config.training.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        use_rslora=lora.use_rslora,
        task_type="CAUSAL_LM",
    )


def _train_dataset(config: RunConfig, tokenizer):
    from datasets import Dataset

    from bonesoup.training_sampling import load_formatted_prompts

    examples, texts = load_formatted_prompts(config, tokenizer, "train", config.prompts.train)
    rows = [
        {"prompt": text, "raw_prompt": example.prompt, "reference": example.reference}
        for example, text in zip(examples, texts)
    ]
    return Dataset.from_list(rows)


def run_training(
    config: RunConfig,
    spec: BackboneSpec,
    run: RunDir,
    work: Path,
    log_path: Path,
    checkpoint: Path | None,
    staging: Path,
) -> dict[str, Any] | None:
    """Train one backbone and save it to `staging`; return facts for backbone.json.

    Under `accelerate launch` every process trains; only the main process returns the facts,
    the others return None.
    """
    from bonesoup.models import load_causal_lm, load_tokenizer, resolve_model_path

    model_path = resolve_model_path(config.model.name_or_path)
    tokenizer = load_tokenizer(model_path, config.model.trust_remote_code)
    # Full fine-tuning with kl_coef > 0: TRL reloads the reference from the policy's own path,
    # which is `model_path` because the policy is loaded from it here.
    policy = load_causal_lm(model_path, config.model.dtype, config.model.trust_remote_code)
    normalizer = load_normalizer(config, run)
    rewards = build_reward_functions(config, normalizer)
    args = _trainer_args(config, spec, work)
    trainer_class = _trainer_class(config.training.algorithm)
    trainer = trainer_class(
        model=policy,
        reward_funcs=rewards,
        args=args,
        train_dataset=_train_dataset(config, tokenizer),
        processing_class=tokenizer,
        peft_config=_peft_config(config),
        callbacks=[TrainLogCallback(log_path, rewards, list(spec.weights))],
    )
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_seconds = time.perf_counter() - start

    trainer.save_model(str(staging))
    if not trainer.accelerator.is_main_process:
        return None
    # Trainer also pickles its arguments next to the weights; a backbone folder keeps safetensors
    # and JSON only.
    (staging / "training_args.bin").unlink(missing_ok=True)
    tokenizer.save_pretrained(str(staging))
    heldout = heldout_check(config, spec, run, trainer.model, tokenizer, normalizer)
    logger.info(
        "%s: held-out h = %.3f (theta_0 %.3f) on %d prompts",
        spec.name,
        heldout["backbone"].get("reward/scalarized", float("nan")),
        heldout["theta_0"].get("reward/scalarized", float("nan")),
        heldout["prompts"],
    )
    return {
        "base_model": model_path,
        "steps": trainer.state.global_step,
        "train_seconds": round(train_seconds, 2),
        "heldout": heldout,
    }


def _trainer_class(algorithm: str):
    if algorithm == "grpo":
        from trl import GRPOTrainer

        return GRPOTrainer
    from trl import RLOOTrainer

    return RLOOTrainer


def heldout_settings(config: RunConfig) -> SamplingSettings:
    """Sampling for the held-out check: training's sampling settings with a fixed seed."""
    training = config.training
    return SamplingSettings(
        max_new_tokens=training.max_new_tokens,
        temperature=training.temperature,
        top_p=training.top_p,
        seed=config.seed,
    )


def heldout_scores(config: RunConfig, model, tokenizer) -> dict[str, list[float]]:
    """Sample one response per validation prompt (fixed seed) and score every objective."""
    from bonesoup.training_sampling import load_formatted_prompts

    count = config.training.heldout_prompts
    examples, texts = load_formatted_prompts(config, tokenizer, "validation", count)
    responses = sample_responses(model, tokenizer, texts, heldout_settings(config))
    objectives = [get_objective(item.name, **item.options) for item in config.objectives]
    references = [example.reference for example in examples]
    return score_objectives(objectives, [e.prompt for e in examples], responses, references)


def heldout_check(
    config: RunConfig, spec: BackboneSpec, run: RunDir, model, tokenizer, normalizer: Normalizer
) -> dict[str, Any]:
    """Compare the backbone's own reward h_j on validation prompts with theta_0's."""
    from bonesoup.seek_heldout import load_theta0_heldout

    names = config.objective_names
    if config.training.heldout_prompts == 0:
        return {"prompts": 0, "theta_0": {}, "backbone": {}}
    scores = heldout_scores(config, model, tokenizer)
    theta0_scores = load_theta0_heldout(run, config)
    return {
        "prompts": len(next(iter(scores.values()))),
        "theta_0": reward_summary(theta0_scores, normalizer, names, spec.weights),
        "backbone": reward_summary(scores, normalizer, names, spec.weights),
    }
