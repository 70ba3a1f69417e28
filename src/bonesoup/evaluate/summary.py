"""Turn eval/rows.jsonl into eval/metrics.json: fronts, hypervolume and controllability.

Every point is a row's vector of mean normalised rewards, negated for an objective where lower
is better, so larger is better on every axis. One reference point serves every method, seed and
theta_0 of the run (see `reference_point`); it is stored in metrics.json.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bonesoup.errors import BonesoupError
from bonesoup.evaluate.extrapolation import EXTRAPOLATION_FILE
from bonesoup.evaluate.metrics import (
    REFERENCE_MARGIN,
    controllability,
    hypervolume,
    non_dominated,
    preference_alignment,
    reference_point,
    summarize,
)
from bonesoup.evaluate.runner import ROWS_FILE
from bonesoup.rundir import RunDir, read_jsonl, write_json_atomic

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
REFERENCE_RULE = (
    f"per objective: minimum over every evaluated point of the run (all methods, seeds and "
    f"theta_0, normalised units) minus {REFERENCE_MARGIN:g} x that objective's range"
)


def load_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of eval/rows.jsonl, the last one per key, of the current fingerprint if known."""
    run = RunDir(Path(run_dir))
    meta_path = run.eval / "meta.json"
    fingerprint = json.loads(meta_path.read_text())["fingerprint"] if meta_path.is_file() else None
    rows: dict[str, dict[str, Any]] = {}
    for row in read_jsonl(run.eval / ROWS_FILE):
        if fingerprint is None or row.get("fingerprint") == fingerprint:
            rows[row["key"]] = row
    return list(rows.values())


def row_point(row: dict[str, Any]) -> np.ndarray:
    """Mean normalised rewards of a row, oriented for maximisation; shape (n,)."""
    signs = [1.0 if higher else -1.0 for higher in row["higher_is_better"]]
    return np.array(
        [
            sign * row[f"reward/{name}/normalized_mean"]
            for sign, name in zip(signs, row["objectives"], strict=True)
        ]
    )


def _seed_metrics(rows: list[dict[str, Any]], reference: np.ndarray) -> dict[str, Any]:
    points = np.stack([row_point(row) for row in rows])
    result: dict[str, Any] = {
        "hypervolume": hypervolume(points, reference),
        "front_size": int(non_dominated(points).sum()),
        "points": [
            {
                "preference": row["preference"],
                "rewards": point.tolist(),
                "raw": [row[f"reward/{name}/mean"] for name in row["objectives"]],
                "backbone": row.get("backbone"),
            }
            for row, point in zip(rows, points, strict=True)
        ],
    }
    preferences = [row["preference"] for row in rows if row["preference"] is not None]
    if len(preferences) == len(rows) and len(rows) >= 2:
        result["controllability"] = controllability(preferences, points)
        result["alignment"] = preference_alignment(preferences, points)
    return result


def _method_summary(per_seed: dict[int, dict[str, Any]], objectives: list[str]) -> dict[str, Any]:
    seeds = sorted(per_seed)
    summary: dict[str, Any] = {
        "seeds": {str(seed): per_seed[seed] for seed in seeds},
        "hypervolume": summarize([per_seed[s]["hypervolume"] for s in seeds]),
        "front_size": summarize([per_seed[s]["front_size"] for s in seeds]),
    }
    controlled = [per_seed[s]["controllability"] for s in seeds if "controllability" in per_seed[s]]
    if controlled:
        summary["alignment"] = summarize([per_seed[s].get("alignment") for s in seeds])
        summary["spearman"] = {
            name: summarize([c["spearman"][i] for c in controlled])
            for i, name in enumerate(objectives)
        }
        summary["ordered_fraction"] = {
            name: summarize(
                [c["ordered"][i] / c["pairs"][i] if c["pairs"][i] else None for c in controlled]
            )
            for i, name in enumerate(objectives)
        }
    summary["mean_points"] = _mean_points(per_seed)
    return summary


def _mean_points(per_seed: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Average each preference's point over the seeds (what the plots draw)."""
    grouped: dict[tuple, list[list[float]]] = defaultdict(list)
    for result in per_seed.values():
        for point in result["points"]:
            key = tuple(point["preference"]) if point["preference"] is not None else ()
            grouped[key].append(point["rewards"])
    return [
        {
            "preference": list(key) or None,
            "rewards": np.mean(values, axis=0).tolist(),
            "seeds": len(values),
        }
        for key, values in grouped.items()
    ]


def _throughput(rows: list[dict[str, Any]]) -> dict[str, float]:
    by_method: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        by_method[row["method"]].append(row["tokens_per_second"])
    return {method: statistics.median(values) for method, values in by_method.items()}


def compute_metrics(run_dir: Path) -> dict[str, Any]:
    """Compute every method's front metrics from the rows and write eval/metrics.json."""
    run = RunDir(Path(run_dir))
    rows = load_rows(run.root)
    if not rows:
        raise BonesoupError(
            f"{run.eval / ROWS_FILE} has no rows; run `bonesoup evaluate {run.root}` first"
        )
    objectives = rows[0]["objectives"]
    reference = reference_point(np.stack([row_point(row) for row in rows]))
    grouped: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        grouped[row["method"]][int(row["seed"])].append(row)
    methods = {}
    for method, by_seed in grouped.items():
        per_seed = {
            seed: _seed_metrics(seed_rows, reference) for seed, seed_rows in by_seed.items()
        }
        methods[method] = _method_summary(per_seed, objectives)
    metrics: dict[str, Any] = {
        "objectives": objectives,
        "seeds": sorted({int(row["seed"]) for row in rows}),
        "reference_point": reference.tolist(),
        "reference_rule": REFERENCE_RULE,
        "methods": methods,
        "tokens_per_second_median": _throughput(rows),
        "rows": len(rows),
    }
    extrapolation = run.eval / EXTRAPOLATION_FILE
    if extrapolation.is_file():
        metrics["extrapolation"] = json.loads(extrapolation.read_text())
    metrics["comparison"] = compare(metrics, "bone-soup", "rewarded-soup")
    write_json_atomic(run.eval / METRICS_FILE, metrics)
    return metrics


def spreads_overlap(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """True when [mean - std, mean + std] of two seed summaries intersect."""
    return (
        first["mean"] - first["std"] <= second["mean"] + second["std"]
        and second["mean"] - second["std"] <= first["mean"] + first["std"]
    )


def compare(metrics: dict[str, Any], method: str, baseline: str) -> dict[str, Any] | None:
    """Hypervolume of `method` against `baseline`: ratio of means and whether a winner is clear.

    A winner is called only with at least 2 seeds each and non-overlapping mean +- std intervals.
    """
    methods = metrics["methods"]
    if method not in methods or baseline not in methods:
        return None
    first, second = methods[method]["hypervolume"], methods[baseline]["hypervolume"]
    ratio = first["mean"] / second["mean"] if second["mean"] else None
    seeds = min(first["count"], second["count"])
    winner = None
    if seeds >= 2 and not spreads_overlap(first, second):
        winner = method if first["mean"] > second["mean"] else baseline
    return {
        "method": method,
        "baseline": baseline,
        "ratio": ratio,
        "seeds": seeds,
        "winner": winner,
    }
