"""Command-line entry point: `bonesoup SUBCOMMAND ...`.

Subcommands are discovered from the modules of `bonesoup.commands`. Invalid input raises
`BonesoupError`, which becomes a one-line message on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from bonesoup import __version__, commands
from bonesoup.errors import BonesoupError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits with 2 too, but prints usage first
        self.exit(2, f"bonesoup: error: {message}\n")


def _command_modules() -> list[str]:
    names = (info.name for info in pkgutil.iter_modules(commands.__path__))
    return sorted(name for name in names if not name.startswith("_"))


def _requested_command(argv: list[str], modules: list[str]) -> str | None:
    """Return the module of the subcommand in `argv`, if it names one."""
    for token in argv:
        if token.startswith("-"):
            continue
        module = token.replace("-", "_")
        return module if module in modules else None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Build the parser; with `argv`, import only the requested subcommand's module.

    Several subcommands import torch and transformers (seconds of start-up), so a command such as
    `bonesoup coefficients` registers its own parser alone. Top-level help registers them all.
    """
    parser = _Parser(
        prog="bonesoup",
        description="Bone Soups: train backbone models on reward mixtures, merge them per "
        "preference, evaluate the fronts and serve the soups.",
    )
    parser.add_argument("--version", action="version", version=f"bonesoup {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    modules = _command_modules()
    requested = _requested_command(argv, modules) if argv is not None else None
    for name in [requested] if requested else modules:
        importlib.import_module(f"bonesoup.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except BonesoupError as error:
        print(f"bonesoup: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
