"""Benchmark seek on the demo config: seconds per RL step per backbone and achieved FLOP/s.

    .venv/bin/python bench/bench_seek.py --steps 3            # 1 process, then 2 in parallel
    .venv/bin/python bench/bench_seek.py --steps 3 --workers 2

Each setting trains the two rewarded-soup backbones of configs/demo.yaml for `--steps` RL steps
through `bonesoup.seek.seek` (one torch thread per process) in a fresh run folder and reads TRL's
`step_time` from the train logs. Step 1 is reported separately because it includes warm-up.

FLOP estimate per RL step (N = parameters used in matmuls per token, the tied embedding counted
once as the LM head; B = prompts x completions sequences; L = mean prompt tokens + mean completion
tokens; attention score FLOPs are ignored):
    generation (KV cache)      2 N B L
    reference forward           2 N B L   (LoRA: the same weights with the adapter off)
    policy forward + backward   6 N B L   (an upper bound with LoRA: frozen matrices get no
                                           weight gradients, which saves about 2 N B L)
    total                      10 N B L
The machine's limit is a plain fp32 matmul (2048 x 2048, one thread) timed in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def matmul_flops(size: int = 2048, repeats: int = 5) -> float:
    """Return the best fp32 matmul FLOP/s of `repeats` timings on one thread."""
    torch.set_num_threads(1)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def prompt_tokens(config) -> float:
    from bonesoup.models import load_tokenizer, resolve_model_path
    from bonesoup.training_sampling import load_formatted_prompts

    tokenizer = load_tokenizer(resolve_model_path(config.model.name_or_path))
    _, texts = load_formatted_prompts(config, tokenizer, "train", config.prompts.train)
    return statistics.fmean(len(tokenizer(text)["input_ids"]) for text in texts)


def matmul_parameters(config) -> int:
    from transformers import AutoConfig

    from bonesoup.models import resolve_model_path

    model_config = AutoConfig.from_pretrained(resolve_model_path(config.model.name_or_path))
    hidden, inter = model_config.hidden_size, model_config.intermediate_size
    heads, kv_heads = model_config.num_attention_heads, model_config.num_key_value_heads
    head_dim = hidden // heads
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    mlp = 3 * hidden * inter
    return model_config.num_hidden_layers * (attention + mlp) + hidden * model_config.vocab_size


def run_setting(workers: int, steps: int, run_dir: Path) -> list[dict]:
    """Train the rewarded-soup backbones of the demo config; return their train-log rows."""
    from bonesoup.config import apply_overrides, load_config
    from bonesoup.rundir import read_jsonl
    from bonesoup.seek import seek

    config = apply_overrides(
        load_config(ROOT / "configs" / "demo.yaml"),
        [
            f"training.steps={steps}",
            f"training.save_steps={steps}",
            f"training.workers={workers}",
            "backbones.methods=[rewarded-soup]",
            "training.heldout_prompts=0",
        ],
    )
    paths = seek(config, run_dir, progress=False)
    return [row for path in paths for row in read_jsonl(path / "train_log.jsonl")], config


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def cpu_model() -> str:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    for line in output.splitlines():
        if line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--output", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    peak_before = matmul_flops()
    results = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory(prefix="bench-seek-") as folder:
            load_start = load_average()
            start = time.perf_counter()
            rows, config = run_setting(workers, args.steps, Path(folder))
            wall = time.perf_counter() - start
            results.append(summarise(rows, config, workers, wall, load_start))
    peak_after = matmul_flops()
    report = {
        "machine": {
            "nproc": os.cpu_count(),
            "cpu": cpu_model(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
        },
        "matmul_flops_1_thread": {"before": peak_before, "after": peak_after},
        "settings": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


def summarise(rows: list[dict], config, workers: int, wall: float, load_start: str) -> dict:
    training = config.training
    sequences = training.prompts_per_step * training.completions_per_prompt
    prompt_length = prompt_tokens(config)
    completion_length = statistics.fmean(row["completion_length"] for row in rows)
    flops_per_step = (
        10 * matmul_parameters(config) * sequences * (prompt_length + completion_length)
    )
    first = [row["step_time"] for row in rows if row["step"] == 1]
    later = [row["step_time"] for row in rows if row["step"] > 1]
    steady = statistics.median(later) if later else statistics.median(first)
    return {
        "workers": workers,
        "backbones": 2,
        "steps": training.steps,
        "wall_seconds": round(wall, 1),
        "step1_seconds": [round(value, 1) for value in first],
        "step_seconds_median_after_step1": round(steady, 2),
        "prompt_tokens_mean": round(prompt_length, 1),
        "completion_tokens_mean": round(completion_length, 1),
        "flops_per_step_estimate": flops_per_step,
        "achieved_flops_per_process": flops_per_step / steady,
        "load_average_at_start": load_start,
        "load_average_at_end": load_average(),
    }


if __name__ == "__main__":
    sys.exit(main())
