"""The starting model's side of the held-out check, computed once per run and shared by backbones.

RUN_DIR/heldout-theta_0.json stores theta_0's raw scores on `training.heldout_prompts` validation
prompts, sampled with the training settings and seed `config.seed`. Each backbone compares its
own reward h_j on the same prompts and settings with these scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from bonesoup.config import RunConfig
from bonesoup.errors import BonesoupError
from bonesoup.rundir import RunDir, write_json_atomic

logger = logging.getLogger(__name__)


def theta0_heldout_path(run: RunDir) -> Path:
    return run.root / "heldout-theta_0.json"


def sampling_fingerprint(config: RunConfig, *extra: Any) -> str:
    """Hash the settings that determine theta_0's samples: model, prompts, objectives, sampling."""
    data = config.to_dict()
    training = data["training"]
    payload = {
        "model": data["model"],
        "prompts": {k: v for k, v in data["prompts"].items() if k not in ("test",)},
        "objectives": data["objectives"],
        "sampling": {k: training[k] for k in ("max_new_tokens", "temperature", "top_p")},
        "seed": data["seed"],
        "extra": list(extra),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_theta0_heldout(
    config: RunConfig, run: RunDir, model, tokenizer
) -> dict[str, list[float]]:
    """Return theta_0's held-out scores, sampling them unless a matching file exists."""
    from bonesoup.training_loop import heldout_scores

    path = theta0_heldout_path(run)
    fingerprint = sampling_fingerprint(config, config.training.heldout_prompts)
    cached = _read(path)
    if cached is not None and cached.get("fingerprint") == fingerprint:
        return cached["scores"]
    if config.training.heldout_prompts == 0:
        scores: dict[str, list[float]] = {name: [] for name in config.objective_names}
    else:
        logger.info(
            "held-out check: sampling theta_0 on %d validation prompts",
            config.training.heldout_prompts,
        )
        scores = heldout_scores(config, model, tokenizer)
    write_json_atomic(path, {"fingerprint": fingerprint, "scores": scores})
    return scores


def theta0_heldout_is_current(config: RunConfig, run: RunDir) -> bool:
    """True if RUN_DIR/heldout-theta_0.json exists and matches the current settings."""
    cached = _read(theta0_heldout_path(run))
    fingerprint = sampling_fingerprint(config, config.training.heldout_prompts)
    return cached is not None and cached.get("fingerprint") == fingerprint


def load_theta0_heldout(run: RunDir, config: RunConfig) -> dict[str, list[float]]:
    """Read theta_0's held-out scores written by `ensure_theta0_heldout`."""
    cached = _read(theta0_heldout_path(run))
    fingerprint = sampling_fingerprint(config, config.training.heldout_prompts)
    if cached is None or cached.get("fingerprint") != fingerprint:
        raise BonesoupError(
            f"{theta0_heldout_path(run)} is missing or was made with other settings; "
            "run `bonesoup seek CONFIG`, which writes it before training"
        )
    return cached["scores"]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
