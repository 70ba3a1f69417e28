"""report.md and report.html of a run: headline, metrics table, plots, configuration, samples.

The first line of report.md is `headline(metrics)`: Bone Soups' hypervolume against Rewarded
Soups'. With several training seeds each metric is given as mean +- sample std over seeds, and a
winner is named only when the mean +- std intervals do not overlap.
"""

from __future__ import annotations

import html
import json
import os
import re
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from bonesoup.evaluate.plots import write_plots
from bonesoup.evaluate.runner import RESPONSES_FILE
from bonesoup.evaluate.summary import METRICS_FILE, compute_metrics
from bonesoup.rundir import RunDir, read_jsonl

NAMES = {"bone-soup": "Bone Soups", "rewarded-soup": "Rewarded Soups"}
SAMPLES_PER_PREFERENCE = 2
SAMPLE_METHODS = ("bone-soup", "rewarded-soup")
MAX_RESPONSE_CHARACTERS = 400


def _seed_phrase(count: int) -> str:
    return f"{count} training seed" + ("" if count == 1 else "s")


def _value(summary: dict[str, Any] | None, digits: int = 3, style: str = "f") -> str:
    """Format a seed summary as "mean" or "mean ± std"; style "g" keeps significant digits."""
    if not summary or summary.get("mean") is None:
        return "n/a"
    if summary["count"] > 1:
        return f"{summary['mean']:.{digits}{style}} ± {summary['std']:.{digits}{style}}"
    return f"{summary['mean']:.{digits}{style}}"


def _volume(summary: dict[str, Any] | None) -> str:
    return _value(summary, 3, "g")


def headline(metrics: dict[str, Any]) -> str:
    """Summarise in one line Bone Soups' hypervolume against Rewarded Soups', the number of
    seeds, and whether the difference exceeds the spread across seeds."""
    comparison = metrics.get("comparison")
    methods = metrics["methods"]
    if comparison is None:
        present = [m for m in ("bone-soup", "rewarded-soup") if m in methods]
        if not present:
            return "Neither Bone Soups nor Rewarded Soups was evaluated in this run."
        missing = "Rewarded Soups" if present == ["bone-soup"] else "Bone Soups"
        return (
            f"{NAMES[present[0]]} hypervolume {_volume(methods[present[0]]['hypervolume'])} "
            f"over {_seed_phrase(methods[present[0]]['hypervolume']['count'])}; "
            f"{missing} was not evaluated, so there is no comparison."
        )
    bone = methods["bone-soup"]["hypervolume"]
    rewarded = methods["rewarded-soup"]["hypervolume"]
    ratio = f"{comparison['ratio']:.2f}x" if comparison["ratio"] is not None else "ratio n/a"
    line = (
        f"Bone Soups hypervolume {_volume(bone)} vs Rewarded Soups {_volume(rewarded)} "
        f"({ratio}) over {_seed_phrase(comparison['seeds'])}; "
    )
    if comparison["seeds"] < 2:
        return line + "one seed gives no spread, so no winner is called."
    if comparison["winner"] is None:
        return line + "the mean ± std intervals overlap, so no winner is called."
    return line + f"{NAMES[comparison['winner']]} is higher beyond the mean ± std spread."


def metrics_table(metrics: dict[str, Any]) -> list[str]:
    """Markdown table: one row per method, mean ± std over seeds where there are several."""
    objectives = metrics["objectives"]
    header = ["method", "seeds", "hypervolume", "front size", "alignment"]
    header += [f"Spearman {name}" for name in objectives]
    header += [f"ordered {name}" for name in objectives]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, summary in metrics["methods"].items():
        cells = [
            method,
            str(summary["hypervolume"]["count"]),
            _volume(summary["hypervolume"]),
            _value(summary["front_size"], 1),
            _value(summary.get("alignment")),
        ]
        cells += [_value(summary.get("spearman", {}).get(name), 2) for name in objectives]
        cells += [_value(summary.get("ordered_fraction", {}).get(name), 2) for name in objectives]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _fence(text: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def sample_section(run_dir: Path, objectives: list[str]) -> list[str]:
    """Format a few responses per preference of Bone Soups and Rewarded Soups (lowest seed)."""
    rows = read_jsonl(RunDir(run_dir).eval / RESPONSES_FILE)
    if not rows:
        return ["No responses recorded."]
    seed = min(row["seed"] for row in rows)
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        if row["seed"] == seed and row["method"] in SAMPLE_METHODS:
            grouped[(row["method"], tuple(row["preference"]))].append(row)
    lines = []
    for (method, preference), entries in sorted(grouped.items(), key=lambda item: item[0][1]):
        mu = ", ".join(f"{value:g}" for value in preference)
        lines.append(f"#### {method}, mu = ({mu})")
        seen = set()
        for entry in entries:
            if entry["prompt_id"] in seen or len(seen) >= SAMPLES_PER_PREFERENCE:
                continue
            seen.add(entry["prompt_id"])
            scores = ", ".join(f"{name} {entry['scores'][name]:.3g}" for name in objectives)
            response = entry["response"][:MAX_RESPONSE_CHARACTERS]
            lines += [f"Prompt: {entry['prompt'][:200]!r} ({scores})", "", _fence(response), ""]
    return lines


def _config_text(run_dir: Path) -> str:
    path = RunDir(run_dir).config
    return path.read_text() if path.is_file() else "(config.yaml not found)"


def build_markdown(run_dir: Path, metrics: dict[str, Any]) -> str:
    """Assemble report.md from the metrics, plots, configuration and responses."""
    lines = [headline(metrics), "", f"# Bone Soups evaluation: {Path(run_dir).name}", ""]
    lines += ["## Metrics", ""]
    lines += metrics_table(metrics)
    reference = ", ".join(f"{value:.3f}" for value in metrics["reference_point"])
    normalised = RunDir(Path(run_dir)).normalization.is_file()
    scale = "z-normalised with theta_0's statistics" if normalised else "raw (not normalised)"
    lines += [
        "",
        (
            f"Hypervolume reference point ({reference}): {metrics['reference_rule']}. "
            f"Rewards are {scale} and oriented so higher is better. Alignment is the mean of "
            "mu . r over the grid; ordered is the fraction of neighbouring mu_i levels where "
            "r_i rises."
        ),
        "",
    ]
    if "extrapolation" in metrics:
        seeds = metrics["extrapolation"]["seeds"]
        chosen = "; ".join(f"seed {seed}: k = {entry['factors']}" for seed, entry in seeds.items())
        lines += [f"Extrapolation factors chosen on the validation prompts: {chosen}.", ""]
    throughput = ", ".join(
        f"{method} {value:.1f}" for method, value in metrics["tokens_per_second_median"].items()
    )
    lines += [f"Generation throughput (median tokens/s per row): {throughput}.", ""]
    lines += [
        "## Plots",
        "",
        "![fronts](plots/fronts.png)",
        "",
        "![rewards against preference](plots/rewards_vs_preference.png)",
        "",
    ]
    lines += ["## Sampled responses", ""]
    lines += sample_section(Path(run_dir), metrics["objectives"])
    lines += ["", "## Configuration", "", _fence(_config_text(Path(run_dir)).rstrip()), ""]
    return "\n".join(lines)


def render_html(markdown: str, title: str) -> str:
    """Render report markdown to a standalone HTML page; raw HTML in the text is escaped."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;"
        "max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px}pre{background:#f6f6f6;padding:6px;"
        "white-space:pre-wrap}img{max-width:100%}</style></head><body>\n"
        f"{body}</body></html>\n"
    )


def _write_text(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_report(run_dir: Path, metrics: dict[str, Any] | None = None) -> Path:
    """Recompute metrics (unless given), draw the plots and write report.md and report.html.

    Returns the path of report.md.
    """
    run = RunDir(Path(run_dir))
    if metrics is None:
        metrics = compute_metrics(run.root)
    write_plots(metrics, run.plots)
    markdown = build_markdown(run.root, metrics)
    _write_text(run.report_md, markdown)
    _write_text(run.report_html, render_html(markdown, f"Bone Soups report: {run.root.name}"))
    return run.report_md


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """Read eval/metrics.json as written by compute_metrics."""
    return json.loads((RunDir(Path(run_dir)).eval / METRICS_FILE).read_text())
