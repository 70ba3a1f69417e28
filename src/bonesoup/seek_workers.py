"""Run backbone trainings as separate processes, `training.workers` at a time, with progress bars.

Each backbone runs `python -m bonesoup.training` (or `accelerate launch -m bonesoup.training` with
`training.launcher: accelerate`) with one torch thread; its output goes to
RUN_DIR/seed-<s>/work/<name>/worker.log. The parent polls the worker's train_log.jsonl for the
progress bars and its checkpoint folder for checkpoint log lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from bonesoup.config import RunConfig
from bonesoup.rundir import RunDir, read_jsonl
from bonesoup.training import BackboneSpec, work_dir

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0


@dataclass
class _Worker:
    spec: BackboneSpec
    process: subprocess.Popen
    work: Path
    slot: int
    bar: tqdm
    log_stream: object
    checkpoints_seen: set[str] = field(default_factory=set)


def worker_command(run: RunDir, spec: BackboneSpec, launcher: str) -> list[str]:
    """Return the command line that trains one backbone."""
    arguments = ["--run-dir", str(run.root), "--seed", str(spec.seed), "--name", spec.name]
    if launcher == "accelerate":
        # NOTE: never run here (no GPU); only the single-process python launcher is tested.
        return ["accelerate", "launch", "-m", "bonesoup.training", *arguments]
    return [sys.executable, "-m", "bonesoup.training", *arguments]


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return env


def _start(
    config: RunConfig, run: RunDir, spec: BackboneSpec, slot: int, progress: bool
) -> _Worker:
    work = work_dir(run.root, spec.seed, spec.name)
    checkpoints = sorted(p.name for p in (work / "checkpoints").glob("checkpoint-*"))
    if checkpoints:
        logger.info("%s (seed %d): resuming from %s", spec.name, spec.seed, checkpoints[-1])
    else:
        logger.info("%s (seed %d): starting, weights %s", spec.name, spec.seed, spec.weights)
    log_path = work / "worker.log"
    log_stream = log_path.open("a")
    process = subprocess.Popen(
        worker_command(run, spec, config.training.launcher),
        stdout=log_stream,
        stderr=subprocess.STDOUT,
        env=_worker_env(),
    )
    bar = tqdm(
        total=config.training.steps,
        desc=f"{spec.name} s{spec.seed}",
        position=slot,
        leave=True,
        disable=not progress,
        dynamic_ncols=True,
    )
    return _Worker(spec, process, work, slot, bar, log_stream, set(checkpoints))


def _update(worker: _Worker) -> None:
    rows = read_jsonl(worker.work / "train_log.jsonl")
    if rows and int(rows[-1].get("step", 0)) != worker.bar.n:
        last = rows[-1]
        worker.bar.n = int(last.get("step", 0))
        worker.bar.set_postfix(
            h=f"{last.get('reward/scalarized', 0.0):.3f}",
            kl=f"{last.get('kl', 0.0) or 0.0:.4f}",
            refresh=False,
        )
        worker.bar.refresh()
    for checkpoint in (worker.work / "checkpoints").glob("checkpoint-*"):
        if checkpoint.name not in worker.checkpoints_seen:
            worker.checkpoints_seen.add(checkpoint.name)
            logger.info(
                "%s (seed %d): saved %s", worker.spec.name, worker.spec.seed, checkpoint.name
            )


def _finish(worker: _Worker, failures: list[tuple[str, Path]]) -> None:
    _update(worker)
    worker.bar.close()
    worker.log_stream.close()
    code = worker.process.returncode
    log_path = worker.work / "worker.log"
    if code == 0:
        logger.info("%s (seed %d): done", worker.spec.name, worker.spec.seed)
        return
    logger.error(
        "%s (seed %d): training failed with exit status %s; see %s",
        worker.spec.name,
        worker.spec.seed,
        code,
        log_path,
    )
    failures.append((f"{worker.spec.name} (seed {worker.spec.seed})", log_path))


def run_workers(
    config: RunConfig, run: RunDir, specs: list[BackboneSpec], progress: bool = True
) -> list[tuple[str, Path]]:
    """Train `specs` in `training.workers` parallel processes; return (backbone, log) per failure."""
    queue = list(specs)
    running: list[_Worker] = []
    failures: list[tuple[str, Path]] = []
    slots = max(1, min(config.training.workers, len(specs)))
    with logging_redirect_tqdm(), _terminate_as_exit():
        _schedule(config, run, queue, running, failures, slots, progress)
    return failures


@contextlib.contextmanager
def _terminate_as_exit():
    """Turn SIGTERM into SystemExit while workers run, so that they are stopped too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _schedule(
    config: RunConfig,
    run: RunDir,
    queue: list[BackboneSpec],
    running: list[_Worker],
    failures: list[tuple[str, Path]],
    slots: int,
    progress: bool,
) -> None:
    try:
        while queue or running:
            free = sorted(set(range(slots)) - {worker.slot for worker in running})
            while queue and free:
                running.append(_start(config, run, queue.pop(0), free.pop(0), progress))
            time.sleep(POLL_SECONDS)
            for worker in list(running):
                if worker.process.poll() is None:
                    _update(worker)
                    continue
                running.remove(worker)
                _finish(worker, failures)
    finally:
        for worker in running:  # interrupted (Ctrl-C): stop the workers this call started
            logger.warning("%s: stopping worker process %d", worker.spec.name, worker.process.pid)
            worker.process.terminate()
            worker.process.wait(timeout=30)
            worker.bar.close()
            worker.log_stream.close()
