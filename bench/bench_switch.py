"""Preference switching in memory vs. re-merging from disk, on the embedded 135M model.

Run: python bench/bench_switch.py [--workdir /tmp/bonesoup-bench] [--switches 30] [--repeats 3]

LoRA: three adapters with r=8, alpha=16 on every linear projection (q, k, v, o, gate, up, down
in all 30 layers) and seeded random nonzero A and B. `LoraSoup` stacks them into one rank-24
adapter; a switch is `set_coefficients` with a new random coefficient vector. The alternative
is `merge_lora_into_base` to a new folder plus `from_pretrained` of that folder.
Full weights (with --full): three backbones theta_0 + seeded noise (as in bench_merge.py);
`FullWeightSoup.set_coefficients` vs. `merge_checkpoints` plus `from_pretrained`.
Each in-memory soup is also checked against its offline merge (max |logit difference|).
One torch thread; medians over the switches and repeats. Prints markdown rows.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_merge import machine, make_backbones

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_model(path: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def make_adapters(base: Path, workdir: Path, count: int) -> list[Path]:
    """Save `count` LoRA adapters on `base` with seeded random factors (B nonzero)."""
    from peft import LoraConfig, get_peft_model

    paths = [workdir / f"lora{j}" for j in range(count)]
    for j, path in enumerate(paths):
        if (path / "adapter_model.safetensors").is_file():
            continue
        config = LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
        model = get_peft_model(load_model(base), config)
        generator = torch.Generator().manual_seed(2000 + j)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_" in name:
                    parameter.copy_(0.02 * torch.randn(parameter.shape, generator=generator))
        model.save_pretrained(path)
    return paths


def random_coefficients(count: int, switches: int) -> list[list[float]]:
    generator = torch.Generator().manual_seed(7)
    return (torch.randn(switches, count, generator=generator) * 1.5).tolist()


def time_switches(soup, vectors: list[list[float]]) -> list[float]:
    """Return milliseconds per set_coefficients call."""
    times = []
    for vector in vectors:
        start = time.perf_counter()
        soup.set_coefficients(vector)
        times.append(1000 * (time.perf_counter() - start))
    return times


def max_logit_gap(first: torch.nn.Module, second: torch.nn.Module) -> float:
    input_ids = torch.tensor([[1, 504, 3458, 314, 260, 3575, 282, 4649, 47]])
    with torch.no_grad():
        return float((first(input_ids).logits - second(input_ids).logits).abs().max())


def time_remerge(merge, vectors: list[list[float]], scratch: Path) -> tuple[list[float], Path]:
    """Return seconds for merge-to-disk plus from_pretrained, and the last output folder."""
    times, output = [], scratch
    for i, vector in enumerate(vectors):
        output = scratch / f"remerge{i}"
        start = time.perf_counter()
        merge(vector, output)
        load_model(output)
        times.append(time.perf_counter() - start)
        if i + 1 < len(vectors):
            shutil.rmtree(output)
    return times, output


def format_row(
    label: str, switch_ms: list[float], remerge_s: list[float], build: float, gap: float
) -> str:
    median = statistics.median(switch_ms)
    switch = f"{median:.1f} ms (min {min(switch_ms):.1f}, max {max(switch_ms):.1f})"
    remerge = f"{statistics.median(remerge_s):.2f} s"
    return f"| {label} | {switch} | {remerge} | {build:.1f} s | {gap:.1e} |"


def bench_lora(base: Path, args: argparse.Namespace) -> list[str]:
    from bonesoup.lora import merge_lora_into_base
    from bonesoup.switching import LoraSoup

    adapters = make_adapters(base, args.workdir, 3)
    start = time.perf_counter()
    soup = LoraSoup(load_model(base), adapters)
    build = time.perf_counter() - start
    vectors = random_coefficients(3, args.switches)
    switch_ms = time_switches(soup, vectors)

    def merge(vector: list[float], output: Path) -> None:
        merge_lora_into_base(base, adapters, vector, output)

    scratch = args.workdir / "switch-out"
    shutil.rmtree(scratch, ignore_errors=True)
    remerge_s, last = time_remerge(merge, vectors[: args.repeats], scratch)
    soup.set_coefficients(vectors[args.repeats - 1])
    gap = max_logit_gap(soup.model, load_model(last))
    shutil.rmtree(scratch)
    return [
        format_row(
            "LoRA r=8 x3, all projections (stacked rank 24)", switch_ms, remerge_s, build, gap
        )
    ]


def bench_full(base: Path, args: argparse.Namespace) -> list[str]:
    from bonesoup.merge import merge_checkpoints
    from bonesoup.switching import FullWeightSoup

    backbones = make_backbones(base, args.workdir, 3)
    start = time.perf_counter()
    soup = FullWeightSoup(load_model(base), backbones)
    build = time.perf_counter() - start
    vectors = random_coefficients(3, max(5, args.switches // 3))
    switch_ms = time_switches(soup, vectors)

    def merge(vector: list[float], output: Path) -> None:
        merge_checkpoints(backbones, vector, output, base=base, base_coefficient=1 - sum(vector))

    scratch = args.workdir / "switch-out"
    shutil.rmtree(scratch, ignore_errors=True)
    remerge_s, last = time_remerge(merge, vectors[: args.repeats], scratch)
    soup.set_coefficients(vectors[args.repeats - 1])
    gap = max_logit_gap(soup.model, load_model(last))
    shutil.rmtree(scratch)
    return [format_row("full weights x3", switch_ms, remerge_s, build, gap)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bonesoup-bench"))
    parser.add_argument("--switches", type=int, default=30, help="in-memory switches timed")
    parser.add_argument("--repeats", type=int, default=3, help="re-merge + reload runs timed")
    parser.add_argument("--full", action="store_true", help="also bench full-weight backbones")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from bonesoup.models import ensure_embedded_model

    base = ensure_embedded_model()
    rows = bench_lora(base, args)
    if args.full:
        rows += bench_full(base, args)
    print(f"machine: {machine()}")
    print(f"{args.switches} switches, {args.repeats} re-merges (medians)\n")
    print(
        "| backbones | switch in memory | re-merge to disk + reload | soup build | max logit gap |"
    )
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
