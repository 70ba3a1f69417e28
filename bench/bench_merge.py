"""Full-weight merge of 3 checkpoints of the embedded 135M model: throughput and peak memory.

Run: python bench/bench_merge.py [--workdir /tmp/bonesoup-bench] [--repeats 7]
     [--baseline-pythonpath DIR]

Backbones are theta_0 (the float32 SmolLM2-135M-Instruct copy from `ensure_embedded_model`)
plus seeded Gaussian noise of standard deviation 1e-3, saved as model.safetensors (538 MB
each). In every repeat, in this order and in separate processes with one torch thread:
- `cp` of the same three input files into a fresh folder (the disk and page-cache ceiling);
- `merge_checkpoints` with c = (1/3, 1/3, 1/3), timed around the call (imports excluded);
- with --baseline-pythonpath DIR, the same merge with DIR first on PYTHONPATH, so that an older
  copy of the package in DIR/bonesoup is measured side by side with the current one;
- every `--naive-every`-th repeat, the naive merge: load each member with from_pretrained,
  average the state dicts, save_pretrained.
Every job starts after os.sync(), so no job pays for writing back the previous job's output.
No job syncs its own output, and the inputs are in the page cache for all jobs.
Wall seconds suffer when other processes share the CPUs, so CPU seconds (user + system) are
reported too: for cp from getrusage of the cp processes, for Python jobs from
time.process_time around the timed part. Peak RSS comes from
resource.getrusage(RUSAGE_CHILDREN).ru_maxrss in a small parent process that runs only that
one child. Prints markdown rows with medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

METER = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], check=True)\n"
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime)\n"
)
NOISE_STD = 1e-3
MEMBERS = 3


def machine() -> str:
    """Describe the machine: CPU model, nproc and memory (lscpu, nproc, free -h)."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if "Model name" in ln), "?"
    )
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    free = subprocess.run(
        ["free", "-h"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    memory = " ".join(free[1].split()[:2]) if len(free) > 1 else "?"
    return f"{cpu}, nproc {nproc}, {memory} total, torch {torch.__version__}, 1 thread"


def make_backbones(base: Path, workdir: Path, count: int) -> list[Path]:
    """Write `count` copies of `base` with seeded noise added to every float tensor."""
    from safetensors.torch import load_file, save_file

    paths = []
    for j in range(count):
        target = workdir / f"backbone{j}"
        paths.append(target)
        if (target / "model.safetensors").is_file():
            continue
        target.mkdir(parents=True, exist_ok=True)
        generator = torch.Generator().manual_seed(1000 + j)
        tensors = load_file(base / "model.safetensors")
        for tensor in tensors.values():
            tensor.add_(NOISE_STD * torch.randn(tensor.shape, generator=generator))
        save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
        for side in base.iterdir():
            if side.name != "model.safetensors":
                shutil.copy2(side, target / side.name)
    return paths


def run_metered(argv: list[str], pythonpath: Path | None = None) -> tuple[int, float, str]:
    """Run argv under a meter process; return (peak RSS in KiB, CPU seconds, child stdout)."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", METER, *argv], capture_output=True, text=True, check=True, env=env
    )
    lines = result.stdout.strip().splitlines()
    rss, cpu = lines[-1].split()
    return int(rss), float(cpu), "\n".join(lines[:-1])


def child(mode: str, output: Path, members: list[Path]) -> None:
    """Run one measured job in this process and print its wall and CPU seconds as JSON."""
    torch.set_num_threads(1)
    coefficients = [1.0 / len(members)] * len(members)
    if mode == "merge":
        from bonesoup.merge import merge_checkpoints

        start, cpu_start = time.perf_counter(), time.process_time()
        merge_checkpoints(members, coefficients, output)
    elif mode == "naive":
        from transformers import AutoModelForCausalLM

        start, cpu_start = time.perf_counter(), time.process_time()
        models = [AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32) for p in members]
        states = [m.state_dict() for m in models]
        merged = {
            n: sum(c * s[n] for c, s in zip(coefficients, states, strict=True)) for n in states[0]
        }
        models[0].load_state_dict(merged)
        models[0].save_pretrained(output)
    else:  # "import": the interpreter and library baseline
        import transformers  # noqa: F401

        import bonesoup.merge  # noqa: F401

        start, cpu_start = time.perf_counter(), time.process_time()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(json.dumps({"seconds": seconds, "cpu": cpu}))


def measure_copy(members: list[Path], target: Path) -> dict[str, float]:
    """Copy the members' weight files with cp; return wall and CPU seconds."""
    target.mkdir(parents=True)
    commands = [
        f"cp {member / 'model.safetensors'} {target / f'{j}.safetensors'}"
        for j, member in enumerate(members)
    ]
    start = time.perf_counter()
    _, cpu, _ = run_metered(["sh", "-c", " && ".join(commands)])
    return {"seconds": time.perf_counter() - start, "cpu": cpu, "rss": 0}


def measure_job(
    script: list[str],
    mode: str,
    output: Path,
    members: list[Path],
    pythonpath: Path | None = None,
) -> dict:
    rss, _, out = run_metered([*script, mode, str(output), *map(str, members)], pythonpath)
    return {**json.loads(out), "rss": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bonesoup-bench"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--naive-every", type=int, default=2, help="run the naive merge every k-th repeat"
    )
    parser.add_argument(
        "--baseline-pythonpath",
        type=Path,
        help="folder holding an older bonesoup package to time as a second merge job",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), [Path(p) for p in args.child[2:]])
        return

    from bonesoup.models import ensure_embedded_model

    base = ensure_embedded_model()
    members = make_backbones(base, args.workdir, MEMBERS)
    input_bytes = sum((m / "model.safetensors").stat().st_size for m in members)
    script = [sys.executable, str(Path(__file__).resolve()), "--child"]
    results: dict[str, list[dict]] = {"cp": [], "merge": [], "naive": [], "import": []}
    if args.baseline_pythonpath:
        results["baseline"] = []
    scratch = args.workdir / "out"
    for repeat in range(args.repeats):
        shutil.rmtree(scratch, ignore_errors=True)
        os.sync()  # every job starts without a backlog of dirty pages from the previous one
        results["cp"].append(measure_copy(members, scratch / "cp"))
        for mode in ("merge", "baseline", "naive", "import"):
            if (
                (mode == "naive" and repeat % args.naive_every)
                or (mode == "import" and repeat)
                or mode not in results
            ):
                continue
            os.sync()
            if mode == "baseline":
                job = measure_job(
                    script, "merge", scratch / mode, members, args.baseline_pythonpath
                )
            else:
                job = measure_job(script, mode, scratch / mode, members)
            results[mode].append(job)
        progress = ", ".join(
            f"{k} {v[-1]['seconds']:.2f}s (cpu {v[-1]['cpu']:.2f}s)"
            for k, v in results.items()
            if v
        )
        print(f"repeat {repeat + 1}: {progress}", file=sys.stderr)
    shutil.rmtree(scratch, ignore_errors=True)
    print_table(results, input_bytes, args.repeats, args.baseline_pythonpath)


def print_table(
    results: dict[str, list[dict]], input_bytes: int, repeats: int, baseline: Path | None
) -> None:
    """Print the markdown rows: median wall and CPU seconds, input GB/s and peak RSS per job."""

    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    gigabytes = input_bytes / 1e9
    print(f"machine: {machine()}")
    print(
        f"input: {MEMBERS} x {input_bytes // MEMBERS / 1e6:.0f} MB, {repeats} repeats (medians)\n"
    )
    print("| job | wall s | input GB/s (wall) | CPU s | input GB/s (CPU) | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    labels = {
        "cp": "cp of the 3 input files",
        "merge": "merge_checkpoints (streaming)",
        "baseline": f"merge_checkpoints from {baseline}",
        "naive": "from_pretrained x3 + average + save",
    }
    for mode, label in labels.items():
        if mode not in results:
            continue
        wall, cpu = median(mode, "seconds"), median(mode, "cpu")
        rss = f"{median(mode, 'rss') / 1024:.0f}" if mode != "cp" else "-"
        print(
            f"| {label} | {wall:.2f} | {gigabytes / wall:.2f} | {cpu:.2f} | "
            f"{gigabytes / cpu:.2f} | {rss} |"
        )
    import_rss = median("import", "rss") / 1024
    print(f"| python + torch + transformers imports only | - | - | - | - | {import_rss:.0f} |")
    print(
        f"\nmerge / cp throughput: {median('cp', 'seconds') / median('merge', 'seconds'):.2f} "
        f"by wall time, {median('cp', 'cpu') / median('merge', 'cpu'):.2f} by CPU time "
        f"(goal >= 0.5); merge / naive peak RSS: "
        f"{median('merge', 'rss') / median('naive', 'rss'):.2f} (goal <= 0.33)"
    )
    if "baseline" in results:
        print(
            f"baseline / merge wall time: "
            f"{median('baseline', 'seconds') / median('merge', 'seconds'):.2f}, CPU time: "
            f"{median('baseline', 'cpu') / median('merge', 'cpu'):.2f}"
        )


if __name__ == "__main__":
    main()
