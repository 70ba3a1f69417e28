"""`bonesoup seek CONFIG`: train the backbones (Bone Soups, Rewarded Soups and MORLHF points)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bonesoup.commands._config_args import add_config_arguments, load_run_config
from bonesoup.config import save_config
from bonesoup.models import set_torch_threads
from bonesoup.rundir import RunDir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "seek",
        help="train the backbones with multi-objective RL",
        description="Train every missing backbone of the run with KL-regularised RL on its "
        "mixture of normalised rewards. Finished backbones are reused and interrupted ones "
        "resume from their last checkpoint.",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="train only these training seeds, e.g. --seeds 0 1 (added to training.seeds)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate config, objectives, prompts and the backbone plan; train nothing",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bonesoup.seek import SeekError, dry_run, heldout_table, seek

    set_torch_threads(1)
    config = load_run_config(args)
    if args.seeds:
        # Seeds named on the command line are trained even when training.seeds leaves them out.
        config.training.seeds = sorted(set(config.training.seeds) | set(args.seeds))
    if args.dry_run:
        print(json.dumps(dry_run(config, config.run_dir, args.seeds), indent=2))
        return 0
    run_dir = RunDir(Path(config.run_dir))
    run_dir.root.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir.config)
    start = time.perf_counter()
    status = 0
    try:
        paths = seek(config, run_dir.root, args.seeds, progress=not args.no_progress)
    except SeekError as error:
        print(f"bonesoup: error: {error}", file=sys.stderr)
        paths, status = [], 1
    print_heldout_table(heldout_table(config, run_dir.root, args.seeds))
    print(f"{len(paths)} backbones in {run_dir.root} ({time.perf_counter() - start:.0f} s)")
    return status


def print_heldout_table(rows: list[dict]) -> None:
    """Print held-out h_j of theta_0 and of each backbone, one line per backbone."""
    print(f"{'backbone':<18} {'seed':>4} {'weights':<22} {'h theta_0':>10} {'h backbone':>11}")
    for row in rows:
        weights = ", ".join(f"{w:.2f}" for w in row["weights"])
        theta0 = "-" if row["theta_0"] is None else f"{row['theta_0']:.3f}"
        backbone = "-" if row["backbone"] is None else f"{row['backbone']:.3f}"
        print(f"{row['name']:<18} {row['seed']:>4} {weights:<22} {theta0:>10} {backbone:>11}")
