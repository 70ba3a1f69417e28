"""`bonesoup report RUN_DIR`: rebuild metrics, plots and report from eval/rows.jsonl."""

from __future__ import annotations

import argparse
from pathlib import Path

from bonesoup.errors import BonesoupError
from bonesoup.evaluate import compute_metrics, headline, write_report


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `report` subcommand."""
    parser = subparsers.add_parser(
        "report",
        help="rebuild eval/metrics.json, the plots and report.md/html from the evaluated rows",
        description="Recompute the metrics from eval/rows.jsonl without generating anything, "
        "then redraw the plots and rewrite report.md and report.html.",
    )
    parser.add_argument("run_dir", help="run folder with eval/rows.jsonl")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the report and print its headline and path."""
    if not Path(args.run_dir).is_dir():
        raise BonesoupError(f"run folder not found: {args.run_dir}")
    metrics = compute_metrics(Path(args.run_dir))
    report = write_report(Path(args.run_dir), metrics)
    print(headline(metrics))
    print(f"report: {report}")
    return 0
