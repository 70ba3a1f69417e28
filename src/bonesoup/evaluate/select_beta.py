"""Choose beta by short training runs: the candidate whose Bone Soups front has the largest
hypervolume on the validation prompts wins.

For each candidate beta a sub-run RUN_DIR/select-beta/beta-<beta>/ trains the bone-soup-<j>
backbones for `fraction` of training.steps (via `bonesoup.seek.seek`) and sweeps the grid with
bone-soup on the validation split, so the test prompts stay unseen. All candidates share one
hypervolume reference point (`reference_point` over every candidate's points), because
hypervolumes with different reference points cannot be compared. The summary is written to
RUN_DIR/select-beta/summary.json.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from bonesoup.config import RunConfig, apply_overrides, save_config
from bonesoup.errors import BonesoupError
from bonesoup.evaluate.metrics import hypervolume, reference_point, summarize
from bonesoup.evaluate.summary import REFERENCE_RULE, load_rows, row_point
from bonesoup.evaluate.sweep import evaluate_run
from bonesoup.rundir import RunDir, write_json_atomic

logger = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


def candidate_config(config: RunConfig, beta: float, fraction: float, folder: Path) -> RunConfig:
    """Build the sub-run configuration: bone-soup backbones only, beta set, steps scaled."""
    steps = max(1, math.ceil(config.training.steps * fraction))
    overrides = [
        f"backbones.beta={beta}",
        "backbones.matrix=null",
        "backbones.methods=[bone-soup]",
        "backbones.morlhf=[]",
        f"training.steps={steps}",
        f"training.save_steps={min(config.training.save_steps, steps)}",
        "evaluation.methods=[bone-soup]",
    ]
    candidate = apply_overrides(config, overrides)
    candidate.run_dir = str(folder)
    return candidate


def check_candidates(betas: list[float], fraction: float, n: int) -> None:
    """Raise for an invalid fraction, fewer than 2 betas or a beta outside (0, 1] or equal 1/n."""
    if not 0 < fraction <= 1:
        raise BonesoupError(f"invalid fraction {fraction}: use a value in (0, 1], such as 0.25")
    if len(betas) < 2:
        raise BonesoupError(f"give at least 2 candidate betas to choose from, got {betas}")
    for beta in betas:
        if not 0 < beta <= 1 or abs(beta - 1 / n) < 1e-9:
            raise BonesoupError(
                f"invalid beta {beta}: each candidate must be in (0, 1] and not 1/n = {1 / n:.4g}"
            )


def _share_normalization(parent: Path, root: Path, folder: Path) -> None:
    """Copy normalization.json from the parent run or an earlier candidate into `folder`.

    Every candidate then scores in the same normalised units; seek reuses a copied file whose
    fingerprint matches its settings and refits it otherwise.
    """
    target = RunDir(folder).normalization
    if target.is_file():
        return
    sources = [RunDir(parent).normalization, *sorted(root.glob("beta-*/normalization.json"))]
    for source in sources:
        if source.is_file():
            shutil.copyfile(source, target)
            return


def select_beta(
    config: RunConfig,
    betas: list[float],
    fraction: float = 0.25,
    run_dir: Path | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Train and evaluate each candidate beta; return (and write) the summary with the best one."""
    from bonesoup.seek import seek

    check_candidates(betas, fraction, len(config.objectives))
    root = Path(run_dir or config.run_dir) / "select-beta"
    seeds = list(config.training.seeds)
    points: dict[float, dict[int, np.ndarray]] = {}
    for beta in betas:
        folder = root / f"beta-{beta:g}"
        candidate = candidate_config(config, beta, fraction, folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_config(candidate, RunDir(folder).config)
        _share_normalization(root.parent, root, folder)
        logger.info(
            "beta %g: training %d steps per backbone in %s", beta, candidate.training.steps, folder
        )
        seek(candidate, folder, seeds=seeds)
        evaluate_run(
            folder,
            candidate,
            methods=["bone-soup"],
            seeds=seeds,
            workers=workers,
            sweep_split="validation",
        )
        by_seed: dict[int, list] = {}
        for row in load_rows(folder):
            by_seed.setdefault(int(row["seed"]), []).append(row_point(row))
        points[beta] = {seed: np.stack(values) for seed, values in by_seed.items()}
    summary = summarize_candidates(points)
    summary.update({"fraction": fraction, "seeds": seeds, "split": "validation"})
    write_json_atomic(root / SUMMARY_FILE, summary)
    return summary


def summarize_candidates(points: dict[float, dict[int, np.ndarray]]) -> dict[str, Any]:
    """Hypervolume per candidate (mean over seeds) with one shared reference point.

    Args:
        points: beta -> seed -> array (g, n) of oriented normalised mean rewards.
    """
    every = np.concatenate([array for by_seed in points.values() for array in by_seed.values()])
    reference = reference_point(every)
    table = {}
    for beta, by_seed in points.items():
        values = [hypervolume(array, reference) for array in by_seed.values()]
        table[f"{beta:g}"] = summarize(values)
    best = max(points, key=lambda beta: table[f"{beta:g}"]["mean"])
    return {
        "best_beta": best,
        "hypervolume": table,
        "reference_point": reference.tolist(),
        "reference_rule": REFERENCE_RULE.replace(
            "all methods, seeds and theta_0", "all candidate betas and seeds"
        ),
    }
