"""`bonesoup serve RUN_DIR`: serve the soups of a run over an OpenAI-compatible HTTP API.

Example:
    bonesoup serve runs/demo --port 8000 --seed 0
"""

from __future__ import annotations

import argparse
import signal

from bonesoup.errors import BonesoupError
from bonesoup.models import set_torch_threads
from bonesoup.serve.app import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_REQUEST_TIMEOUT,
    create_server,
    serve,
)
from bonesoup.serve.engine import (
    DEFAULT_BATCH_WINDOW,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_SOUP_CACHE,
    SoupEngine,
)
from bonesoup.serve.protocol import Limits

_DEFAULT_LIMITS = Limits()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `serve` subcommand."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a run's soups over an OpenAI-compatible HTTP API",
        description="Load the base model and the backbones of one seed once, and serve "
        "/v1/chat/completions and /v1/completions requests, each with its own preference.",
    )
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="run folder with config.yaml and trained backbones"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8000, help="TCP port (default 8000); 0 picks a free one"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="training seed whose backbones to serve (default: the first of training.seeds)",
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=DEFAULT_MAX_CONCURRENCY,
        help="requests admitted at once, queued or generating; more get HTTP 503 "
        f"(default {DEFAULT_MAX_CONCURRENCY})",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help=f"maximum rows in one generate call (default {DEFAULT_MAX_BATCH_SIZE})",
    )
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=DEFAULT_BATCH_WINDOW * 1000,
        help="milliseconds an idle server waits for more requests with the same soup "
        f"(default {DEFAULT_BATCH_WINDOW * 1000:g})",
    )
    parser.add_argument(
        "--max-tokens-limit",
        type=int,
        default=_DEFAULT_LIMITS.max_tokens,
        help=f"maximum max_tokens a request may set (default {_DEFAULT_LIMITS.max_tokens})",
    )
    parser.add_argument(
        "--default-max-tokens",
        type=int,
        default=_DEFAULT_LIMITS.default_max_tokens,
        help=f"max_tokens of requests that omit it (default {_DEFAULT_LIMITS.default_max_tokens})",
    )
    parser.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=_DEFAULT_LIMITS.max_prompt_tokens,
        help="maximum prompt length in tokens after the chat template; longer prompts get HTTP 400 "
        f"(default {_DEFAULT_LIMITS.max_prompt_tokens})",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help=f"maximum request body size in bytes; larger bodies get HTTP 413 (default {DEFAULT_MAX_BODY_BYTES})",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT,
        help="seconds a request may wait and generate before HTTP 504 "
        f"(default {DEFAULT_REQUEST_TIMEOUT:g})",
    )
    parser.add_argument(
        "--model-id",
        default=None,
        help="model id clients send and /v1/models lists (default bonesoup-<run folder name>)",
    )
    parser.add_argument(
        "--one-soup-per-batch",
        action="store_true",
        help="LoRA backbones: batch only requests with the same coefficients, and set them on "
        "the model before each batch (default: each row of a batch has its own coefficients)",
    )
    parser.add_argument(
        "--soup-cache",
        type=int,
        default=DEFAULT_SOUP_CACHE,
        metavar="N",
        help="full-weight backbones: keep the N most recently used soups materialised, so a "
        "switch back to one copies it in instead of recomputing theta_0 + sum_j c_j tau_j; each "
        "entry contains one copy of the model's parameters in their dtype (float32: 4 bytes per "
        f"parameter, about 540 MB for a 135M model); 0 turns it off (default {DEFAULT_SOUP_CACHE}; "
        "ignored for LoRA backbones)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.set_defaults(func=run)


def _check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise BonesoupError(f"{name} = {value} is invalid: it must be positive")


def run(args: argparse.Namespace) -> int:
    """Load the run, bind the socket and serve until interrupted."""
    for name in (
        "max_concurrency",
        "max_batch_size",
        "max_tokens_limit",
        "default_max_tokens",
        "max_prompt_tokens",
        "max_body_bytes",
        "request_timeout",
        "threads",
    ):
        _check_positive("--" + name.replace("_", "-"), getattr(args, name))
    if args.batch_window_ms < 0:
        raise BonesoupError(f"--batch-window-ms = {args.batch_window_ms} must be >= 0")
    if args.soup_cache < 0:
        raise BonesoupError(
            f"--soup-cache = {args.soup_cache} is invalid: use 0 (no cache) or a positive count"
        )
    if args.default_max_tokens > args.max_tokens_limit:
        raise BonesoupError(
            f"--default-max-tokens {args.default_max_tokens} exceeds --max-tokens-limit "
            f"{args.max_tokens_limit}; lower it or raise the limit"
        )
    if not 0 <= args.port <= 65535:
        raise BonesoupError(f"--port {args.port} is invalid: use 0..65535")
    set_torch_threads(args.threads)
    limits = Limits(args.max_tokens_limit, args.default_max_tokens, args.max_prompt_tokens)
    engine = SoupEngine(
        args.run_dir,
        seed=args.seed,
        limits=limits,
        batch_window=args.batch_window_ms / 1000,
        max_batch_size=args.max_batch_size,
        served_id=args.model_id,
        per_row_soups=not args.one_soup_per_batch,
        soup_cache=args.soup_cache,
    ).load()
    try:
        server = create_server(
            engine,
            args.host,
            args.port,
            args.max_concurrency,
            args.max_body_bytes,
            args.request_timeout,
        )
    except OSError as error:
        raise BonesoupError(f"cannot bind {args.host}:{args.port}: {error}; pick another --port")
    signal.signal(signal.SIGTERM, _interrupt)  # stop as cleanly on SIGTERM as on Ctrl-C
    serve(server)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
