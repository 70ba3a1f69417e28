"""`bonesoup sft CONFIG`: supervised fine-tuning of a base model before RL."""

from __future__ import annotations

import argparse

from bonesoup.commands._config_args import add_config_arguments, load_run_config
from bonesoup.models import set_torch_threads


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sft",
        help="supervised fine-tuning of a base model before RL (skipped for chat models)",
        description="Fine-tune model.name_or_path on the sft.data recipe (hh-rlhf chosen "
        "dialogues or Reddit posts with the chosen summary) with LoRA, merge the adapter and "
        "save full safetensors weights to sft.output (default RUN_DIR/sft). Models whose "
        "tokenizer has a chat template are skipped.",
    )
    add_config_arguments(parser, run_dir=False, quick=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bonesoup.sft import run_sft

    set_torch_threads(1)
    config = load_run_config(args)
    output = run_sft(config)
    if output is None:
        print("sft skipped: the model is already instruction-tuned or sft.enabled is false")
    else:
        print(f"sft model: {output}")
        print(f"use it with: --set model.name_or_path={output}")
    return 0
