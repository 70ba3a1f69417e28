"""Per-row bookkeeping inside one batched `generate` call: text deltas, stop strings, limits.

`BatchTracker` is a transformers `StoppingCriteria`. `generate` calls it once per decoding step
with the ids generated so far (the new token last), before finished rows are padded on the next
step. For each unfinished row it decodes the row's tokens and sends the new text to the request's
event queue. A row finishes at an end-of-sequence token or a stop string (finish reason "stop",
and the text is cut before the stop string), at its own max_tokens ("length"), or when its client
went away ("cancelled"). Rows of one batch may finish at different steps while the others keep
decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import StoppingCriteria

if TYPE_CHECKING:
    from bonesoup.serve.engine import Job
    from bonesoup.serve.protocol import ApiError


@dataclass
class Event:
    """An item on a request's event queue: a text delta, the end of the text, or an error."""

    kind: str  # "delta", "done" or "error"
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0
    error: ApiError | None = None


class _Row:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.token_ids: list[int] = []
        self.sent = ""  # text already sent as deltas
        self.count = 0  # generated tokens, the end-of-sequence token included
        self.done = False
        longest = max((len(stop) for stop in job.sampling.stop), default=0)
        self.hold = max(0, longest - 1)  # characters held back while a stop string may start

    def send(self, text: str) -> None:
        if len(text) > len(self.sent):
            self.job.events.put(Event("delta", text=text[len(self.sent) :]))
            self.sent = text

    def finish(self, text: str, reason: str) -> None:
        self.send(text)
        self.done = True
        self.job.events.put(Event("done", finish_reason=reason, completion_tokens=self.count))


class BatchTracker(StoppingCriteria):
    """Streams each row's text and stops rows independently (see the module docstring)."""

    def __init__(self, jobs: list[Job], tokenizer: Any, eos_ids: set[int]) -> None:
        self.rows = [_Row(job) for job in jobs]
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        new_tokens = input_ids[:, -1].tolist()
        for row, token in zip(self.rows, new_tokens, strict=True):
            if not row.done:
                self._step(row, int(token))
        return torch.tensor([row.done for row in self.rows], dtype=torch.bool)

    def _step(self, row: _Row, token: int) -> None:
        row.count += 1
        if token in self.eos_ids:
            row.finish(self._decode(row), "stop")
            return
        row.token_ids.append(token)
        text = self._decode(row)
        cut = self._find_stop(text, row.job.sampling.stop)
        if cut is not None:
            row.finish(text[:cut], "stop")
        elif row.count >= row.job.sampling.max_tokens:
            row.finish(text, "length")
        elif row.job.cancelled.is_set():
            row.finish(text, "cancelled")
        else:
            safe = len(text) - row.hold
            # A trailing U+FFFD is usually the first bytes of a character that the next token ends.
            while safe > 0 and text[safe - 1] == "\ufffd":
                safe -= 1
            row.send(text[:safe])

    def _decode(self, row: _Row) -> str:
        return self.tokenizer.decode(row.token_ids, skip_special_tokens=True)

    @staticmethod
    def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
        positions = [text.find(stop) for stop in stops]
        found = [position for position in positions if position >= 0]
        return min(found) if found else None

    def close(self) -> None:
        """Finish rows still open when `generate` returned (it stopped at max_new_tokens)."""
        for row in self.rows:
            if not row.done:
                row.finish(self._decode(row), "length")
