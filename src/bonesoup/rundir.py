"""Layout of a run folder, shared by seek, evaluate, report and serve.

RUN_DIR/
  config.yaml                      the configuration the run was made with
  normalization.json               per-objective mean and std of the starting model's samples
  seed-<s>/backbones/<name>/       one trained backbone: LoRA adapter or full weights,
                                   backbone.json (weights, seed, versions, rewards) and train_log.jsonl
  eval/rows.jsonl                  one row per (seed, method, preference): mean rewards
  eval/responses.jsonl             sampled responses with their scores
  eval/metrics.json                front, hypervolume and controllability per method
  plots/                           fronts and reward-against-preference plots, PNG and SVG
  report.md, report.html           the report
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def normalization(self) -> Path:
        return self.root / "normalization.json"

    def backbones(self, seed: int) -> Path:
        return self.root / f"seed-{seed}" / "backbones"

    def backbone(self, seed: int, name: str) -> Path:
        return self.backbones(seed) / name

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file in the same folder, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(data, stream, indent=2, sort_keys=True, default=str)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON row and flush it, so a killed process loses at most the row being written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as stream:
        stream.write(json.dumps(row, sort_keys=True, default=str) + "\n")
        stream.flush()
        os.fsync(stream.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read JSON rows, skipping a last line cut short by an interrupted write."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
