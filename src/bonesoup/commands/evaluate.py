"""`bonesoup evaluate RUN_DIR`: sweep preferences for every method, then write the report.

Example:
    bonesoup evaluate runs/demo --methods bone-soup,rewarded-soup --seeds 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bonesoup.config import load_config
from bonesoup.errors import BonesoupError
from bonesoup.evaluate import METHODS, compute_metrics, evaluate_run, headline, write_report
from bonesoup.evaluate.sweep import distributed_rank
from bonesoup.models import set_torch_threads
from bonesoup.rundir import RunDir


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="sweep preferences, score every objective and compare the methods' fronts",
        description="Build every soup in memory for each grid preference, sample on the test "
        "prompts, score every objective, then write eval/metrics.json, the plots and the report. "
        "Finished (seed, method, preference) rows are kept and skipped on a rerun.",
    )
    parser.add_argument("run_dir", help="run folder made by `bonesoup seek` or `bonesoup run`")
    parser.add_argument(
        "--methods",
        help=f"comma-separated methods (default: evaluation.methods); any of {', '.join(METHODS)}",
    )
    parser.add_argument(
        "--seeds",
        help="training seeds: a count N (seeds 0..N-1) or a comma list such as 0,2 "
        "(default: training.seeds)",
    )
    parser.add_argument("--workers", type=int, help="CPU processes (default: evaluation.workers)")
    parser.add_argument("--no-report", action="store_true", help="skip metrics and report")
    parser.set_defaults(func=run)


def parse_seeds(text: str | None) -> list[int] | None:
    """Parse "3" as seeds 0, 1, 2 and "0,2" as seeds 0 and 2."""
    if text is None:
        return None
    try:
        if "," not in text:
            count = int(text)
            if count < 1:
                raise ValueError
            return list(range(count))
        return [int(token) for token in text.split(",") if token.strip()]
    except ValueError:
        raise BonesoupError(
            f"invalid --seeds {text!r}: give a count >= 1 such as 3, or seeds such as 0,2"
        ) from None


def run(args: argparse.Namespace) -> int:
    """Evaluate the run, print the headline and where the report is."""
    set_torch_threads(1)
    run_dir = RunDir(Path(args.run_dir))
    if not run_dir.config.is_file():
        raise BonesoupError(f"{run_dir.config} not found; is {args.run_dir} a run folder?")
    config = load_config(run_dir.config)
    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",")]
    if args.workers is not None and args.workers < 1:
        raise BonesoupError(f"invalid --workers {args.workers}: use 1 or more")
    eval_dir = evaluate_run(
        run_dir.root, config, methods=methods, seeds=parse_seeds(args.seeds), workers=args.workers
    )
    if args.no_report or distributed_rank()[0] != 0:  # under accelerate, rank 0 reports
        print(f"rows: {eval_dir / 'rows.jsonl'}")
        return 0
    metrics = compute_metrics(run_dir.root)
    report = write_report(run_dir.root, metrics)
    print(headline(metrics))
    print(f"report: {report}")
    return 0
