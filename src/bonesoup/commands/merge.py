"""`bonesoup merge`: write the soup of n backbones for one preference as a model folder.

Examples:
    bonesoup merge --backbone runs/b1 --backbone runs/b2 --base sft \\
        --preference 0.2,0.8 --beta 0.7 --output soups/0.2-0.8
    bonesoup merge --backbone runs/b1 --backbone runs/b2 --base sft \\
        --coefficients 1.75,-0.75 --output soups/raw

Full checkpoints are merged as theta = sum_j c_j theta_j + b theta_0. LoRA backbones (folders with
adapter_config.json) are merged exactly as theta_0 + sum_j c_j delta_j, either into full weights
(`--lora-output merged`, the default) or into one stacked adapter (`--lora-output adapter`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bonesoup.errors import BonesoupError
from bonesoup.lora import (
    is_lora_adapter,
    load_lora_adapter,
    merge_lora_into_base,
    stack_lora_adapters,
)
from bonesoup.merge import OUTPUT_DTYPES, merge_checkpoints

logger = logging.getLogger(__name__)

DEFAULT_BETA = 0.7
LORA_OUTPUTS = ("merged", "adapter")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `merge` subcommand."""
    parser = subparsers.add_parser(
        "merge",
        help="merge backbones into the soup for one preference",
        description="Write the soup of n backbones for one preference as a model folder.",
    )
    _add_input_arguments(parser)
    _add_coefficient_arguments(parser)
    _add_output_arguments(parser)
    parser.set_defaults(func=run)


def _add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backbone",
        action="append",
        required=True,
        metavar="DIR",
        help="backbone folder (full safetensors checkpoint or LoRA adapter); repeat once per "
        "backbone, in the order of the backbone matrix rows",
    )
    parser.add_argument(
        "--base",
        metavar="DIR",
        help="theta_0, the model the backbones were trained from. Full checkpoints need it for "
        "--extrapolation; LoRA backbones need it for --lora-output merged unless the adapters "
        "name a local base folder",
    )


def _add_coefficient_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preference", help="comma-separated weights mu_1,...,mu_n, e.g. 0.2,0.8")
    parser.add_argument(
        "--beta",
        type=float,
        help=f"diagonal of the circulant backbone matrix (default {DEFAULT_BETA})",
    )
    parser.add_argument(
        "--method", default="bone-soup", help="bone-soup, rewarded-soup or aba (default bone-soup)"
    )
    parser.add_argument(
        "--extrapolation",
        metavar="K1,...,Kn",
        help="per-objective extrapolation factors k_i >= 1. They put weight on theta_0, "
        "so full checkpoints need --base",
    )
    parser.add_argument("--matrix", metavar="FILE", help="backbone matrix (JSON or CSV rows)")
    parser.add_argument(
        "--coefficients",
        metavar="C1,...,Cn",
        help="raw backbone coefficients in place of --preference. With --base (or LoRA backbones) "
        "theta_0 gets 1 - sum(c), so the soup is theta_0 + sum_j c_j (theta_j - theta_0). "
        "Without --base they must sum to 1",
    )


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, metavar="DIR", help="new folder to write")
    parser.add_argument(
        "--dtype",
        choices=sorted(OUTPUT_DTYPES),
        help="dtype of the written weights (default: the inputs' dtype)",
    )
    parser.add_argument(
        "--max-shard-size",
        metavar="SIZE",
        help="split the output into files of at most SIZE (e.g. 2GB); default: the sharding of "
        "the first backbone (of the base for LoRA backbones)",
    )
    parser.add_argument(
        "--lora-output",
        choices=LORA_OUTPUTS,
        default="merged",
        help="for LoRA backbones: full merged weights (default) or one stacked PEFT adapter of "
        "rank sum r_j",
    )


def _parse_numbers(text: str, option: str) -> list[float]:
    values = []
    for token in text.strip().strip("[]()").split(","):
        try:
            values.append(float(token))
        except ValueError:
            raise BonesoupError(
                f"invalid {option} {text!r}: {token.strip()!r} is not a number; give "
                "comma-separated numbers such as 1.75,-0.75"
            ) from None
    return values


def _solve(args: argparse.Namespace, count: int):
    """Return SoupCoefficients for --preference and the soup options."""
    from bonesoup.backbone import load_backbone_matrix
    from bonesoup.coefficients import soup_coefficients
    from bonesoup.preferences import parse_preference

    if args.preference is None:
        raise BonesoupError("missing --preference (e.g. 0.2,0.8) or --coefficients; pass one")
    preference = parse_preference(args.preference, count)
    matrix = load_backbone_matrix(args.matrix) if args.matrix else None
    beta = args.beta
    if matrix is None and beta is None and args.method != "rewarded-soup":
        beta = DEFAULT_BETA
    factors = _parse_numbers(args.extrapolation, "--extrapolation") if args.extrapolation else None
    return soup_coefficients(
        preference, method=args.method, beta=beta, matrix=matrix, extrapolation=factors
    )


def _raw_coefficients(args: argparse.Namespace, count: int) -> list[float]:
    used = [
        flag
        for flag, value in (
            ("--preference", args.preference),
            ("--beta", args.beta),
            ("--matrix", args.matrix),
            ("--extrapolation", args.extrapolation),
        )
        if value is not None
    ]
    if used:
        raise BonesoupError(
            f"--coefficients cannot be combined with {', '.join(used)}; pass either raw "
            "coefficients or a preference"
        )
    values = _parse_numbers(args.coefficients, "--coefficients")
    if len(values) != count:
        raise BonesoupError(
            f"--coefficients has {len(values)} values for {count} backbones; give one each"
        )
    return values


def _lora_base(args: argparse.Namespace, backbones: list[Path]) -> Path:
    named = load_lora_adapter(backbones[0]).base_model_name_or_path
    if args.base:
        base = Path(args.base)
        if named and Path(named).is_dir() and Path(named).resolve() != base.resolve():
            logger.warning(
                "the adapters were trained on %s but --base is %s; the soup is only exact on "
                "the base the adapters were trained from",
                named,
                base,
            )
        return base
    if named and Path(named).is_dir():
        return Path(named)
    raise BonesoupError(
        f"merging LoRA adapters into full weights needs theta_0: the adapters name base model "
        f"{named!r}, which is not a local folder; pass --base DIR (or --lora-output adapter)"
    )


def _write(
    args: argparse.Namespace, backbones: list[Path], backbone_c: list[float], base_c: float
) -> str:
    output = Path(args.output)
    stale = sorted(output.parent.glob(f".{output.name}.partial-*"))
    if stale:
        logger.warning(
            "found %d partial output folders of earlier merges that were killed, e.g. %s; "
            "remove them if no other merge into %s is running",
            len(stale),
            stale[0],
            output,
        )
    kinds = [is_lora_adapter(p) for p in backbones]
    if any(kinds) and not all(kinds):
        raise BonesoupError("the backbones mix LoRA adapters and full checkpoints; use one kind")
    if not all(kinds):
        if base_c != 0 and args.base is None:
            raise BonesoupError(
                f"these coefficients put weight {base_c:.4g} on theta_0 (extrapolation), which "
                "needs the starting model; pass --base DIR"
            )
        merge_checkpoints(
            backbones, backbone_c, output, base=Path(args.base) if args.base else None,
            base_coefficient=base_c, dtype=args.dtype, max_shard_size=args.max_shard_size,
        )  # fmt: skip
        return "full weights"
    if args.lora_output == "adapter":
        if args.dtype or args.max_shard_size:
            raise BonesoupError(
                "--dtype and --max-shard-size apply to full weights; the stacked adapter is "
                "written in float32, so drop them or use --lora-output merged"
            )
        stack_lora_adapters(backbones, backbone_c, output)
        return "stacked LoRA adapter"
    merge_lora_into_base(
        _lora_base(args, backbones), backbones, backbone_c, output, args.dtype, args.max_shard_size
    )
    return "LoRA adapters merged into full weights"


def run(args: argparse.Namespace) -> int:
    """Compute the coefficients, merge, and print the coefficients and the output folder."""
    backbones = [Path(p) for p in args.backbone]
    lora = all(is_lora_adapter(p) for p in backbones)
    if args.coefficients is not None:
        backbone_c = _raw_coefficients(args, len(backbones))
        has_base = args.base is not None or lora
        base_c = 1.0 - sum(backbone_c) if has_base else 0.0
        header = ["method: raw coefficients"]
    else:
        soup = _solve(args, len(backbones))
        backbone_c, base_c = soup.backbones.tolist(), float(soup.base)
        preference = ",".join(f"{value:g}" for value in soup.preference.tolist())
        header = [
            f"method: {soup.method}",
            f"preference: {preference}",
            f"condition number: {soup.condition_number:.4g}",
        ]
    kind = _write(args, backbones, backbone_c, base_c)
    lines = header + [
        f"merge/coefficient/{j} {value:.6g} {path}"
        for j, (value, path) in enumerate(zip(backbone_c, backbones, strict=True), start=1)
    ]
    if base_c != 0 or args.base is not None:
        lines.append(
            f"merge/coefficient/base {base_c:.6g} {args.base or 'theta_0 of the adapters'}"
        )
    lines.append(f"wrote {kind} to {args.output}")
    print("\n".join(lines))
    return 0
