"""`bonesoup objectives`: list the objectives, their ranges and the reward-model presets."""

from __future__ import annotations

import argparse
import json
import math

from bonesoup.objectives.base import available_objectives
from bonesoup.objectives.reward_models import PRESETS


def _format_bound(value: float) -> str:
    if not math.isinf(value):
        return f"{value:g}"
    return "-inf" if value < 0 else "inf"


def _builtin_rows() -> list[dict[str, object]]:
    rows = []
    for name, factory in available_objectives().items():
        if isinstance(factory, str):
            continue
        low, high = factory.value_range
        rows.append(
            {
                "name": name,
                "kind": "builtin",
                "range": [_format_bound(low), _format_bound(high)],
                "higher_is_better": factory.higher_is_better,
                "needs_reference": factory.needs_reference,
                "description": factory.description,
            }
        )
    return rows


def _preset_rows() -> list[dict[str, object]]:
    return [
        {
            "name": name,
            "kind": "reward-model preset",
            "range": ["-inf", "inf"],
            "model": preset["model"],
            "input_format": preset["input_format"],
            "description": preset["description"],
        }
        for name, preset in PRESETS.items()
    ]


def run(args: argparse.Namespace) -> int:
    builtin, presets = _builtin_rows(), _preset_rows()
    if args.json:
        print(json.dumps(builtin + presets, indent=2))
        return 0
    print("Built-in objectives (offline):")
    for row in builtin:
        low, high = row["range"]
        marker = "  [needs --reference]" if row["needs_reference"] else ""
        print(f"  {row['name']:<13} [{low}, {high}]  {row['description']}{marker}")
    print("\nReward-model presets (Hugging Face sequence classifiers, need the model files):")
    for row in presets:
        print(f"  {row['name']:<13} {row['model']}  ({row['input_format']})  {row['description']}")
    print(
        "\nAlso: hf:<model id or local path> for any sequence classifier, "
        "module:function for a Python function f(prompts, responses, references)."
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "objectives",
        help="list objectives with their ranges and the reward-model presets",
        description="List the registered objectives (name, range, what each rewards) and the "
        "reward-model presets. Objectives in a config may also be hf:<id or path> reward models "
        "or module:function user functions.",
    )
    parser.add_argument("--json", action="store_true", help="print the listing as JSON")
    parser.set_defaults(func=run)
