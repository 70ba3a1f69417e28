"""The preference sweep: every (training seed, method, preference) job of a run, resumable.

`evaluate_run` lists the jobs, drops those whose key already has a row in eval/rows.jsonl, and
runs the rest:

- on CPU, across `evaluation.workers` processes (spawned, one torch thread each), each taking
  every workers-th job of the list;
- under `accelerate launch` (or torchrun), which set RANK and WORLD_SIZE, each rank takes every
  WORLD_SIZE-th job on its own GPU, and rank 0 waits until every row is written.

Rows are appended under a file lock, so processes share one rows.jsonl. Sampling uses a seed per
preference, the same for every method, so methods are compared on equal noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import time
from pathlib import Path

from bonesoup.config import RunConfig, load_config
from bonesoup.errors import BonesoupError
from bonesoup.evaluate.extrapolation import (
    extrapolation_jobs,
    read_extrapolation,
    select_extrapolation,
)
from bonesoup.evaluate.jobs import METHODS, EvalJob, check_methods, method_available, sweep_jobs
from bonesoup.evaluate.runner import ROWS_FILE, VALIDATION_ROWS_FILE, JobRunner
from bonesoup.rundir import RunDir, read_jsonl, write_json_atomic

logger = logging.getLogger(__name__)

META_FILE = "meta.json"
# Evaluation fields that change neither the sampled responses' distribution nor the scores.
_UNKEYED_EVALUATION_FIELDS = ("methods", "workers", "batch_size", "extrapolation_candidates")
RANK_POLL_SECONDS = 10.0


def evaluation_fingerprint(config: RunConfig, sweep_split: str = "test") -> str:
    """Hash of everything that decides an evaluated row: model, prompts, objectives, sampling.

    The training section is included so that backbones retrained with other settings never reuse
    rows of the old ones.
    """
    data = config.to_dict()
    evaluation = {
        key: value
        for key, value in data["evaluation"].items()
        if key not in _UNKEYED_EVALUATION_FIELDS
    }
    chosen = {
        key: data[key] for key in ("model", "prompts", "objectives", "normalization", "backbones")
    }
    chosen["training"] = {
        key: value
        for key, value in data["training"].items()
        if key not in ("workers", "logging", "seeds")
    }
    chosen["evaluation"] = evaluation
    chosen["sweep_split"] = sweep_split
    text = json.dumps(chosen, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def finished_keys(path: Path, fingerprint: str) -> set[str]:
    """Keys of the rows in `path`; raise if any row was made with other evaluation settings."""
    keys = set()
    for row in read_jsonl(path):
        if row.get("fingerprint") != fingerprint:
            raise BonesoupError(
                f"{path} contains rows made with other evaluation settings (fingerprint "
                f"{row.get('fingerprint')}, now {fingerprint}); move or delete {path.parent} "
                "to evaluate again, or restore the previous configuration"
            )
        keys.add(row["key"])
    return keys


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) from the RANK and WORLD_SIZE variables accelerate and torchrun set."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _device_for_rank() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def _worker_main(
    config: RunConfig,
    run_dir: str,
    fingerprint: str,
    jobs: list[EvalJob],
    log_level: int,
    sweep_split: str,
) -> None:
    """Entry point of a spawned worker process: one torch thread, its share of the jobs."""
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runner = JobRunner(config, Path(run_dir), fingerprint, sweep_split=sweep_split)
    for job in jobs:
        runner.run_job(job)


def run_jobs(
    config: RunConfig,
    run_dir: Path,
    jobs: list[EvalJob],
    workers: int,
    fingerprint: str,
    sweep_split: str = "test",
) -> None:
    """Evaluate `jobs` (none finished yet) in this process, in worker processes or per rank."""
    if not jobs:
        return
    rank, world = distributed_rank()
    if world > 1:
        # NOTE: the multi-GPU path is written for accelerate launch but untested (no GPU here).
        runner = JobRunner(
            config, run_dir, fingerprint, device=_device_for_rank(), sweep_split=sweep_split
        )
        for job in jobs[rank::world]:
            runner.run_job(job)
        return
    workers = max(1, min(workers, len(jobs)))
    if workers == 1:
        runner = JobRunner(config, run_dir, fingerprint, sweep_split=sweep_split)
        for job in jobs:
            runner.run_job(job)
        return
    context = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    processes = [
        context.Process(
            target=_worker_main,
            args=(config, str(run_dir), fingerprint, jobs[index::workers], level, sweep_split),
        )
        for index in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [index for index, process in enumerate(processes) if process.exitcode != 0]
    if failed:
        raise BonesoupError(
            f"evaluation workers {failed} failed (exit codes "
            f"{[processes[i].exitcode for i in failed]}); see the log above, fix the cause and "
            "rerun: finished rows are kept"
        )


def wait_for_rows(path: Path, keys: set[str], fingerprint: str) -> None:
    """Block until every key has a row (rank 0 waits for the other ranks' shares)."""
    while True:
        missing = keys - finished_keys(path, fingerprint)
        if not missing:
            return
        logger.info("waiting for %d rows from other ranks", len(missing))
        time.sleep(RANK_POLL_SECONDS)


def _usable_methods(
    run_dir: Path, methods: list[str], seeds: list[int], n: int, explicit: bool
) -> list[str]:
    for seed in seeds:
        if not RunDir(run_dir).backbones(seed).is_dir():
            raise BonesoupError(
                f"training seed {seed} has no backbones in {RunDir(run_dir).backbones(seed)}; "
                f"train it with `bonesoup seek --seeds {seed}` or leave it out of --seeds"
            )
    usable = []
    for method in methods:
        reasons = [r for s in seeds if (r := method_available(run_dir, s, method, n)) is not None]
        if not reasons:
            usable.append(method)
        elif explicit:
            raise BonesoupError(
                f"cannot evaluate {method}: {reasons[0]}; train it with "
                "`bonesoup seek` or leave it out of --methods"
            )
        else:
            logger.warning("skipping %s: %s", method, reasons[0])
    return usable


def _write_meta(
    run: RunDir, config: RunConfig, fingerprint: str, methods: list[str], seeds: list[int]
) -> None:
    from bonesoup.evaluate.jobs import evaluation_grid

    write_json_atomic(
        run.eval / META_FILE,
        {
            "fingerprint": fingerprint,
            "methods": methods,
            "seeds": seeds,
            "objectives": config.objective_names,
            "grid": [list(mu) for mu in evaluation_grid(config)],
            "evaluation": dataclasses.asdict(config.evaluation),
        },
    )


def evaluate_run(
    run_dir: Path,
    config: RunConfig | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    workers: int | None = None,
    sweep_split: str = "test",
) -> Path:
    """Sweep the preference grid for every method and training seed; return the eval folder.

    Args:
        run_dir: the run folder (backbones under seed-<s>/backbones).
        config: the run configuration; read from RUN_DIR/config.yaml when None.
        methods: subset of METHODS; None takes evaluation.methods, skipping methods whose
            backbones are missing (an explicit list raises instead).
        seeds: training seeds; None takes training.seeds.
        workers: CPU processes; None takes evaluation.workers.
        sweep_split: prompt split of the sweep; "validation" for beta selection, which must
            not see the test prompts.
    """
    run = RunDir(Path(run_dir))
    config = config or load_config(run.config)
    explicit = methods is not None
    methods = check_methods(methods or config.evaluation.methods)
    seeds = [int(seed) for seed in (seeds or config.training.seeds)]
    workers = config.evaluation.workers if workers is None else workers
    n = len(config.objectives)
    fingerprint = evaluation_fingerprint(config, sweep_split)
    methods = _usable_methods(run.root, methods, seeds, n, explicit)
    for name in (ROWS_FILE, VALIDATION_ROWS_FILE):  # raises before meta.json is overwritten
        finished_keys(run.eval / name, fingerprint)
    rank, world = distributed_rank()
    if rank == 0:
        _write_meta(run, config, fingerprint, methods, seeds)

    factors: dict[int, tuple[float, ...]] = {}
    if "bone-soup-extrapolated" in methods:
        search = extrapolation_jobs(config, seeds)
        done = finished_keys(run.eval / VALIDATION_ROWS_FILE, fingerprint)
        run_jobs(
            config, run.root, [job for job in search if job.key not in done], workers, fingerprint
        )
        if world > 1:
            wait_for_rows(run.eval / VALIDATION_ROWS_FILE, {job.key for job in search}, fingerprint)
        if rank == 0:
            select_extrapolation(run.root, config, seeds)
        elif world > 1:
            while not read_extrapolation(run.root):
                time.sleep(RANK_POLL_SECONDS)
        factors = {seed: tuple(choice) for seed, choice in read_extrapolation(run.root).items()}

    jobs = sweep_jobs(config, run.root, methods, seeds, factors)
    done = finished_keys(run.eval / ROWS_FILE, fingerprint)
    pending = [job for job in jobs if job.key not in done]
    logger.info(
        "%d of %d evaluation jobs finished earlier; %d to run",
        len(jobs) - len(pending),
        len(jobs),
        len(pending),
    )
    run_jobs(config, run.root, pending, workers, fingerprint, sweep_split)
    if world > 1 and rank == 0:
        wait_for_rows(run.eval / ROWS_FILE, {job.key for job in jobs}, fingerprint)
    return run.eval


__all__ = ["METHODS", "evaluate_run", "evaluation_fingerprint", "run_jobs"]
