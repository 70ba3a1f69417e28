"""`bonesoup run CONFIG`: the main job, from the starting model to the report."""

from __future__ import annotations

import argparse
import time

from bonesoup.commands._config_args import add_config_arguments, load_run_config
from bonesoup.commands.seek import print_heldout_table
from bonesoup.models import set_torch_threads
from bonesoup.pipeline import run_pipeline
from bonesoup.seek import heldout_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="seek the backbones, evaluate every method and write the report",
        description="Seek the backbones, sweep preferences for every method, write the report. "
        "Re-running reuses finished backbones and evaluated rows.",
    )
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    set_torch_threads(1)
    config = load_run_config(args)
    start = time.perf_counter()
    result = run_pipeline(config)
    minutes = (time.perf_counter() - start) / 60
    print("held-out reward h_j of each backbone (normalised), before and after training:")
    print_heldout_table(heldout_table(config, result.run_dir))
    stages = ", ".join(f"{name} {value:.0f} s" for name, value in result.seconds.items())
    print(result.headline)
    print(f"report: {result.report}")
    print(f"html:   {result.report.with_suffix('.html')}")
    print(f"total {minutes:.1f} min ({stages})")
    return 0
