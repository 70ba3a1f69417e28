"""Train one backbone with KL-regularised multi-objective RL (TRL RLOO, or GRPO as an option).

Backbone j maximises E[h_j(x, y)] - kl_coef * KL(policy || theta_0) with h_j = sum_i w_i z_i, where
z_i = (r_i - mean_i) / std_i is objective i normalised with the starting model's statistics and w
is row j of the backbone matrix. With RLOO (trl 1.16) the sequence reward is exactly
sum_i w_i z_i - kl_coef * sum_t log(pi(y_t) / pi_0(y_t)), and the leave-one-out baseline does not
rescale it, so the optimised signal is the linear scalarisation itself. GRPO instead adds the KL as
a loss term and divides rewards by the group std (unless `scale_rewards="none"`).

Run one backbone in its own process (the worker command that `bonesoup seek` starts):

    python -m bonesoup.training --run-dir RUN_DIR --seed 0 --name bone-soup-0

The worker reads RUN_DIR/seed-<s>/work/<name>/{config.yaml,spec.json}, checkpoints into
RUN_DIR/seed-<s>/work/<name>/checkpoints and resumes from the last checkpoint when restarted. The
finished backbone is written to a staging folder and renamed to RUN_DIR/seed-<s>/backbones/<name>.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bonesoup.config import RunConfig, load_config
from bonesoup.errors import BonesoupError
from bonesoup.rundir import RunDir, read_jsonl, write_json_atomic

logger = logging.getLogger(__name__)

# Sections and fields that change what a backbone learns. Worker count, loggers, evaluation
# settings and the held-out prompt count do not.
_TRAINING_IGNORED = ("workers", "logging", "seeds", "launcher", "heldout_prompts")
_PROMPTS_IGNORED = ("test", "validation")


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # folder name: bone-soup-<j>, rewarded-soup-<j> or morlhf-<k>
    method: str  # bone-soup, rewarded-soup or morlhf
    weights: list[float]  # w: the backbone reward is h = sum_i w_i z_i
    seed: int  # training seed

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneSpec:
        return cls(
            str(data["name"]),
            str(data["method"]),
            [float(w) for w in data["weights"]],
            int(data["seed"]),
        )


def training_sections(config: RunConfig) -> dict[str, Any]:
    """Return the config values that determine a trained backbone (used for its fingerprint)."""
    data = config.to_dict()
    training = {k: v for k, v in data["training"].items() if k not in _TRAINING_IGNORED}
    prompts = {k: v for k, v in data["prompts"].items() if k not in _PROMPTS_IGNORED}
    return {
        "model": data["model"],
        "prompts": prompts,
        "objectives": data["objectives"],
        "normalization": data["normalization"],
        "training": training,
    }


def backbone_fingerprint(config: RunConfig, spec: BackboneSpec) -> str:
    """Return a short hash of everything that produced the backbone: config sections and spec."""
    payload = {"sections": training_sections(config), "spec": asdict(spec)}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def work_dir(run_dir: Path, seed: int, name: str) -> Path:
    """Return the folder of an unfinished backbone: inputs, checkpoints and the worker log."""
    return Path(run_dir) / f"seed-{seed}" / "work" / name


def package_versions() -> dict[str, str]:
    """Return the versions of the packages that determine a training run."""
    import importlib.metadata

    versions = {"python": sys.version.split()[0]}
    for package in ("torch", "transformers", "trl", "peft", "accelerate", "bonesoup"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def read_backbone_json(folder: Path) -> dict[str, Any] | None:
    """Return the parsed backbone.json of a backbone folder, or None if missing or unreadable."""
    path = Path(folder) / "backbone.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_backbone_done(folder: Path, fingerprint: str) -> bool:
    """True if `folder` contains a finished backbone trained with the same fingerprint."""
    data = read_backbone_json(folder)
    return bool(data) and data.get("status") == "done" and data.get("fingerprint") == fingerprint


def last_complete_checkpoint(checkpoints: Path) -> Path | None:
    """Return the newest checkpoint-<step> folder that was completely written, or None.

    transformers writes trainer_state.json last. A folder whose trainer_state.json is missing or
    not valid JSON was cut short (for example by kill -9), so it is deleted.
    """
    if not checkpoints.is_dir():
        return None
    folders = [p for p in checkpoints.glob("checkpoint-*") if p.name.rsplit("-", 1)[-1].isdigit()]
    for folder in sorted(folders, key=lambda p: int(p.name.rsplit("-", 1)[-1]), reverse=True):
        try:
            json.loads((folder / "trainer_state.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            logger.warning("deleting incomplete checkpoint %s", folder)
            shutil.rmtree(folder, ignore_errors=True)
            continue
        return folder
    return None


def _trim_log(log_path: Path, last_step: int) -> None:
    """Drop rows after `last_step`: the resumed run logs those steps again."""
    rows = [row for row in read_jsonl(log_path) if int(row.get("step", 0)) <= last_step]
    temporary = log_path.with_name(f".{log_path.name}.tmp")
    temporary.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
    temporary.replace(log_path)


def train_backbone(run_dir: Path, seed: int, name: str) -> Path:
    """Train (or resume) one backbone from its work folder; return the finished backbone folder."""
    from bonesoup.training_loop import run_training

    run = RunDir(Path(run_dir))
    work = work_dir(run.root, seed, name)
    config = load_config(work / "config.yaml")
    spec = BackboneSpec.from_dict(json.loads((work / "spec.json").read_text()))
    target = run.backbone(seed, name)
    fingerprint = backbone_fingerprint(config, spec)
    if is_backbone_done(target, fingerprint):
        logger.info("%s: already trained in %s, reusing it", name, target)
        return target

    checkpoint = last_complete_checkpoint(work / "checkpoints")
    log_path = work / "train_log.jsonl"
    if checkpoint is not None:
        resumed_step = int(checkpoint.name.rsplit("-", 1)[-1])
        logger.info("%s: resuming from %s (step %d)", name, checkpoint, resumed_step)
        _trim_log(log_path, resumed_step)
    else:
        logger.info("%s: starting, weights %s, seed %d", name, spec.weights, spec.seed)
        log_path.unlink(missing_ok=True)

    staging = work / "final"
    if staging.exists():
        shutil.rmtree(staging)
    result = run_training(config, spec, run, work, log_path, checkpoint, staging)
    if result is None:  # a non-main process of a data-parallel run
        return target

    record = {
        "status": "done",
        "name": spec.name,
        "method": spec.method,
        "weights": spec.weights,
        "seed": spec.seed,
        "objectives": config.objective_names,
        "fingerprint": fingerprint,
        "format": "full" if config.training.full_finetune else "lora",
        "base_model": result.pop("base_model"),
        "resumed_from_step": int(checkpoint.name.rsplit("-", 1)[-1]) if checkpoint else None,
        "config": config.to_dict(),
        "versions": package_versions(),
        **result,
    }
    write_json_atomic(staging / "backbone.json", record)
    shutil.copyfile(log_path, staging / "train_log.jsonl")
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, target)
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    logger.info("%s: saved to %s", name, target)
    return target


def main(argv: list[str] | None = None) -> int:
    """Entry point of one worker process; exit status 0 on success, 1 on failure."""
    parser = argparse.ArgumentParser(prog="python -m bonesoup.training", description=__doc__)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--seed", required=True, type=int)
    parser.add_argument("--name", required=True)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from bonesoup.models import set_torch_threads

    set_torch_threads(args.threads)
    start = time.perf_counter()
    try:
        train_backbone(args.run_dir, args.seed, args.name)
    except BonesoupError as error:
        logger.error("%s: failed: %s", args.name, error)
        return 1
    logger.info("%s: finished in %.0f s", args.name, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
