"""Hugging Face sequence classifiers as objectives, and presets for the reward models of Bone Soups.

Weights load with `use_safetensors=True` only, so a checkpoint that ships only a pickle file
(`pytorch_model.bin`) is rejected with a message saying to convert it. A directory whose
`config.architectures` names no `*ForSequenceClassification` class (a causal LM, for example) is
rejected too, because `AutoModelForSequenceClassification` would otherwise attach a randomly
initialised score head and return noise.

Input formats:
- "pair": tokenizer(prompt, response) as a text pair. For GPT-2 tokenizers a text pair is the
  two token sequences back to back, which is how the Ray2333 reward models are called on their
  model cards, with the prompt in the Anthropic/hh-rlhf form "\\n\\nHuman: ... \\n\\nAssistant:".
- "concat": one text, prompt + response.
- "response": the response alone.
- "summary_post": tokenizer(response, source) where the source is the reference when given,
  else the prompt (CogComp/bart-faithful-summary-detector takes (summary, article)).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from bonesoup.errors import BonesoupError
from bonesoup.objectives.base import Objective

logger = logging.getLogger(__name__)

INPUT_FORMATS = ("pair", "concat", "response", "summary_post")
HH_TEMPLATE = "\n\nHuman: {prompt} \n\nAssistant:"

# NOTE: the presets need the hub (or a local copy) and were never run. Input formats follow the
# model cards where one exists. Tristan's card gives none, so "pair" is a guess, and the index of
# the humour label of mohameddhiab/humor-no-humor is unverified.
PRESETS: dict[str, dict[str, Any]] = {
    "helpful": {
        "model": "Ray2333/gpt2-large-helpful-reward_model",
        "input_format": "pair",
        "prompt_template": HH_TEMPLATE,
        "description": "helpfulness reward model trained on Anthropic/hh-rlhf",
    },
    "harmless": {
        "model": "Ray2333/gpt2-large-harmless-reward_model",
        "input_format": "pair",
        "prompt_template": HH_TEMPLATE,
        "description": "harmlessness reward model trained on Anthropic/hh-rlhf",
    },
    "humor": {
        "model": "mohameddhiab/humor-no-humor",
        "input_format": "response",
        "logit_index": 1,
        "description": "humour classifier, logit of the 'humor' label",
    },
    "summary": {
        "model": "Tristan/gpt2_reward_summarization",
        "input_format": "pair",
        "description": "summary preference reward model (openai/summarize_from_feedback)",
    },
    "faithful": {
        "model": "CogComp/bart-faithful-summary-detector",
        "input_format": "summary_post",
        "logit_index": 1,
        "description": "faithfulness of a summary to its post, logit of the 'faithful' label",
    },
    "deberta": {
        "model": "OpenAssistant/reward-model-deberta-v3-large-v2",
        "input_format": "pair",
        "description": "OpenAssistant general reward model (question, answer)",
    },
}


def from_preset(name: str, **options: Any) -> RewardModelObjective:
    """Build the reward model of preset `name`; `options` override the preset's settings."""
    settings = {k: v for k, v in PRESETS[name].items() if k not in ("model", "description")}
    settings.update(options)
    settings.setdefault("name", name)
    model = settings.pop("model_name_or_path", PRESETS[name]["model"])
    objective = RewardModelObjective(model, **settings)
    objective.description = PRESETS[name]["description"]
    return objective


def _check_classifier_config(model_name_or_path: str, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise BonesoupError(
            f"cannot load a model config from {model_name_or_path!r}: {error}. "
            "Pass a local directory with config.json or a reachable hub id"
        ) from error
    architectures = list(getattr(config, "architectures", None) or [])
    if not any(arch.endswith("ForSequenceClassification") for arch in architectures):
        raise BonesoupError(
            f"{model_name_or_path!r} is not a sequence classifier (config.architectures="
            f"{architectures}); a reward model must be saved as a *ForSequenceClassification model"
        )
    return config


def _load_model(model_name_or_path: str, trust_remote_code: bool, device: str) -> Any:
    from transformers import AutoModelForSequenceClassification

    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            model_name_or_path,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            output_loading_info=True,
        )
    except OSError as error:
        raise BonesoupError(
            f"cannot load safetensors weights from {model_name_or_path!r}: {error}. Only "
            "safetensors files are loaded; convert a pytorch_model.bin checkpoint first"
        ) from error
    missing = list(info.get("missing_keys", []))
    if missing:
        raise BonesoupError(
            f"{model_name_or_path!r} lacks weights for {missing[:3]} (and {len(missing)} in "
            "all): its classification head was never trained, so its scores would be noise"
        )
    return model.to(device).eval()


class RewardModelObjective(Objective):
    """Score with a Hugging Face sequence classifier: the chosen logit is the reward.

    Args:
        model_name_or_path: hub id or local directory of a *ForSequenceClassification model.
        input_format: one of "pair", "concat", "response", "summary_post" (see module docs).
        logit_index: which output logit is the reward; None requires a single-label model.
        max_length: maximum tokens per input; longer inputs are truncated (longest part first).
        batch_size: texts per forward pass.
        device: torch device string.
        trust_remote_code: run model code from the checkpoint (off unless you trust it).
        prompt_template: format string with `{prompt}` applied to each prompt, unless the
            prompt already contains "\\n\\nAssistant:" (it is then in that form already).
        name: objective name; defaults to "hf:<model_name_or_path>".
    """

    value_range = (-math.inf, math.inf)

    def __init__(
        self,
        model_name_or_path: str | Path,
        input_format: str = "pair",
        logit_index: int | None = 0,
        max_length: int = 512,
        batch_size: int = 8,
        device: str = "cpu",
        trust_remote_code: bool = False,
        prompt_template: str | None = None,
        name: str | None = None,
    ) -> None:
        if input_format not in INPUT_FORMATS:
            raise BonesoupError(
                f"input_format={input_format!r} is invalid; use one of {', '.join(INPUT_FORMATS)}"
            )
        if max_length < 8 or batch_size < 1:
            raise BonesoupError(
                f"max_length={max_length} must be >= 8 and batch_size={batch_size} >= 1"
            )
        path = str(model_name_or_path)
        self.name = name or f"hf:{path}"
        self.model_name_or_path = path
        self.input_format = input_format
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self.prompt_template = prompt_template
        self.needs_reference = False
        self.description = f"logit of sequence classifier {path}"
        config = _check_classifier_config(path, trust_remote_code)
        self.logit_index = self._check_logit_index(logit_index, config.num_labels)
        self.tokenizer = self._load_tokenizer(path, trust_remote_code)
        self.model = _load_model(path, trust_remote_code, device)
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def _check_logit_index(self, logit_index: int | None, num_labels: int) -> int:
        if logit_index is None:
            if num_labels != 1:
                raise BonesoupError(
                    f"{self.model_name_or_path!r} has {num_labels} labels; pass logit_index "
                    "to choose which logit is the reward"
                )
            return 0
        if not 0 <= logit_index < num_labels:
            raise BonesoupError(
                f"logit_index={logit_index} is out of range for {self.model_name_or_path!r} "
                f"with {num_labels} labels; use 0..{num_labels - 1}"
            )
        return logit_index

    @staticmethod
    def _load_tokenizer(path: str, trust_remote_code: bool) -> Any:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as error:
            raise BonesoupError(f"cannot load a tokenizer from {path!r}: {error}") from error
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        # Classifiers with absolute position embeddings (GPT-2) score a left-padded row at shifted
        # positions, so batching would change scores. Right padding keeps every row's positions.
        tokenizer.padding_side = "right"
        return tokenizer

    def _format_prompt(self, prompt: str) -> str:
        if self.prompt_template is None or "\n\nAssistant:" in prompt:
            return prompt
        return self.prompt_template.format(prompt=prompt)

    def _encode(self, prompts, responses, references) -> Any:
        common = {
            "padding": True,
            "truncation": True,
            "max_length": self.max_length,
            "return_tensors": "pt",
        }
        if self.input_format == "response":
            # An empty text has no tokens to classify, so it is scored as the lone EOS token.
            texts = [text if text else self.tokenizer.eos_token for text in responses]
            return self.tokenizer(texts, **common)
        if self.input_format == "summary_post":
            sources = [ref if ref is not None else p for p, ref in zip(prompts, references)]
            return self.tokenizer(list(responses), sources, **common)
        formatted = [self._format_prompt(prompt) for prompt in prompts]
        if self.input_format == "concat":
            texts = [p + r for p, r in zip(formatted, responses, strict=True)]
            return self.tokenizer(texts, **common)
        return self.tokenizer(formatted, list(responses), **common)

    def _score(self, prompts, responses, references) -> list[float]:
        import torch

        scores: list[float] = []
        for start in range(0, len(responses), self.batch_size):
            stop = start + self.batch_size
            batch = self._encode(prompts[start:stop], responses[start:stop], references[start:stop])
            batch = {key: value.to(self.device) for key, value in batch.items()}
            with torch.inference_mode():
                logits = self.model(**batch).logits  # (batch, num_labels)
            scores.extend(logits[:, self.logit_index].float().tolist())
        return scores


def describe_presets() -> list[tuple[str, str, str]]:
    """Return (preset name, model id, description) rows for listings."""
    return [(name, p["model"], p["description"]) for name, p in PRESETS.items()]
