"""Command-line entry point: `bonesoup SUBCOMMAND ...`.

Subcommands are discovered from the modules of `bonesoup.commands`. Invalid input raises
`BonesoupError`, which becomes a one-line message on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import signal
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
    # SIGTERM and SIGHUP raise SystemExit, so the cleanup of partly written outputs runs as it
    # does for Ctrl-C. SIGKILL cannot be caught and can leave a hidden .partial folder behind.
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, _exit_on_signal)
    try:
        return int(args.func(args) or 0)
    except BonesoupError as error:
        print(f"bonesoup: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a missing, unreadable or unwritable path given by the user
        message = " ".join(str(error).split())
        print(f"bonesoup: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bonesoup: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def _exit_on_signal(number: int, frame: object) -> None:
    raise SystemExit(128 + number)


if __name__ == "__main__":
    sys.exit(main())
