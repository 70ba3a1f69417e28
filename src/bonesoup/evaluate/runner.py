"""Run evaluation jobs in one process: build each soup in memory, sample, score, write rows.

A `JobRunner` loads theta_0 once per backbone family and switches the soup's coefficients in
place for every preference (`bonesoup.switching`), so no merged model is ever written to disk.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from bonesoup.config import RunConfig
from bonesoup.errors import BonesoupError
from bonesoup.evaluate.generation import Generation, generate
from bonesoup.evaluate.jobs import FAMILY, EvalJob, backbone_dirs, sampling_seed, soup_weights
from bonesoup.rundir import RunDir

logger = logging.getLogger(__name__)

ROWS_FILE = "rows.jsonl"
RESPONSES_FILE = "responses.jsonl"
VALIDATION_ROWS_FILE = "validation_rows.jsonl"


def append_locked(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append JSON rows under an exclusive lock, so processes sharing the file never interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, sort_keys=True, default=str) + "\n" for row in rows)
    with path.open("a") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        try:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        finally:
            fcntl.flock(stream, fcntl.LOCK_UN)


def _stats(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


class JobRunner:
    """Evaluate jobs of one run in this process; models are loaded lazily and reused."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        fingerprint: str,
        device: str = "cpu",
        sweep_split: str = "test",
    ):
        from bonesoup.objectives import Normalizer, get_objective
        from bonesoup.seek import load_theta0

        self.config = config
        self.run = RunDir(Path(run_dir))
        self.fingerprint = fingerprint
        self.device = device
        self.sweep_split = sweep_split  # prompt split the sweep's "test" jobs sample on
        self._load_theta0 = load_theta0
        _, self.tokenizer = load_theta0_tokenizer(config)
        self.objectives = [get_objective(item.name, **item.options) for item in config.objectives]
        self.normalizer = (
            Normalizer.load(self.run.normalization) if self.run.normalization.is_file() else None
        )
        if self.normalizer is None:
            if config.normalization.method != "none":
                raise BonesoupError(
                    f"{self.run.normalization} is missing but normalization.method is "
                    f"{config.normalization.method!r}; run `bonesoup seek` on this run folder "
                    "to fit it, or set normalization.method to none"
                )
            logger.info("normalization.method is none: normalised rewards equal raw ones")
        self._prompts: dict[str, tuple[list, list[str]]] = {}
        # One loaded model set at a time (a soup, a MOD mixture or theta_0) keeps memory at one
        # soup's worth. Jobs arrive grouped by seed and backbone family, so each loads once.
        self._loaded_key: tuple | None = None
        self._loaded: Any = None

    # Prompts -------------------------------------------------------------------------------
    def prompts(self, split: str) -> tuple[list, list[str]]:
        """Examples and chat-formatted texts of a split, each repeated samples_per_prompt times."""
        if split not in self._prompts:
            from bonesoup.training_sampling import load_formatted_prompts

            evaluation = self.config.evaluation
            source = self.sweep_split if split == "test" else split
            limit = (
                evaluation.test_prompts or self.config.prompts.test
                if source == "test"
                else self.config.prompts.validation
            )
            examples, texts = load_formatted_prompts(self.config, self.tokenizer, source, limit)
            repeat = evaluation.samples_per_prompt
            self._prompts[split] = (
                [example for example in examples for _ in range(repeat)],
                [text for text in texts for _ in range(repeat)],
            )
        return self._prompts[split]

    # Models --------------------------------------------------------------------------------
    def _fresh_base(self):
        model, _ = self._load_theta0(self.config)
        return model.to(self.device).eval()

    def _load(self, key: tuple, build):
        """Return the model set for `key`, replacing the one loaded before."""
        if self._loaded_key != key:
            self._loaded = None  # drop the previous set before building the next
            self._loaded = build()
            self._loaded_key = key
        return self._loaded

    def _soup(self, seed: int, folders: list[Path]):
        from bonesoup.switching import load_soup

        key = ("soup", seed, *map(str, folders))
        return self._load(key, lambda: load_soup(self._fresh_base(), folders))

    def model_for(self, job: EvalJob):
        """Return the model for a soup, morlhf or theta_0 job, with its coefficients set."""
        family = FAMILY[job.method]
        if family is None:
            return self._load(("theta_0",), self._fresh_base), []
        if family == "morlhf":
            folder = self.run.backbone(job.seed, job.backbone)
            soup = self._soup(job.seed, [folder])
            weights = [1.0]
        else:
            soup = self._soup(job.seed, backbone_dirs(self.run.root, job.seed, family))
            weights = soup_weights(self.config, job).tolist()
        soup.set_coefficients(weights)
        return soup.model, weights

    def mod_mixture(self, seed: int):
        """Load one model per rewarded-soup backbone, each theta_0 plus that backbone alone."""
        from bonesoup.evaluate.mod import ModMixture
        from bonesoup.switching import load_soup

        def build() -> ModMixture:
            models = []
            for folder in backbone_dirs(self.run.root, seed, "rewarded-soup"):
                soup = load_soup(self._fresh_base(), [folder])
                soup.set_coefficients([1.0])
                models.append(soup.model)
            return ModMixture(models)

        return self._load(("mod", seed), build)

    # Jobs ----------------------------------------------------------------------------------
    def _generate(self, job: EvalJob, texts: list[str]) -> tuple[Generation, list[float]]:
        evaluation = self.config.evaluation
        options = {
            "max_new_tokens": evaluation.max_new_tokens,
            "top_p": evaluation.top_p,
            "temperature": evaluation.temperature,
            "batch_size": evaluation.batch_size,
            "seed": sampling_seed(evaluation.seed, job.preference),
        }
        if job.method == "mod":
            mixture = self.mod_mixture(job.seed)
            return mixture.generate(self.tokenizer, texts, list(job.preference), **options), list(
                job.preference
            )
        model, weights = self.model_for(job)
        return generate(model, self.tokenizer, texts, **options), weights

    def score(self, examples: list, responses: list[str]) -> dict[str, dict[str, list[float]]]:
        """Raw and normalised scores per objective name, one value per response."""
        prompts = [example.prompt for example in examples]
        references = [example.reference for example in examples]
        scores: dict[str, dict[str, list[float]]] = {}
        for objective in self.objectives:
            raw = objective.score(prompts, responses, references)
            normalized = (
                self.normalizer.normalize(objective.name, raw) if self.normalizer else list(raw)
            )
            scores[objective.name] = {"raw": raw, "normalized": normalized}
        return scores

    def run_job(self, job: EvalJob) -> dict[str, Any]:
        """Evaluate one job, append its responses (test split) and its row; return the row."""
        examples, texts = self.prompts(job.split)
        start = time.perf_counter()
        generation, weights = self._generate(job, texts)
        seconds = time.perf_counter() - start
        scores = self.score(examples, generation.responses)
        row = self._row(job, weights, scores, generation, seconds)
        eval_dir = self.run.eval
        if job.split == "test":
            append_locked(
                eval_dir / RESPONSES_FILE, self._response_rows(job, examples, generation, scores)
            )
            append_locked(eval_dir / ROWS_FILE, [row])
        else:
            append_locked(eval_dir / VALIDATION_ROWS_FILE, [row])
        logger.info(
            "%s: %d responses, %.1f tokens/s", job.key, len(texts), row["tokens_per_second"]
        )
        return row

    def _row(self, job, weights, scores, generation: Generation, seconds: float) -> dict[str, Any]:
        row: dict[str, Any] = {
            "key": job.key,
            "seed": job.seed,
            "method": job.method,
            "preference": None if job.preference is None else list(job.preference),
            "split": job.split,
            "extrapolation": None if job.extrapolation is None else list(job.extrapolation),
            "backbone": job.backbone,
            "coefficients": [float(value) for value in weights],
            "objectives": [objective.name for objective in self.objectives],
            "higher_is_better": [bool(objective.higher_is_better) for objective in self.objectives],
            "samples": len(generation.responses),
            "new_tokens": generation.new_tokens,
            "generation_seconds": seconds,
            "tokens_per_second": generation.new_tokens / seconds if seconds > 0 else 0.0,
            "fingerprint": self.fingerprint,
        }
        normalized_means = []
        for name, values in scores.items():
            row[f"reward/{name}/mean"], row[f"reward/{name}/std"] = _stats(values["raw"])
            mean, std = _stats(values["normalized"])
            row[f"reward/{name}/normalized_mean"], row[f"reward/{name}/normalized_std"] = mean, std
            normalized_means.append(mean)
        if job.preference is not None:
            row["reward/scalarized"] = float(np.dot(job.preference, normalized_means))
        return row

    def _response_rows(self, job, examples, generation: Generation, scores) -> list[dict]:
        rows = []
        for index, (example, response) in enumerate(
            zip(examples, generation.responses, strict=True)
        ):
            rows.append(
                {
                    "key": job.key,
                    "seed": job.seed,
                    "method": job.method,
                    "preference": None if job.preference is None else list(job.preference),
                    "prompt_id": example.id,
                    "sample": index % self.config.evaluation.samples_per_prompt,
                    "prompt": example.prompt,
                    "response": response,
                    "scores": {name: values["raw"][index] for name, values in scores.items()},
                }
            )
        return rows


def load_theta0_tokenizer(config: RunConfig):
    """Load only the tokenizer of theta_0 (left padding)."""
    from bonesoup.models import load_tokenizer, resolve_model_path

    path = resolve_model_path(config.model.name_or_path)
    return path, load_tokenizer(path, config.model.trust_remote_code)
