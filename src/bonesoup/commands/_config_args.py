"""Arguments shared by the subcommands that read a run configuration (run, seek, sft)."""

from __future__ import annotations

import argparse

from bonesoup.config import RunConfig, apply_overrides, load_config


def add_config_arguments(
    parser: argparse.ArgumentParser, run_dir: bool = True, quick: bool = True
) -> None:
    """Add CONFIG, --set and, optionally, --run-dir and --quick."""
    parser.add_argument("config", help="YAML run configuration, e.g. configs/demo.yaml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set training.steps=8 (repeatable)",
    )
    if run_dir:
        parser.add_argument("--run-dir", help="run folder (default: run_dir from the config)")
    if quick:
        parser.add_argument(
            "--quick",
            action="store_true",
            help="a first look in a few minutes: fewer steps and prompts, written to RUN_DIR-quick",
        )


def load_run_config(args: argparse.Namespace) -> RunConfig:
    """Load CONFIG, then apply --quick, --set and --run-dir, so explicit values win over --quick."""
    config = load_config(args.config)
    if getattr(args, "quick", False):
        from bonesoup.pipeline import quick_config

        config = quick_config(config)
    config = apply_overrides(config, args.overrides)
    if getattr(args, "run_dir", None):
        config.run_dir = args.run_dir
    return config
