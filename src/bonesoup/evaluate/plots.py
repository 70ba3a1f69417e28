"""Plots of a run's fronts (matplotlib, Agg backend), written as PNG and SVG to RUN_DIR/plots.

- fronts: n = 2, every method's points in normalised reward space, each labelled with mu_1,
  theta_0 as a star; n >= 3, one panel per pair of objectives (projections of the fronts).
- rewards_vs_preference: one panel per objective, mean normalised r_i against mu_i per method
  (points sharing a value of mu_i are averaged).
Points are the per-preference means over training seeds (metrics["methods"][m]["mean_points"]).
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

FORMATS = ("png", "svg")
STYLE = {
    "bone-soup": ("tab:red", "o"),
    "bone-soup-extrapolated": ("tab:orange", "D"),
    "rewarded-soup": ("tab:blue", "s"),
    "aba": ("tab:green", "^"),
    "mod": ("tab:purple", "v"),
    "morlhf": ("black", "P"),
    "theta_0": ("gray", "*"),
}


def _save(figure, folder: Path, stem: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for extension in FORMATS:
        path = folder / f"{stem}.{extension}"
        handle, temporary = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".{extension}", dir=folder)
        os.close(handle)
        try:
            figure.savefig(temporary, format=extension, dpi=120, bbox_inches="tight")
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        paths.append(path)
    plt.close(figure)
    return paths


def _points(summary: dict[str, Any]) -> tuple[list, np.ndarray]:
    entries = summary["mean_points"]
    preferences = [entry["preference"] for entry in entries]
    return preferences, np.array([entry["rewards"] for entry in entries])


def _draw_pair(axes, metrics: dict[str, Any], i: int, j: int, label_points: bool) -> None:
    for method, summary in metrics["methods"].items():
        color, marker = STYLE.get(method, ("tab:brown", "x"))
        preferences, points = _points(summary)
        if method == "theta_0":
            axes.scatter(
                points[:, i], points[:, j], s=160, c=color, marker=marker, label=method, zorder=3
            )
            continue
        order = np.argsort([p[0] if p else 0 for p in preferences], kind="stable")
        line = "-" if method not in ("morlhf",) and points.shape[1] == 2 else "none"
        axes.plot(
            points[order, i],
            points[order, j],
            linestyle=line,
            marker=marker,
            color=color,
            label=method,
            alpha=0.85,
        )
        if label_points:
            for preference, point in zip(preferences, points, strict=True):
                axes.annotate(
                    f"{preference[0]:.2g}",
                    (point[i], point[j]),
                    fontsize=7,
                    color=color,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    objectives = metrics["objectives"]
    axes.set_xlabel(f"{objectives[i]} (normalised)")
    axes.set_ylabel(f"{objectives[j]} (normalised)")
    axes.grid(alpha=0.3)


def plot_fronts(metrics: dict[str, Any], folder: Path) -> list[Path]:
    """Draw the fronts: one panel for n = 2, every pair of objectives for n >= 3."""
    n = len(metrics["objectives"])
    pairs = list(itertools.combinations(range(n), 2))
    columns = min(3, len(pairs))
    rows = int(np.ceil(len(pairs) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4.5 * rows), squeeze=False)
    for panel, (i, j) in zip(axes.flat, pairs, strict=False):
        _draw_pair(panel, metrics, i, j, label_points=(n == 2))
    for panel in list(axes.flat)[len(pairs) :]:
        panel.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    title = "Fronts (labels: mu_1)" if n == 2 else "Fronts, pairwise projections"
    figure.suptitle(title)
    return _save(figure, folder, "fronts")


def plot_rewards_vs_preference(metrics: dict[str, Any], folder: Path) -> list[Path]:
    """Draw each objective's mean normalised reward against its preference weight mu_i."""
    objectives = metrics["objectives"]
    figure, axes = plt.subplots(
        1, len(objectives), figsize=(4.5 * len(objectives), 4), squeeze=False
    )
    for i, (panel, name) in enumerate(zip(axes.flat, objectives, strict=True)):
        for method, summary in metrics["methods"].items():
            color, marker = STYLE.get(method, ("tab:brown", "x"))
            preferences, points = _points(summary)
            if method == "theta_0":
                panel.axhline(points[0, i], color=color, linestyle=":", label=method)
                continue
            weights = np.round([p[i] for p in preferences], 9)
            levels = np.unique(weights)
            means = [points[weights == level, i].mean() for level in levels]
            panel.plot(levels, means, marker=marker, color=color, label=method)
        panel.set_xlabel(f"mu ({name})")
        panel.set_ylabel(f"{name} (normalised)")
        panel.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    return _save(figure, folder, "rewards_vs_preference")


def write_plots(metrics: dict[str, Any], folder: Path) -> list[Path]:
    """Write every plot; return the files written."""
    return plot_fronts(metrics, folder) + plot_rewards_vs_preference(metrics, folder)
