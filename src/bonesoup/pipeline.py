"""The main job: seek the backbones, evaluate every method's front and write the report.

`run_pipeline` is what `bonesoup run CONFIG` calls. Each stage reuses finished work in the run folder:
trained backbones, the normalisation statistics and evaluated (seed, method, preference) rows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from bonesoup.config import RunConfig, apply_overrides, save_config
from bonesoup.models import resolve_model_path
from bonesoup.rundir import RunDir

logger = logging.getLogger(__name__)

# A first look in a few minutes: fewer RL steps, prompts and samples. The run goes to its own folder
# so that it never mixes with the full run's results.
QUICK_OVERRIDES = [
    "training.steps=4",
    "training.save_steps=2",
    "prompts.calibration=16",
    "prompts.validation=8",
    "prompts.test=12",
    "evaluation.extrapolation_candidates=[1.0, 1.5]",
]


@dataclass
class PipelineResult:
    run_dir: Path
    report: Path
    headline: str
    seconds: dict[str, float]


def quick_config(config: RunConfig) -> RunConfig:
    """Return the quick variant of a configuration, written to RUN_DIR-quick."""
    quick = apply_overrides(config, QUICK_OVERRIDES)
    quick.run_dir = f"{config.run_dir.rstrip('/')}-quick"
    return quick


def run_pipeline(config: RunConfig) -> PipelineResult:
    """Seek, evaluate and report for one configuration; return where the report is."""
    from bonesoup.evaluate import compute_metrics, evaluate_run, headline, write_report
    from bonesoup.seek import seek

    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, RunDir(run_dir).config)
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    resolve_model_path(config.model.name_or_path)
    seconds["model"] = time.perf_counter() - start

    start = time.perf_counter()
    logger.info("seek: training backbones in %s", run_dir)
    seek(config, run_dir)
    seconds["seek"] = time.perf_counter() - start

    start = time.perf_counter()
    logger.info("evaluate: sweeping preferences for %s", ", ".join(config.evaluation.methods))
    evaluate_run(run_dir, config)
    metrics = compute_metrics(run_dir)
    seconds["evaluate"] = time.perf_counter() - start

    report = write_report(run_dir)
    return PipelineResult(run_dir, report, headline(metrics), seconds)
