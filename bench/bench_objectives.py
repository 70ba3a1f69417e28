"""Throughput of every built-in objective in texts per second, one torch thread.

Run: python bench/bench_objectives.py [--texts 256] [--repeats 5]

Prompts are chitchat validation questions, responses are other chitchat questions (6-25 words)
and references (for faithfulness) are Lee news articles. Each repeat scores a fresh slice of
texts, so textstat's internal memoisation never gets a text twice. The objective cache is off
and the MiniLM embedding cache is cleared before each repeat.
A warm-up batch loads models and dictionaries before timing. Prints one markdown row per
objective: median texts/s over the repeats, with min and max.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time

import torch

from bonesoup.objectives import get_objective
from bonesoup.objectives.builtin import clear_embedding_cache, count_words
from bonesoup.prompts import load_prompts

OBJECTIVES = (
    "relevance",
    "harmlessness",
    "sentiment",
    "readability",
    "faithfulness",
    "conciseness",
    "fluency",
)


def machine() -> str:
    cpu = platform.processor()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in lscpu.splitlines()
            if line.startswith("Model name")
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    nproc = subprocess.run(["nproc"], check=False, capture_output=True, text=True).stdout.strip()
    return f"{cpu}, nproc {nproc}, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=256, help="texts per timed repeat")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per objective")
    args = parser.parse_args()
    torch.set_num_threads(1)

    questions = [e.prompt for e in load_prompts("chitchat", "validation", max_words=25)]
    articles = [e.reference for e in load_prompts("news", "train")]
    needed = args.texts * (args.repeats + 1)
    if len(questions) < needed + 1:
        raise SystemExit(f"only {len(questions)} questions; lower --texts or --repeats")
    prompts = questions[:needed]
    responses = questions[1 : needed + 1]
    references = [articles[i % len(articles)] for i in range(needed)]
    grouped_references = [articles[(i // 4) % len(articles)] for i in range(needed)]
    mean_words = statistics.fmean(count_words(text) for text in responses)

    print(f"machine: {machine()}")
    print(f"{args.texts} texts x {args.repeats} repeats, responses {mean_words:.1f} words on avg")
    print("| objective | median texts/s | min | max |")
    print("|---|---|---|---|")
    cases = [(name, name, references) for name in OBJECTIVES]
    # In RL a group of samples shares one prompt and source; each distinct text is embedded once.
    cases.append(("faithfulness, 4 responses per source", "faithfulness", grouped_references))
    for label, name, case_references in cases:
        objective = get_objective(name, cache=False)
        rates = []
        for repeat in range(args.repeats + 1):
            window = slice(repeat * args.texts, (repeat + 1) * args.texts)
            clear_embedding_cache()
            start = time.perf_counter()
            objective.score(prompts[window], responses[window], case_references[window])
            elapsed = time.perf_counter() - start
            if repeat > 0:  # repeat 0 is the warm-up
                rates.append(args.texts / elapsed)
        low, high = min(rates), max(rates)
        print(f"| {label} | {statistics.median(rates):,.0f} | {low:,.0f} | {high:,.0f} |")


if __name__ == "__main__":
    main()
