"""Supervised fine-tuning (SFT) before RL, for base models without instruction tuning.

    bonesoup sft configs/hh-rlhf.yaml     # writes RUN_DIR/sft (or sft.output)

Data recipes (after the Bone Soups setup of Xie et al., ACL 2025):
- hh-rlhf: each chosen dialogue of Anthropic/hh-rlhf, split at its last "\\n\\nAssistant:": the
  dialogue up to there is the prompt, the chosen reply the completion.
- summarize: each comparison of openai/summarize_from_feedback: the Reddit post as the
  "SUBREDDIT/TITLE/POST/TL;DR:" prompt, the summary the labeller chose as the completion.

Training is TRL's SFTTrainer on prompt-completion pairs, so the loss covers completion tokens only.
The LoRA adapter is merged into the weights afterwards and the full model is saved as safetensors
with its tokenizer, in a staging folder renamed into place. A model whose tokenizer has a chat
template is treated as instruction-tuned and skipped, as is `sft.enabled: false`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bonesoup.config import RunConfig
from bonesoup.errors import BonesoupError

logger = logging.getLogger(__name__)

DATA_RECIPES = ("hh-rlhf", "summarize")


def sft_output_dir(config: RunConfig) -> Path:
    """Return the folder of the SFT model: `sft.output`, else RUN_DIR/sft."""
    return Path(config.sft.output) if config.sft.output else Path(config.run_dir) / "sft"


def skip_reason(config: RunConfig, tokenizer) -> str | None:
    """Return why SFT is skipped for this model, or None to run it."""
    if not config.sft.enabled:
        return "sft.enabled is false"
    if getattr(tokenizer, "chat_template", None):
        return "its tokenizer has a chat template, so it is treated as instruction-tuned"
    return None


def sft_examples(config: RunConfig) -> list[dict[str, str]]:
    """Return up to `sft.examples` prompt-completion pairs of the configured data recipe."""
    sft = config.sft
    if sft.data == "hh-rlhf":
        from bonesoup.prompts import load_prompts

        options = {"path": sft.path} if sft.path else {}
        examples = load_prompts("hh-rlhf", "train", sft.examples, **options)
        pairs = [{"prompt": e.prompt, "completion": " " + (e.reference or "")} for e in examples]
    elif sft.data == "summarize":
        pairs = _summarize_pairs(sft.path or "openai/summarize_from_feedback", sft.examples)
    else:
        raise BonesoupError(
            f"sft.data {sft.data!r} is invalid: use one of {', '.join(DATA_RECIPES)}"
        )
    pairs = [pair for pair in pairs if pair["completion"].strip()]
    if not pairs:
        raise BonesoupError(f"sft.data {sft.data!r} at {sft.path!r} gave no training examples")
    return pairs


def _summarize_pairs(path: str, limit: int) -> list[dict[str, str]]:
    from bonesoup.prompts import SUMMARIZE_TEMPLATE, _load_rows

    pairs = []
    for index, row in enumerate(_load_rows(path, "train", config="comparisons")):
        info, summaries = row.get("info") or {}, row.get("summaries") or []
        choice = row.get("choice")
        if not info.get("post") or not isinstance(choice, int) or choice >= len(summaries):
            raise BonesoupError(
                f"summarize row {index} of {path!r} needs info.post, summaries and a valid choice"
            )
        prompt = SUMMARIZE_TEMPLATE.format(
            subreddit=info.get("subreddit") or "", title=info.get("title") or "", post=info["post"]
        )
        pairs.append({"prompt": prompt, "completion": " " + summaries[choice]["text"].strip()})
        if len(pairs) >= limit:
            break
    return pairs


def _sft_args(config: RunConfig, output_dir: Path):
    from trl import SFTConfig

    sft = config.sft
    on_gpu = torch.cuda.is_available()
    return SFTConfig(
        output_dir=str(output_dir),
        max_steps=sft.steps,
        per_device_train_batch_size=sft.batch_size,
        learning_rate=sft.learning_rate,
        max_length=sft.max_length,
        completion_only_loss=True,
        use_cpu=not on_gpu,
        bf16=on_gpu and config.model.dtype == "bfloat16",
        fp16=on_gpu and config.model.dtype == "float16",
        gradient_checkpointing=False,
        save_strategy="no",
        logging_steps=max(1, sft.steps // 20),
        report_to=list(config.training.logging) or "none",
        seed=config.seed,
        disable_tqdm=True,
    )


def run_sft(config: RunConfig) -> Path | None:
    """Fine-tune the configured model on the SFT recipe; return the merged model folder.

    Returns None (after a log line) when the model is skipped; see `skip_reason`.
    """
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTTrainer

    from bonesoup.models import load_causal_lm, load_tokenizer, resolve_model_path

    model_path = resolve_model_path(config.model.name_or_path)
    tokenizer = load_tokenizer(model_path, config.model.trust_remote_code)
    reason = skip_reason(config, tokenizer)
    if reason is not None:
        logger.info("sft: skipped for %s: %s", model_path, reason)
        return None
    target = sft_output_dir(config)
    dataset = Dataset.from_list(sft_examples(config))
    logger.info("sft: %d examples, %d steps, model %s", len(dataset), config.sft.steps, model_path)
    model = load_causal_lm(model_path, config.model.dtype, config.model.trust_remote_code)
    lora = config.sft.lora
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.work.", dir=target.parent) as work:
        trainer = SFTTrainer(
            model=model,
            args=_sft_args(config, Path(work) / "checkpoints"),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                use_rslora=lora.use_rslora,
                task_type="CAUSAL_LM",
            ),
        )
        start = time.perf_counter()
        trainer.train()
        logger.info("sft: trained in %.0f s", time.perf_counter() - start)
        merged = trainer.model.merge_and_unload()
        _save_atomic(merged, tokenizer, target, Path(work) / "final")
    return target


def _save_atomic(model: Any, tokenizer: Any, target: Path, staging: Path) -> None:
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    logger.info("sft: saved the merged model to %s", target)
