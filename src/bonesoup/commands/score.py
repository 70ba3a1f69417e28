"""`bonesoup score`: score one response with one objective."""

from __future__ import annotations

import argparse
import json

from bonesoup.errors import BonesoupError
from bonesoup.objectives.base import get_objective


def run(args: argparse.Namespace) -> int:
    if not args.response.strip():
        raise BonesoupError("--response is empty; pass the text to score")
    import torch
    from transformers.utils import logging as transformers_logging

    torch.set_num_threads(1)
    transformers_logging.disable_progress_bar()  # keep stderr for errors only
    objective = get_objective(args.objective, cache=False)
    references = None if args.reference is None else [args.reference]
    value = objective.score([args.prompt], [args.response], references)[0]
    if args.json:
        print(json.dumps({"objective": objective.name, "score": value}))
    else:
        print(f"{value:.6g}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score one response with one objective",
        description="Score one (prompt, response) pair with one objective and print the raw "
        "reward. Reward-model objectives load their model first.",
    )
    parser.add_argument(
        "--objective",
        required=True,
        help="objective name, reward-model preset, hf:<model id or path>, or module:function",
    )
    parser.add_argument("--prompt", default="", help="prompt text (default: empty)")
    parser.add_argument("--response", required=True, help="response text to score")
    parser.add_argument("--reference", help="source text, for objectives that need one")
    parser.add_argument("--json", action="store_true", help="print {objective, score} as JSON")
    parser.set_defaults(func=run)
