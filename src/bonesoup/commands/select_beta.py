"""`bonesoup select-beta CONFIG`: pick beta by short training runs and validation hypervolume.

Example:
    bonesoup select-beta configs/demo.yaml --betas 0.6,0.7,0.8 --fraction 0.25
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bonesoup.config import load_config
from bonesoup.errors import BonesoupError
from bonesoup.models import set_torch_threads


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `select-beta` subcommand."""
    parser = subparsers.add_parser(
        "select-beta",
        help="train short runs for candidate betas and keep the one with the largest hypervolume",
        description="For each beta, train the Bone Soups backbones for a fraction of "
        "training.steps in RUN_DIR/select-beta/beta-<beta>/, sweep the grid on the validation "
        "prompts and compare hypervolumes with one shared reference point.",
    )
    parser.add_argument("config", help="YAML run configuration")
    parser.add_argument(
        "--betas",
        default="0.6,0.7,0.8",
        help="comma-separated candidate betas (default 0.6,0.7,0.8)",
    )
    parser.add_argument(
        "--fraction",
        type=float,
        default=0.25,
        help="fraction of training.steps each short run trains (default 0.25)",
    )
    parser.add_argument("--run-dir", help="parent folder (default: run_dir from the config)")
    parser.add_argument("--workers", type=int, help="CPU processes for the evaluation sweeps")
    parser.set_defaults(func=run)


def parse_betas(text: str) -> list[float]:
    """Parse "0.6,0.7" into [0.6, 0.7]."""
    try:
        return [float(token) for token in text.split(",") if token.strip()]
    except ValueError:
        raise BonesoupError(
            f"invalid --betas {text!r}: give comma-separated numbers such as 0.6,0.7,0.8"
        ) from None


def run(args: argparse.Namespace) -> int:
    """Run the selection and print the summary as JSON."""
    from bonesoup.evaluate.select_beta import select_beta

    set_torch_threads(1)
    config = load_config(args.config)
    run_dir = Path(args.run_dir) if args.run_dir else None
    summary = select_beta(config, parse_betas(args.betas), args.fraction, run_dir, args.workers)
    print(json.dumps(summary, indent=2))
    return 0
