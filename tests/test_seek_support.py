"""Objective functions for the seek tests, imported by worker processes as `module:function` specs.

The seek tests put this folder on PYTHONPATH so that `python -m bonesoup.training` can import them.
"""

from __future__ import annotations

import sys
import time


def char_length(prompts: list[str], responses: list[str], references: list) -> list[float]:
    """Characters of the response divided by 10: varies even on a random model's output."""
    return [len(response) / 10 for response in responses]


def slow_char_length(prompts: list[str], responses: list[str], references: list) -> list[float]:
    """`char_length` after a 0.5 s pause, so a test can kill a worker between two steps."""
    time.sleep(0.5)
    return char_length(prompts, responses, references)


def fails_in_rewarded_soup_0(prompts: list[str], responses: list[str], references: list):
    """Raise inside the worker of backbone rewarded-soup-0 and score 0 everywhere else."""
    if "rewarded-soup-0" in sys.argv:
        raise RuntimeError("deliberate failure for the seek failure test")
    return [0.0 for _ in responses]
