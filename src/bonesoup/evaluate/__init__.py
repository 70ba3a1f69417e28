"""Evaluate: sweep preferences, sample, score every objective, compare the methods' fronts.

evaluate_run(run_dir)      eval/rows.jsonl and eval/responses.jsonl (resumable)
compute_metrics(run_dir)   eval/metrics.json: hypervolume, fronts, controllability
write_report(run_dir)      plots/, report.md and report.html; headline(metrics) is line 1
"""

from bonesoup.evaluate.generation import generate_responses
from bonesoup.evaluate.jobs import METHODS, EvalJob
from bonesoup.evaluate.report import headline, write_report
from bonesoup.evaluate.summary import compute_metrics
from bonesoup.evaluate.sweep import evaluate_run

__all__ = [
    "METHODS",
    "EvalJob",
    "compute_metrics",
    "evaluate_run",
    "generate_responses",
    "headline",
    "write_report",
]
