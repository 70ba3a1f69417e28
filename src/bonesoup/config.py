"""Run configuration: one YAML file names the model, prompts, objectives, backbones, training and evaluation.

Every section is a dataclass whose field comments document the option. Unknown keys are errors that
suggest the closest valid key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bonesoup.errors import BonesoupError


@dataclass
class ModelConfig:
    name_or_path: str = "embedded"  # "embedded" (SmolLM2-135M-Instruct), a hub id or a local folder
    dtype: str = "float32"  # weights and training dtype: float32, bfloat16 or float16
    trust_remote_code: bool = (
        False  # run model code from the hub; off unless you trust the repository
    )
    system_prompt: str | None = None  # system message for the chat template; None keeps its default


@dataclass
class PromptsConfig:
    source: str = "chitchat"  # chitchat, news, hh-rlhf, summarize or jsonl
    path: str | None = None  # local file or hub id for hh-rlhf, summarize and jsonl
    train: int = 64  # prompts used for training (RL)
    calibration: int = 32  # training prompts sampled to estimate reward normalisation
    validation: int = 16  # held-out prompts for extrapolation and beta selection
    test: int = 32  # held-out prompts for the evaluation sweep
    max_words: int | None = 25  # chitchat only: longest question kept
    max_prompt_tokens: int = 256  # prompts are truncated from the left to this many tokens


@dataclass
class ObjectiveConfig:
    name: str  # registered objective, reward-model preset, "hf:<id or path>" or "module:function"
    options: dict[str, Any] = field(default_factory=dict)  # keyword arguments for the objective


@dataclass
class NormalizationConfig:
    method: str = "zscore"  # zscore (mean and std of the starting model's samples) or none
    samples_per_prompt: int = 2  # starting-model samples per calibration prompt


@dataclass
class BackbonesConfig:
    beta: float = 0.7  # diagonal of the circulant backbone matrix, in (0, 1] and not 1/n
    matrix: list[list[float]] | None = None  # explicit backbone matrix; overrides beta
    methods: list[str] = field(default_factory=lambda: ["bone-soup", "rewarded-soup"])
    morlhf: list[list[float]] = field(default_factory=list)  # extra RL runs, one per weight vector


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"
    use_rslora: bool = False


@dataclass
class TrainingConfig:
    algorithm: str = "rloo"  # rloo (KL-regularised reward, leave-one-out baseline) or grpo
    steps: int = 12  # optimiser steps per backbone
    prompts_per_step: int = 4
    completions_per_prompt: int = 4
    max_new_tokens: int = 24
    learning_rate: float = 1e-3
    kl_coef: float = 0.03  # weight of the KL penalty to the starting model
    temperature: float = 1.0
    top_p: float = 1.0
    full_finetune: bool = False  # train every weight instead of a LoRA adapter
    lora: LoraConfig = field(default_factory=LoraConfig)
    save_steps: int = 4  # checkpoint interval, for resuming an interrupted backbone
    workers: int = 2  # backbones trained at once, one process each, on CPU
    seeds: list[int] = field(default_factory=lambda: [0])  # one backbone set per training seed
    logging: list[str] = field(default_factory=list)  # extra loggers: tensorboard, wandb
    heldout_prompts: int = 8  # validation prompts for the held-out reward check after training
    launcher: str = "python"  # python (one process per backbone) or accelerate (accelerate launch)


@dataclass
class SftConfig:
    enabled: bool = True  # run `bonesoup sft` for base models; instruction-tuned models are skipped
    data: str = "hh-rlhf"  # hh-rlhf (chosen dialogues) or summarize (post, then the chosen summary)
    path: str | None = None  # local JSONL file or hub id of the data
    examples: int = 1000  # training examples read from the data
    steps: int = 200  # optimiser steps
    batch_size: int = 8
    learning_rate: float = 2e-4
    max_length: int = 512  # tokens per example, prompt and completion together
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(r=16, alpha=32))
    output: str | None = None  # folder of the merged SFT model; None: RUN_DIR/sft


@dataclass
class EvaluationConfig:
    methods: list[str] = field(
        default_factory=lambda: ["bone-soup", "rewarded-soup", "aba", "theta_0"]
    )
    grid: int | None = None  # None: 11 points for n = 2, 13 for n = 3, a simplex lattice above
    test_prompts: int | None = None  # defaults to prompts.test
    samples_per_prompt: int = 1
    max_new_tokens: int = 24
    top_p: float = 0.9
    temperature: float = 1.0
    batch_size: int = 16
    seed: int = 0
    extrapolation_candidates: list[float] = field(
        default_factory=lambda: [1.0, 1.111, 1.25, 1.429, 1.667, 2.0]
    )  # k = 1/(1-a) for a in 0..0.5; 1.0 means no extrapolation
    workers: int = 2  # processes the sweep is split across on CPU


@dataclass
class RunConfig:
    run_dir: str = "runs/demo"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    objectives: list[ObjectiveConfig] = field(
        default_factory=lambda: [ObjectiveConfig("relevance"), ObjectiveConfig("conciseness")]
    )
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    backbones: BackbonesConfig = field(default_factory=BackbonesConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    @property
    def objective_names(self) -> list[str]:
        return [objective.name for objective in self.objectives]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self, *sections: str) -> str:
        """Return a short hash of the named sections, used to key cached work."""
        data = self.to_dict()
        chosen = {name: data[name] for name in sections} if sections else data
        text = json.dumps(chosen, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys with a suggestion."""
    if not isinstance(data, dict):
        raise BonesoupError(f"{where} must be a mapping, got {type(data).__name__}: {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = (
                f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(fields)}"
            )
            raise BonesoupError(f"unknown key {where}.{key}{hint}")
        nested = _NESTED.get((cls, key))
        if nested is not None and value is not None:
            value = _build(nested, value, f"{where}.{key}")
        values[key] = value
    return cls(**values)


def _build_objectives(data: Any) -> list[ObjectiveConfig]:
    if not isinstance(data, list) or not data:
        raise BonesoupError(f"objectives must be a non-empty list, got {data!r}")
    built = []
    for index, item in enumerate(data):
        if isinstance(item, str):
            item = {"name": item}
        built.append(_build(ObjectiveConfig, item, f"objectives[{index}]"))
    return built


_NESTED: dict[tuple[type, str], type] = {
    (RunConfig, "model"): ModelConfig,
    (RunConfig, "prompts"): PromptsConfig,
    (RunConfig, "normalization"): NormalizationConfig,
    (RunConfig, "backbones"): BackbonesConfig,
    (RunConfig, "training"): TrainingConfig,
    (RunConfig, "evaluation"): EvaluationConfig,
    (TrainingConfig, "lora"): LoraConfig,
    (RunConfig, "sft"): SftConfig,
    (SftConfig, "lora"): LoraConfig,
}


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig from a parsed YAML mapping."""
    data = dict(data or {})
    objectives = data.pop("objectives", None)
    config = _build(RunConfig, data, "config")
    if objectives is not None:
        config.objectives = _build_objectives(objectives)
    validate_config(config)
    return config


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """Return a copy of `config` with `section.key=value` overrides applied and validated.

    Values are parsed as YAML, so `training.steps=4`, `training.seeds=[0,1]` and
    `model.name_or_path=/models/tiny` all work. `objectives` takes a whole YAML list.
    """
    data = config.to_dict()
    for override in overrides:
        key, separator, text = override.partition("=")
        if not separator or not key.strip():
            raise BonesoupError(
                f"invalid override {override!r}: expected section.key=value, e.g. training.steps=4"
            )
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise BonesoupError(f"invalid value in override {override!r}: {error}") from error
        _set_path(data, key.strip().split("."), value, override)
    return config_from_dict(data)


def _set_path(data: dict[str, Any], parts: list[str], value: Any, override: str) -> None:
    node: Any = data
    for index, part in enumerate(parts[:-1]):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[: index + 1])
            raise BonesoupError(f"invalid override {override!r}: {where} is not a config section")
        node = node[part]
    last = parts[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value  # unknown keys are rejected with a suggestion by config_from_dict
    else:
        raise BonesoupError(f"invalid override {override!r}: {'.'.join(parts)} cannot be set")


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML run configuration."""
    path = Path(path)
    if not path.is_file():
        raise BonesoupError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise BonesoupError(f"invalid YAML in {path}: {error}".replace("\n", " ")) from error
    return config_from_dict(data or {})


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the configuration as YAML (atomically)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    temporary.replace(path)


# Methods that `bonesoup evaluate` accepts; bonesoup.evaluate.METHODS is this tuple.
EVALUATION_METHODS = (
    "bone-soup",
    "bone-soup-extrapolated",
    "rewarded-soup",
    "aba",
    "morlhf",
    "theta_0",
    "mod",
)


def _check_integer(name: str, value: Any, low: int) -> None:
    """Reject a value that is not an integer (booleans included) or is below `low`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BonesoupError(f"{name} = {value!r} is invalid: expected an integer >= {low}")
    if value < low:
        raise BonesoupError(f"{name} = {value} is invalid: expected an integer >= {low}")


def _check_number(
    name: str, value: Any, low: float, high: float = math.inf, low_open: bool = False
) -> None:
    """Reject a value that is not a finite number in [low, high], or (low, high] with low_open."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BonesoupError(f"{name} = {value!r} is invalid: expected a finite number")
    below = value <= low if low_open else value < low
    if below or value > high:
        left = "(" if low_open else "["
        right = "]" if math.isfinite(high) else ")"
        raise BonesoupError(
            f"{name} = {value} is invalid: expected a value in {left}{low}, {high}{right}"
        )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise BonesoupError(message)


def validate_config(config: RunConfig) -> None:
    """Check the type and range of every value, and the rules that tie fields together."""
    n = len(config.objectives)
    _require(n >= 2, f"objectives lists {n} objective; Bone Soups needs at least 2")
    names = config.objective_names
    _require(len(set(names)) == n, f"objectives repeat a name: {names}; list each objective once")

    _check_integer("seed", config.seed, low=0)
    beta = config.backbones.beta
    _check_number("backbones.beta", beta, low=0, high=1, low_open=True)
    _require(
        0 < beta <= 1 and abs(beta - 1 / n) > 1e-9,
        f"backbones.beta = {beta} is invalid: it must be in (0, 1] and not 1/n = {1 / n:.4g}",
    )
    for weights in config.backbones.morlhf:
        _require(
            len(weights) == n and min(weights) >= 0 and abs(sum(weights) - 1) <= 1e-6,
            f"backbones.morlhf entry {weights} must have {n} non-negative weights summing to 1",
        )

    training = config.training
    _require(
        training.algorithm in ("rloo", "grpo"),
        f"training.algorithm {training.algorithm!r} is invalid: use rloo or grpo",
    )
    for key in ("steps", "prompts_per_step", "max_new_tokens", "workers", "save_steps"):
        _check_integer(f"training.{key}", getattr(training, key), low=1)
    _require(
        training.completions_per_prompt >= 2,
        f"training.completions_per_prompt = {training.completions_per_prompt}: expected >= 2, "
        "because the baseline of each completion comes from the others of its prompt",
    )
    _require(
        training.launcher in ("python", "accelerate"),
        f"training.launcher {training.launcher!r} is invalid: use python or accelerate",
    )
    _require(
        isinstance(training.heldout_prompts, int) and training.heldout_prompts >= 0,
        f"training.heldout_prompts = {training.heldout_prompts!r}: expected >= 0",
    )

    for logger_name in training.logging:
        _require(
            logger_name in ("tensorboard", "wandb"),
            f"training.logging entry {logger_name!r} is invalid: use tensorboard or wandb "
            "(each needs its package installed: pip install tensorboard, or pip install wandb)",
        )
        _require(
            importlib.util.find_spec(logger_name) is not None,
            f"training.logging lists {logger_name} but the {logger_name} package is not "
            f"installed; pip install {logger_name}, or remove it from training.logging",
        )
    _check_number("training.kl_coef", training.kl_coef, low=0)
    _check_number("training.learning_rate", training.learning_rate, low=0, low_open=True)
    _check_number("training.temperature", training.temperature, low=0, low_open=True)
    _check_number("training.top_p", training.top_p, low=0, high=1, low_open=True)
    _check_integer("training.lora.r", training.lora.r, low=1)
    _check_number("training.lora.alpha", training.lora.alpha, low=0, low_open=True)
    _check_number("training.lora.dropout", training.lora.dropout, low=0, high=1)
    for seed in training.seeds:
        _check_integer("training.seeds entry", seed, low=0)
    _require(
        config.model.dtype in ("float32", "bfloat16", "float16"),
        f"model.dtype {config.model.dtype!r} is invalid: use float32, bfloat16 or float16",
    )
    _require(
        config.normalization.method in ("zscore", "none"),
        f"normalization.method {config.normalization.method!r} is invalid: use zscore or none",
    )

    evaluation = config.evaluation
    _check_number("evaluation.top_p", evaluation.top_p, low=0, high=1, low_open=True)
    _check_number("evaluation.temperature", evaluation.temperature, low=0, low_open=True)
    for key in ("max_new_tokens", "batch_size", "workers", "samples_per_prompt"):
        _check_integer(f"evaluation.{key}", getattr(evaluation, key), low=1)
    _check_integer("evaluation.seed", evaluation.seed, low=0)
    if evaluation.grid is not None:
        _check_integer("evaluation.grid", evaluation.grid, low=1)
    if evaluation.test_prompts is not None:
        _check_integer("evaluation.test_prompts", evaluation.test_prompts, low=1)
    for method in evaluation.methods:
        if method not in EVALUATION_METHODS:
            close = difflib.get_close_matches(str(method), EVALUATION_METHODS, n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else "valid: " + ", ".join(EVALUATION_METHODS)
            )
            raise BonesoupError(f"evaluation.methods has unknown method {method!r}; {hint}")
    _require(
        all(k >= 1 for k in evaluation.extrapolation_candidates),
        f"evaluation.extrapolation_candidates {evaluation.extrapolation_candidates}: each k >= 1",
    )
