"""Generation throughput of the evaluation sweep against batch-1 generation.

The sweep samples a batch of left-padded prompts per `generate` call
(`bonesoup.evaluate.generation.generate`); generating one prompt per call is the baseline.
Both sample the same chat-formatted chitchat test prompts with top_p 0.9 on the embedded
SmolLM2-135M model (float32, one torch thread). Tokens are counted up to and including each
response's end-of-sequence token, so padding after a finished response is not counted.
The two modes alternate within each repeat, so a change in machine load hits both, and each
rate is given per wall-clock second and per CPU second of this process (the CPU rate is less
sensitive to other processes on a shared machine). A third mode, "reference", is batch-1
generation with transformers' own top-p sampling (one `generate` call per prompt).

    .venv/bin/python bench/bench_generation.py --prompts 16 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time

import torch

from bonesoup.evaluate.generation import _count_new_tokens, _stop_token_ids, generate
from bonesoup.models import ensure_embedded_model, load_causal_lm, load_tokenizer
from bonesoup.prompts import format_prompt, load_prompts


def cpu_model() -> str:
    output = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout
    for line in output.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def measure(model, tokenizer, prompts, batch_size, max_new_tokens, seed) -> tuple[float, float]:
    """Return (tokens per wall second, tokens per CPU second) of one pass over the prompts."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = generate(
        model, tokenizer, prompts, max_new_tokens, top_p=0.9, batch_size=batch_size, seed=seed
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return result.new_tokens / wall, result.new_tokens / cpu


def measure_reference(model, tokenizer, prompts, max_new_tokens, seed) -> tuple[float, float]:
    """Batch-1 generation with transformers' own top-p sampling, one prompt per call."""
    stop_ids = _stop_token_ids(model, tokenizer)
    wall, cpu = time.perf_counter(), time.process_time()
    new_tokens = 0
    torch.manual_seed(seed)
    for prompt in prompts:
        encoded = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            output = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=True,
                top_p=0.9,
                top_k=0,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=stop_ids,
            )
        generated = output[:, encoded["input_ids"].shape[1] :]
        new_tokens += _count_new_tokens(generated, stop_ids, tokenizer.pad_token_id)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return new_tokens / wall, new_tokens / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = str(ensure_embedded_model())
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path)
    examples = load_prompts("chitchat", "test", args.prompts, max_words=25)
    prompts = [format_prompt(tokenizer, example.prompt) for example in examples]
    generate(model, tokenizer, prompts[:2], 4, batch_size=2)  # warm-up
    batched, single, reference = [], [], []
    for repeat in range(args.repeats):
        batched.append(
            measure(model, tokenizer, prompts, args.batch_size, args.max_new_tokens, repeat)
        )
        single.append(measure(model, tokenizer, prompts, 1, args.max_new_tokens, repeat))
        reference.append(measure_reference(model, tokenizer, prompts, args.max_new_tokens, repeat))
    result = {
        "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "batched_wall_tokens_per_second": [rate for rate, _ in batched],
        "batch1_wall_tokens_per_second": [rate for rate, _ in single],
        "batched_cpu_tokens_per_second": [rate for _, rate in batched],
        "batch1_cpu_tokens_per_second": [rate for _, rate in single],
        "reference_wall_tokens_per_second": [rate for rate, _ in reference],
        "reference_cpu_tokens_per_second": [rate for _, rate in reference],
    }
    for mode in ("wall", "cpu"):
        fast = statistics.median(result[f"batched_{mode}_tokens_per_second"])
        slow = statistics.median(result[f"batch1_{mode}_tokens_per_second"])
        reference_rate = statistics.median(result[f"reference_{mode}_tokens_per_second"])
        result[f"{mode}_median"] = {
            "batched": fast,
            "batch1": slow,
            "reference": reference_rate,
            "speedup_vs_batch1": fast / slow,
            "speedup_vs_reference": fast / reference_rate,
        }
    result.update(
        {
            "cpu": cpu_model(),
            "nproc": os.cpu_count(),
            "load_average": os.getloadavg(),
        }
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
