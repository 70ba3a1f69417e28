"""`bonesoup toy`: compare soups on concave quadratic rewards, where the oracle is exact.

Example:
    bonesoup toy --beta 0.6 0.7 0.8 --json
"""

from __future__ import annotations

import argparse
import json

from bonesoup.backbone import circulant_backbone_matrix
from bonesoup.errors import BonesoupError
from bonesoup.toy import (
    DEFAULT_BETAS,
    DEFAULT_FINE_POINTS,
    default_quadratics,
    random_quadratics,
    run_toy,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `toy` subcommand."""
    parser = subparsers.add_parser(
        "toy",
        help="compare Bone Soups, Rewarded Soups and ABA on quadratic rewards",
        description="Regret of each soup against the exact optimum of sum_i mu_i r_i for "
        "concave quadratic rewards r_i.",
    )
    parser.add_argument(
        "--beta",
        type=float,
        nargs="+",
        default=list(DEFAULT_BETAS),
        help="one or more diagonal values of the circulant backbone matrix (default 0.6 0.7 0.8)",
    )
    parser.add_argument(
        "--objectives",
        type=int,
        default=2,
        help="number of objectives n (default 2); fixed quadratics exist for 2 and 3",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="draw random quadratics with this seed in place of the fixed ones",
    )
    parser.add_argument(
        "--dim",
        type=int,
        default=None,
        help="parameter dimension d of random quadratics (default n); needs --seed",
    )
    parser.add_argument(
        "--points",
        type=int,
        default=DEFAULT_FINE_POINTS,
        help=f"mu_1 grid size for the regret curves when n = 2 (default {DEFAULT_FINE_POINTS})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print a JSON object or one summary block per beta."""
    if args.seed is not None and args.seed < 0:
        raise BonesoupError(f"invalid --seed {args.seed}: use an integer >= 0")
    if args.points < 2:
        raise BonesoupError(f"invalid --points {args.points}: use 2 or more grid points")
    if args.seed is None:
        if args.dim is not None:
            raise BonesoupError(
                f"--dim {args.dim} applies only to random quadratics; add --seed, or drop --dim "
                "to use the fixed quadratics"
            )
        quadratics = default_quadratics(args.objectives)
    else:
        dim = args.objectives if args.dim is None else args.dim
        quadratics = random_quadratics(args.objectives, dim, args.seed)
    for beta in args.beta:  # reject a bad beta before any work is logged
        circulant_backbone_matrix(args.objectives, beta)
    report = run_toy(tuple(args.beta), quadratics, args.points, args.seed)
    if args.json:
        print(json.dumps(report))
    else:
        print(format_summary(report))
    return 0


def format_summary(report: dict) -> str:
    """Format mean and max regret per method and the intervals where Bone Soups wins."""
    lines = [f"objectives: {report['objectives']}, dimension: {report['dim']}"]
    for key, result in report["results"].items():
        lines.append(f"beta {key}")
        for method, summary in result["regret"].items():
            lines.append(
                f"  {method:<14} mean regret {summary['mean']:.5f}  max {summary['max']:.5f}"
            )
        share = result["bone_soup_better_fraction"]
        lines.append(f"  bone-soup regret < rewarded-soup regret on {share:.0%} of the grid")
        if "bone_soup_better_intervals" in result:
            intervals = result["bone_soup_better_intervals"]
            spans = [
                f"({item['boundaries'][0]:.3f}, {item['boundaries'][1]:.3f})" for item in intervals
            ]
            low, high = result["paper_interval"]
            lines.append(f"  mu_1 intervals: {', '.join(spans) or 'none'}")
            lines.append(
                f"  stated interval ({low:.3f}, {high:.3f}) contained: "
                f"{result['contains_paper_interval']}"
            )
    return "\n".join(lines)
