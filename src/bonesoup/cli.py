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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bonesoup", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"bonesoup {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bonesoup.commands.{module_info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
