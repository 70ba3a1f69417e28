"""The generation engine of `bonesoup serve`: one shared soup, requests batched together.

Requests are queued, and one scheduler thread owns the model. It takes the oldest queued request
and, when the server was idle, waits up to the batching window for more. Then it runs every queued
request with the same batch key in one `generate` call, up to `max_batch_size` rows, under the
soup lock.

With LoRA backbones (and `per_row_soups`, the default) every row of a batch has its own
coefficients (`RowMixing`), so requests with different preferences share a batch. With full-weight
backbones the soup is one model state, so a batch has one coefficient vector and the scheduler sets
it before the call, through a `SoupCache` of the most recently used soups.

Batch keys: greedy requests batch with any greedy request. Sampled requests batch only with the
same temperature and top_p. A request with a `seed` always runs alone, so the seed reproduces its
sample. Full-weight soups add the coefficient vector to the key.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bonesoup.coefficients import check_extrapolation
from bonesoup.config import load_config
from bonesoup.errors import BonesoupError
from bonesoup.models import load_causal_lm, load_tokenizer, resolve_model_path
from bonesoup.rundir import RunDir
from bonesoup.serve.protocol import ApiError, Limits, ParsedRequest, SamplingParams
from bonesoup.serve.rows import RowMixing
from bonesoup.serve.soups import CoefficientTable, SoupCache, find_families
from bonesoup.serve.tracker import BatchTracker, Event
from bonesoup.switching import FullWeightSoup, LoraSoup, load_soup

logger = logging.getLogger(__name__)

DEFAULT_BATCH_WINDOW = 0.015  # seconds an idle server waits for requests to batch with
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_SOUP_CACHE = 2  # full-weight soups kept materialised, one model copy each


@dataclass
class Job:
    """One queued request: prompt token ids, decoding settings, soup and its event stream."""

    request_id: str
    prompt_ids: list[int]
    sampling: SamplingParams
    weights: tuple[float, ...]  # coefficient vector over all loaded backbones
    soup: dict[str, Any]  # method, preference and coefficients, for the response body
    events: queue.Queue[Event] = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.monotonic)

    def batch_key(self, per_row_soups: bool) -> tuple:
        """Return the key of the batches this job may join (see the module docstring)."""
        sampling = self.sampling
        if sampling.greedy:
            mode: tuple = ("greedy",)
        elif sampling.seed is not None:
            mode = ("seeded", self.request_id)
        else:
            mode = ("sample", sampling.temperature, sampling.top_p)
        return mode if per_row_soups else (self.weights, *mode)


class SoupEngine:
    """Loads a run folder's base model and backbones and generates for queued requests."""

    def __init__(
        self,
        run_dir: str | Path,
        seed: int | None = None,
        limits: Limits | None = None,
        batch_window: float = DEFAULT_BATCH_WINDOW,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        served_id: str | None = None,
        per_row_soups: bool = True,
        soup_cache: int = DEFAULT_SOUP_CACHE,
    ) -> None:
        self.run = RunDir(Path(run_dir).resolve())
        self.config = load_config(self.run.config)
        self.seed = self.config.training.seeds[0] if seed is None else int(seed)
        self.objectives = self.config.objective_names
        families = find_families(self.run.root, self.seed, len(self.objectives))
        self.table = CoefficientTable(families, self.config)
        self.served_id = served_id or f"bonesoup-{self.run.root.name}"
        self.batch_window = float(batch_window)
        self.max_batch_size = int(max_batch_size)
        self._limits = limits or Limits()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._soup_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._current: tuple[float, ...] | None = None
        self.per_row_soups = per_row_soups
        self._mixing: RowMixing | None = None
        if soup_cache < 0:
            raise BonesoupError(f"soup cache size {soup_cache} is invalid: use 0 (off) or more")
        self.soup_cache_size = int(soup_cache)
        self._cache: SoupCache | None = None
        self.soup = None
        self.tokenizer = None
        self.running: list[str] = []  # request ids of the batch being generated
        self.stats = {"batches": 0, "rows": 0, "largest_batch": 0, "switches": 0}

    # Loading -------------------------------------------------------------------------------
    def load(self) -> SoupEngine:
        """Load the tokenizer, the base model and every backbone into one switchable soup."""
        model_config = self.config.model
        base_path = resolve_model_path(model_config.name_or_path)
        self.tokenizer = load_tokenizer(base_path, model_config.trust_remote_code)
        base = load_causal_lm(base_path, model_config.dtype, model_config.trust_remote_code)
        dirs = self.table.dirs()
        started = time.monotonic()
        self.soup = load_soup(base, dirs)
        self.soup.model.eval()
        if isinstance(self.soup, LoraSoup) and self.per_row_soups:
            self._mixing = RowMixing(self.soup, dirs)
        if isinstance(self.soup, FullWeightSoup):
            self._cache = SoupCache(self.soup, self.soup_cache_size)
            self.stats.update(self._cache.stats())
        context = getattr(base.config, "max_position_embeddings", None)
        configured = self._limits.context_length
        if context is not None and (configured is None or context < configured):
            self._limits = dataclasses.replace(self._limits, context_length=int(context))
        logger.info(
            "loaded %s with %d backbones (%s) for seed %d in %.1f s; methods: %s",
            base_path,
            len(dirs),
            type(self.soup).__name__,
            self.seed,
            time.monotonic() - started,
            ", ".join(self.methods),
        )
        return self

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def methods(self) -> tuple[str, ...]:
        return self.table.methods

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    # Requests ------------------------------------------------------------------------------
    def prompt_ids(self, request: ParsedRequest) -> list[int]:
        """Tokenize a request's prompt (chat requests through the chat template) and bound it."""
        tokenizer = self.tokenizer
        if request.kind == "chat":
            if not getattr(tokenizer, "chat_template", None):
                raise ApiError(
                    "this model has no chat template; send the prompt to /v1/completions",
                    param="messages",
                )
            messages = request.messages
            system_prompt = self.config.model.system_prompt
            if system_prompt and not any(m["role"] == "system" for m in messages):
                messages = [{"role": "system", "content": system_prompt}, *messages]
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            param = "messages"
        else:
            ids = tokenizer(request.prompt)["input_ids"]
            param = "prompt"
        self._check_length(len(ids), request.sampling.max_tokens, param)
        return list(ids)

    def _check_length(self, prompt_tokens: int, max_tokens: int, param: str) -> None:
        limits = self._limits
        if prompt_tokens == 0:
            raise ApiError(f"{param} is empty after tokenization; send some text", param=param)
        if prompt_tokens > limits.max_prompt_tokens:
            raise ApiError(
                f"{param} is {prompt_tokens} tokens long; this server accepts at most "
                f"{limits.max_prompt_tokens} prompt tokens, shorten the prompt",
                param=param,
                code="context_length_exceeded",
            )
        context = limits.context_length
        if context is not None and prompt_tokens + max_tokens > context:
            raise ApiError(
                f"{param} ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the "
                f"model's context length of {context} tokens; shorten the prompt or lower "
                "max_tokens",
                param=param,
                code="context_length_exceeded",
            )

    def submit(self, request_id: str, request: ParsedRequest, prompt_ids: list[int]) -> Job:
        """Queue a request; its text deltas and its end arrive on `job.events`."""
        if self._thread is None or not self._thread.is_alive():
            raise ApiError("the generation engine is not running", None, 503, "server_error")
        extrapolation = getattr(request, "extrapolation", None)
        if extrapolation is not None:
            try:
                factors = check_extrapolation(extrapolation, len(self.objectives))
            except BonesoupError as error:
                raise ApiError(str(error), param="extrapolation") from None
            extrapolation = tuple(float(k) for k in factors)
        vector, soup = self.table.coefficients(request.method, request.preference, extrapolation)
        weights = tuple(round(float(value), 12) for value in vector)
        job = Job(request_id, prompt_ids, request.sampling, weights, soup)
        self._queue.put(job)
        return job

    # Scheduler -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the scheduler thread (after `load`)."""
        if self.soup is None:
            raise BonesoupError("SoupEngine.start() needs load() first")
        self._thread = threading.Thread(target=self._loop, name="bonesoup-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in progress, fail queued requests, and stop the scheduler thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def _loop(self) -> None:
        pending: list[Job] = []
        while True:
            if not pending:
                job = self._queue.get()
                if job is None:
                    break
                pending.append(job)
                # An idle server waits briefly so that requests sent together share a batch.
                time.sleep(max(0.0, job.enqueued + self.batch_window - time.monotonic()))
            if not self._drain(pending):
                break  # the jobs drained so far get 503 below
            pending = [job for job in pending if not self._drop_cancelled(job)]
            if not pending:
                continue
            per_row = self._mixing is not None
            key = pending[0].batch_key(per_row)
            batch = [job for job in pending if job.batch_key(per_row) == key]
            batch = batch[: self.max_batch_size]
            pending = [job for job in pending if job not in batch]
            self._run_batch(batch)
        self._drain(pending)
        shutting_down = ApiError("the server is shutting down", None, 503, "server_error")
        for job in pending:
            logger.warning("%s: %s", job.request_id, shutting_down.message)
            job.events.put(Event("error", error=shutting_down))

    def _drain(self, pending: list[Job]) -> bool:
        """Move queued jobs into `pending`; return False when a stop was requested."""
        stop_requested = False
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return not stop_requested
            if job is None:
                stop_requested = True
            else:
                pending.append(job)

    @staticmethod
    def _drop_cancelled(job: Job) -> bool:
        if job.cancelled.is_set():
            logger.info("%s: client went away before generation started", job.request_id)
            return True
        return False

    def _run_batch(self, jobs: list[Job]) -> None:
        ids = ", ".join(job.request_id for job in jobs)
        started = time.monotonic()
        self.running = [job.request_id for job in jobs]
        try:
            with self._soup_lock:
                if self._mixing is not None:
                    with self._mixing.rows([job.weights for job in jobs]):
                        tokens = self._generate(jobs)
                else:
                    if jobs[0].weights != self._current:
                        self._switch(jobs[0].weights)
                    tokens = self._generate(jobs)
            self.stats["batches"] += 1
            self.stats["rows"] += len(jobs)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(jobs))
        except Exception as error:
            logger.exception("generation failed for %s", ids)
            failure = ApiError(f"generation failed: {error}", None, 500, "server_error")
            for job in jobs:
                job.events.put(Event("error", error=failure))
            return
        finally:
            self.running = []
        logger.debug(
            "batch of %d (%s): %d tokens in %.2f s",
            len(jobs),
            ids,
            tokens,
            time.monotonic() - started,
        )

    def _switch(self, weights: tuple[float, ...]) -> None:
        """Set one soup on the model; full-weight soups go through the soup cache."""
        self._current = None  # a failed switch leaves the model in no known soup
        if self._cache is not None:
            self._cache.set_coefficients(weights)
            self.stats.update(self._cache.stats())
        else:
            self.soup.set_coefficients(list(weights))
        self._current = weights
        self.stats["switches"] += 1

    def _generate(self, jobs: list[Job]) -> int:
        """Run one left-padded `generate` call for `jobs`; return rows x decoding steps."""
        from transformers import GenerationConfig, StoppingCriteriaList

        tokenizer = self.tokenizer
        pad_id = tokenizer.pad_token_id
        width = max(len(job.prompt_ids) for job in jobs)
        input_ids = torch.full((len(jobs), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):
            length = len(job.prompt_ids)
            input_ids[row, width - length :] = torch.tensor(job.prompt_ids)
            attention_mask[row, width - length :] = 1
        sampling = jobs[0].sampling
        eos_ids = self._eos_ids()
        generation_config = GenerationConfig(
            max_new_tokens=max(job.sampling.max_tokens for job in jobs),
            do_sample=not sampling.greedy,
            temperature=None if sampling.greedy else sampling.temperature,
            top_p=None if sampling.greedy else sampling.top_p,
            top_k=None,
            pad_token_id=pad_id,
            eos_token_id=sorted(eos_ids),
        )
        tracker = BatchTracker(jobs, tokenizer, eos_ids)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        with torch.inference_mode():
            output = self.soup.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=generation_config,
                stopping_criteria=StoppingCriteriaList([tracker]),
            )
        tracker.close()
        return int(output.shape[1] - width) * len(jobs)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        configured = getattr(self.soup.model.generation_config, "eos_token_id", None)
        for value in configured if isinstance(configured, list) else [configured]:
            if value is not None:
                ids.add(int(value))
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return ids
