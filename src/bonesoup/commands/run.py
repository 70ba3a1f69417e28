"""`bonesoup run CONFIG`: the main job, from the starting model to the report."""

from __future__ import annotations

import argparse
import time

from bonesoup.config import apply_overrides, load_config
from bonesoup.models import set_torch_threads
from bonesoup.pipeline import quick_config, run_pipeline


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="seek the backbones, evaluate every method and write the report",
        description="Seek the backbones, sweep preferences for every method, write the report. "
        "Re-running reuses finished backbones and evaluated rows.",
    )
    parser.add_argument("config", help="YAML run configuration, e.g. configs/demo.yaml")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a first look in a few minutes: fewer steps and prompts, written to RUN_DIR-quick",
    )
    parser.add_argument("--run-dir", help="run folder (default: run_dir from the config)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set training.steps=8 (repeatable)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    set_torch_threads(1)
    config = apply_overrides(load_config(args.config), args.overrides)
    if args.run_dir:
        config.run_dir = args.run_dir
    if args.quick:
        config = quick_config(config)
    start = time.perf_counter()
    result = run_pipeline(config)
    minutes = (time.perf_counter() - start) / 60
    stages = ", ".join(f"{name} {value:.0f} s" for name, value in result.seconds.items())
    print(result.headline)
    print(f"report: {result.report}")
    print(f"html:   {result.report.with_suffix('.html')}")
    print(f"total {minutes:.1f} min ({stages})")
    return 0
