"""Benchmark `bonesoup serve`: time to first token and tokens/s under concurrent clients.

Command (about 6-8 minutes on 2 busy CPU cores):
    .venv/bin/python bench/bench_serve.py --clients 1 4 8 --max-tokens 24

Setup: the embedded SmolLM2-135M-Instruct (float32) as theta_0 and two LoRA backbones (r=8 on all
attention and MLP projections) with random non-zero A and B, saved with PEFT. Random adapters
cost the same to run as trained ones, so the timings hold, but the text they produce is noise.

Served: `bonesoup serve` runs in its own process (1 torch thread, loopback, a free port), once per
mode: "per-row" is the default server (rows of a batch carry their own coefficients), "one-soup"
adds --one-soup-per-batch (a batch has one coefficient vector). This process is the load generator: for each client count N it runs N threads, each sending streaming
chat requests in turn with preferences cycling through PREFERENCES, until every thread has sent
`--requests-per-client` requests or `--time-limit` seconds have passed. Time to first token (TTFT)
is the time from sending a request to its first non-empty content delta. Decode tokens/s per
request is (completion tokens - 1) / (last delta - first delta). Throughput is all completion
tokens / wall time of the level.

Baseline: a merged model per preference, loaded fresh: merge_lora_into_base into a new folder,
load_causal_lm, then greedy generate on one request (1 torch thread, this process, after the
server has stopped). Its TTFT is merge + load + prefill + first token.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import yaml

PREFERENCES = [[1.0, 0.0], [0.7, 0.3], [0.5, 0.5], [0.2, 0.8], [0.0, 1.0]]
QUESTIONS = [
    "What is a good way to spend a rainy afternoon?",
    "Can you recommend a book about the history of science?",
    "How do I keep basil alive on a windowsill?",
    "What should I pack for a weekend hike?",
]
BACKBONE_MATRIX = [[0.7, 0.3], [0.3, 0.7]]


def build_run_dir(root: Path, base_dir: str, rank: int) -> Path:
    """Write config.yaml and two LoRA backbones with random non-zero factors."""
    from peft import LoraConfig, get_peft_model

    from bonesoup.models import load_causal_lm

    root.mkdir(parents=True)
    config = {"model": {"name_or_path": base_dir}, "training": {"seeds": [0]}}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    for j, weights in enumerate(BACKBONE_MATRIX):
        model = load_causal_lm(base_dir)
        lora = LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            lora_dropout=0.0,
            task_type="CAUSAL_LM",
            target_modules=[
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ],
        )
        peft_model = get_peft_model(model, lora)
        generator = torch.Generator().manual_seed(100 + j)
        with torch.no_grad():
            for name, parameter in peft_model.named_parameters():
                if "lora_" in name:
                    noise = torch.randn(parameter.shape, generator=generator)
                    parameter.copy_(0.02 * noise)
        folder = root / "seed-0" / "backbones" / f"bone-soup-{j}"
        peft_model.save_pretrained(folder)
        record = {
            "name": folder.name,
            "method": "bone-soup",
            "weights": weights,
            "seed": 0,
            "status": "done",
            "format": "lora",
        }
        (folder / "backbone.json").write_text(json.dumps(record))
    return root


def start_server(
    run_dir: Path, max_concurrency: int, extra: list[str]
) -> tuple[subprocess.Popen, str, int]:
    command = [
        sys.executable,
        "-m",
        "bonesoup.cli",
        "serve",
        str(run_dir),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--max-concurrency",
        str(max_concurrency),
        *extra,
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        match = re.search(r"serving \S+ at http://(127\.0\.0\.1):(\d+)", line)
        if match:
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
            return process, match.group(1), int(match.group(2))
    raise RuntimeError(f"the server exited with status {process.wait()} before serving")


def stream_request(
    host: str, port: int, preference: list[float], question: str, max_tokens: int
) -> dict[str, float]:
    """Send one streaming chat request; return its timings and token count."""
    body = {
        "messages": [{"role": "user", "content": question}],
        "preference": preference,
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    connection = http.client.HTTPConnection(host, port, timeout=600)
    sent = time.perf_counter()
    connection.request(
        "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
    )
    response = connection.getresponse()
    if response.status != 200:
        raise RuntimeError(f"status {response.status}: {response.read()[:200]!r}")
    first = last = None
    tokens = 0
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[len("data: ") :])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        for choice in chunk.get("choices", []):
            if choice["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
    connection.close()
    end = time.perf_counter()
    first = first or end
    last = last or end
    decode = (tokens - 1) / (last - first) if tokens > 1 and last > first else float("nan")
    return {"ttft": first - sent, "latency": end - sent, "tokens": tokens, "decode_tps": decode}


def run_level(
    host: str,
    port: int,
    clients: int,
    per_client: int,
    max_tokens: int,
    time_limit: float,
    preferences: list[list[float]],
) -> dict[str, float]:
    results: list[dict[str, float]] = []
    lock = threading.Lock()
    start = time.perf_counter()

    def client(index: int) -> None:
        for k in range(per_client):
            if time.perf_counter() - start > time_limit:
                return
            step = index * per_client + k
            result = stream_request(
                host,
                port,
                preferences[step % len(preferences)],
                QUESTIONS[step % len(QUESTIONS)],
                max_tokens,
            )
            with lock:
                results.append(result)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    decode = [r["decode_tps"] for r in results if r["decode_tps"] == r["decode_tps"]]
    return {
        "clients": clients,
        "preferences": "mixed" if len(preferences) > 1 else "same",
        "requests": len(results),
        "ttft_median": statistics.median(r["ttft"] for r in results),
        "latency_median": statistics.median(r["latency"] for r in results),
        "decode_tps_median": statistics.median(decode) if decode else float("nan"),
        "throughput": sum(r["tokens"] for r in results) / wall,
        "tokens_median": statistics.median(r["tokens"] for r in results),
        "wall": wall,
    }


def run_baseline(run_dir: Path, base_dir: str, max_tokens: int, count: int) -> dict[str, float]:
    """Merge, load and generate once per preference, as a server restarted per preference would."""
    from bonesoup.coefficients import soup_coefficients
    from bonesoup.lora import merge_lora_into_base
    from bonesoup.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(base_dir)
    adapters = [run_dir / "seed-0" / "backbones" / f"bone-soup-{j}" for j in range(2)]
    rows = []
    for k in range(count):
        preference = PREFERENCES[k % len(PREFERENCES)]
        messages = [{"role": "user", "content": QUESTIONS[k % len(QUESTIONS)]}]
        with tempfile.TemporaryDirectory(dir=run_dir) as scratch:
            started = time.perf_counter()
            coefficients = soup_coefficients(preference, matrix=BACKBONE_MATRIX).backbones
            merge_lora_into_base(
                Path(base_dir), adapters, coefficients.tolist(), Path(scratch) / "merged"
            )
            merged = time.perf_counter()
            model = load_causal_lm(str(Path(scratch) / "merged"))
            loaded = time.perf_counter()
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
            with torch.inference_mode():
                model.generate(
                    **ids, do_sample=False, max_new_tokens=1, pad_token_id=tokenizer.pad_token_id
                )
                first = time.perf_counter()
                output = model.generate(
                    **ids,
                    do_sample=False,
                    max_new_tokens=max_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                )
            done = time.perf_counter()
        tokens = output.shape[1] - ids["input_ids"].shape[1]
        rows.append(
            {
                "merge": merged - started,
                "load": loaded - merged,
                "ttft": first - started,
                "decode_tps": tokens / (done - first),
            }
        )
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]} | {"n": count}


def time_switches(run_dir: Path, base_dir: str, repeats: int = 5) -> dict[str, float]:
    """Median seconds of one set_coefficients call: LoRA soup, and full-weight soup."""
    from bonesoup.lora import merge_lora_into_base
    from bonesoup.models import load_causal_lm
    from bonesoup.switching import load_soup

    adapters = [run_dir / "seed-0" / "backbones" / f"bone-soup-{j}" for j in range(2)]
    full = []
    for j, adapter in enumerate(adapters):
        coefficients = [float(j == 0), float(j == 1)]
        full.append(
            merge_lora_into_base(Path(base_dir), adapters, coefficients, run_dir / f"full-{j}")
        )
    timings = {}
    for name, dirs in (("lora_switch_s", adapters), ("full_weight_switch_s", full)):
        soup = load_soup(load_causal_lm(base_dir), dirs)
        seconds = []
        for k in range(repeats):
            started = time.perf_counter()
            soup.set_coefficients(PREFERENCES[k % len(PREFERENCES)])
            seconds.append(time.perf_counter() - started)
        timings[name] = statistics.median(seconds)
        del soup
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument(
        "--same-preference-clients",
        type=int,
        nargs="*",
        default=[8],
        help="client counts also run with one preference for every request",
    )
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["per-row", "one-soup"],
        choices=["per-row", "one-soup"],
        help="per-row: the default server; one-soup: --one-soup-per-batch",
    )
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per level")
    parser.add_argument("--baseline-count", type=int, default=3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from bonesoup.models import resolve_model_path

    base_dir = resolve_model_path("embedded")
    results: dict = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread, "
        f"python {platform.python_version()}, torch {torch.__version__}"
    }
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch:
        run_dir = build_run_dir(Path(scratch) / "run", base_dir, args.rank)
        most = max(args.clients + args.same_preference_clients)
        runs = [(c, PREFERENCES) for c in args.clients]
        runs += [(c, [PREFERENCES[2]]) for c in args.same_preference_clients]
        results["served"] = []
        for mode in args.modes:
            extra = ["--one-soup-per-batch"] if mode == "one-soup" else []
            process, host, port = start_server(run_dir, most + 1, extra)
            try:
                stream_request(host, port, PREFERENCES[0], QUESTIONS[0], 4)  # warm-up
                for clients, preferences in runs:
                    level = run_level(
                        host,
                        port,
                        clients,
                        args.requests_per_client,
                        args.max_tokens,
                        args.time_limit,
                        preferences,
                    )
                    level["mode"] = mode
                    print(json.dumps(level), flush=True)
                    results["served"].append(level)
            finally:
                process.terminate()
                process.wait(30)
        results["baseline"] = run_baseline(run_dir, base_dir, args.max_tokens, args.baseline_count)
        print(json.dumps(results["baseline"]), flush=True)
        results["switch"] = time_switches(run_dir, base_dir)
        print(json.dumps(results["switch"]), flush=True)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
