"""Choose the extrapolation factors k_i of bone-soup-extrapolated on the validation prompts.

Extrapolation pushes a soup away from theta_0: theta = theta_0 + k sum_j c_j (theta_j - theta_0).
For each objective i and each candidate k (`evaluation.extrapolation_candidates`, k = 1 meaning
no extrapolation, always included) the soup for the corner preference e_i is sampled on the
validation prompts, which the test sweep does not use. k_i is the candidate with the highest mean
normalised r_i (ties go to the smaller k). bone-soup-extrapolated then serves mu with
`soup_coefficients(mu, "bone-soup", extrapolation=k)`: coefficient sum_i mu_i k_i (B^{-1})[j, i]
on backbone j and sum_i mu_i (1 - k_i) on theta_0.

The choice is stored per training seed in eval/extrapolation.json.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bonesoup.config import RunConfig
from bonesoup.evaluate.jobs import EvalJob
from bonesoup.evaluate.runner import VALIDATION_ROWS_FILE
from bonesoup.rundir import RunDir, read_jsonl, write_json_atomic

logger = logging.getLogger(__name__)

EXTRAPOLATION_FILE = "extrapolation.json"


def candidates(config: RunConfig) -> list[float]:
    """Return the candidate factors, sorted, with k = 1 added when missing."""
    return sorted({1.0, *(float(k) for k in config.evaluation.extrapolation_candidates)})


def corner(n: int, i: int) -> tuple[float, ...]:
    return tuple(1.0 if j == i else 0.0 for j in range(n))


def extrapolation_jobs(config: RunConfig, seeds: list[int]) -> list[EvalJob]:
    """Validation jobs: every seed x objective i x candidate k, the soup for e_i scaled by k."""
    n = len(config.objectives)
    return [
        EvalJob(
            seed, "bone-soup-extrapolated", corner(n, i), split="validation", extrapolation=(k,) * n
        )
        for seed in seeds
        for i in range(n)
        for k in candidates(config)
    ]


def choose_factors(
    rows: list[dict], objectives: list[str], ks: list[float]
) -> tuple[list[float], dict[str, dict[str, float]]]:
    """Pick k_i maximising the mean normalised r_i of the e_i soup over validation rows.

    Args:
        rows: validation rows of one seed (each with "preference", "extrapolation" and
            "reward/<objective>/normalized_mean").
        objectives: objective names, in preference order.
        ks: candidate factors, ascending.

    Returns:
        (factors, table): factors[i] = k_i; table[objective][str(k)] = mean normalised r_i.
    """
    factors, table = [], {}
    for i, name in enumerate(objectives):
        sign = 1.0
        scores: dict[float, float] = {}
        for row in rows:
            if row["preference"][i] != 1.0:
                continue
            sign = 1.0 if row["higher_is_better"][i] else -1.0
            scores[float(row["extrapolation"][0])] = row[f"reward/{name}/normalized_mean"]
        missing = [k for k in ks if k not in scores]
        if missing:
            raise RuntimeError(f"validation rows for {name} miss candidates {missing}")
        best = max(ks, key=lambda k: (sign * scores[k], -k))
        factors.append(best)
        table[name] = {f"{k:g}": scores[k] for k in ks}
    return factors, table


def select_extrapolation(run_dir: Path, config: RunConfig, seeds: list[int]) -> dict:
    """Choose k per seed from eval/validation_rows.jsonl and write eval/extrapolation.json."""
    run = RunDir(Path(run_dir))
    rows = read_jsonl(run.eval / VALIDATION_ROWS_FILE)
    ks = candidates(config)
    result = {"candidates": ks, "validation_prompts": config.prompts.validation, "seeds": {}}
    for seed in seeds:
        seed_rows = [row for row in rows if row["seed"] == seed]
        factors, table = choose_factors(seed_rows, config.objective_names, ks)
        result["seeds"][str(seed)] = {"factors": factors, "validation": table}
        logger.info("seed %d: extrapolation factors %s", seed, factors)
    write_json_atomic(run.eval / EXTRAPOLATION_FILE, result)
    return result


def read_extrapolation(run_dir: Path) -> dict[int, list[float]]:
    """Chosen factors per seed, or {} before the selection ran."""
    path = RunDir(Path(run_dir)).eval / EXTRAPOLATION_FILE
    if not path.is_file():
        return {}
    import json

    data = json.loads(path.read_text())
    return {int(seed): entry["factors"] for seed, entry in data["seeds"].items()}
