"""`bonesoup coefficients`: print the soup coefficients that serve one preference.

Example:
    bonesoup coefficients --beta 0.7 --preference 0.2,0.8 --json
"""

from __future__ import annotations

import argparse
import json
import logging

from bonesoup.backbone import load_backbone_matrix
from bonesoup.coefficients import METHODS, SoupCoefficients, soup_coefficients
from bonesoup.errors import BonesoupError
from bonesoup.preferences import parse_preference

logger = logging.getLogger(__name__)

DEFAULT_BETA = 0.7


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `coefficients` subcommand."""
    parser = subparsers.add_parser(
        "coefficients",
        help="print the soup coefficients for a preference",
        description="Solve B^T c = mu and print the coefficient of each backbone.",
    )
    parser.add_argument(
        "--preference",
        required=True,
        help="comma-separated weights mu_1,...,mu_n, non-negative and summing to 1 (e.g. 0.2,0.8)",
    )
    parser.add_argument(
        "--beta",
        type=str,
        default=None,
        help=f"diagonal of the circulant backbone matrix, in (0, 1] and != 1/n "
        f"(default {DEFAULT_BETA}); ignored when --matrix is given",
    )
    parser.add_argument(
        "--method",
        default="bone-soup",
        help=f"one of {', '.join(METHODS)} (default bone-soup)",
    )
    parser.add_argument(
        "--extrapolation",
        default=None,
        metavar="K1,...,Kn",
        help="per-objective extrapolation factors k_i >= 1; appends theta_0's coefficient to "
        "the JSON 'coefficients' list",
    )
    parser.add_argument(
        "--matrix",
        default=None,
        metavar="FILE",
        help="JSON or CSV file with the rows of a backbone matrix, used in place of the "
        "circulant one",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Compute the coefficients and print them as JSON or as a table."""
    preference = parse_preference(args.preference)
    beta = _parse_beta(args.beta)
    matrix = None
    if args.matrix is not None:
        matrix = load_backbone_matrix(args.matrix)
        if beta is not None:
            logger.warning("--beta %g is ignored because --matrix is given", beta)
        beta = None
    elif beta is None:
        beta = DEFAULT_BETA
    factors = None if args.extrapolation is None else _parse_factors(args.extrapolation)
    soup = soup_coefficients(
        preference, method=args.method, beta=beta, matrix=matrix, extrapolation=factors
    )
    if args.json:
        print(json.dumps(_rounded(soup.to_dict())))
    else:
        print(format_table(soup))
    return 0


def _parse_beta(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise BonesoupError(
            f"invalid beta {text!r}: it is not a number; pass a number in (0, 1] such as 0.7"
        ) from None


def _parse_factors(text: str) -> list[float]:
    factors = []
    for token in text.split(","):
        try:
            factors.append(float(token))
        except ValueError:
            raise BonesoupError(
                f"invalid extrapolation factors {text!r}: {token.strip()!r} is not a number; "
                "give comma-separated numbers >= 1 such as 1.25,1.0"
            ) from None
    return factors


def format_table(soup: SoupCoefficients) -> str:
    """Format the coefficients as a short human-readable table, backbones numbered from 1."""
    preference = ", ".join(f"{value:g}" for value in soup.preference.tolist())
    lines = [
        f"method: {soup.method}",
        f"preference: {preference}",
        f"condition number: {soup.condition_number:.4g}",
        f"{'model':<12}{'coefficient':>12}",
    ]
    for j, value in enumerate(soup.backbones.tolist(), start=1):
        lines.append(f"{'backbone ' + str(j):<12}{value:>12.4f}")
    if soup.extrapolation is not None:
        lines.append(f"{'theta_0':<12}{soup.base:>12.4f}")
    return "\n".join(lines)


def _rounded(value: object) -> object:
    """Round floats to 12 decimals so that float noise such as -8.6e-17 prints as 0.0."""
    if isinstance(value, float):
        return round(value, 12) + 0.0  # + 0.0 turns -0.0 into 0.0
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    return value
