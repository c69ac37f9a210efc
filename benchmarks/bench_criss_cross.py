"""Criss-cross attention vs non-local attention, forward + backward time and peak memory, side by side.

Three blocks see the same (1, 64, H, W) feature map, for H = W from 32 to 128:
- criss_cross: `CrissCrossAttention` with CCNet's recurrence R = 2 (each position attends to its row and column,
  twice; the (B, H, W, H + W) score tensor is the largest it builds);
- non_local_sdpa: `NonLocalBlock` (embedded Gaussian, inner width 32) on our fastest CPU backend, sdpa, which
  never hands back the (HW x HW) attention map;
- dense_eager: the same non-local block on the eager backend, which materialises the (HW x HW) attention map
  (the comparison the CCNet paper makes).

Time: the median of `--rounds` rounds of forward + backward (the methods alternate inside every round, so machine
noise hits them alike). Peak memory on CPU: every (method, size) runs once in a fresh subprocess that builds the
block and its input, resets the kernel's peak-RSS counter (`/proc/self/clear_refs`, "5"), reads its resident size,
runs forward + backward, and reports the peak resident size (VmHWM) minus that baseline: the extra memory one
training step of the block needs, as the operating system sees it (allocator caching included).

    python benchmarks/bench_criss_cross.py                        # 32..128, JSON in benchmarks/results/
    python benchmarks/bench_criss_cross.py --sizes 32 64 --rounds 3
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _environment import environment

from hf_attention import CrissCrossAttention, NonLocalBlock

METHODS = ("criss_cross", "non_local_sdpa", "dense_eager")


def build(method: str, channels: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if method == "criss_cross":
        block = CrissCrossAttention(channels, reduction=8, recurrence=2)
    else:
        implementation = "sdpa" if method == "non_local_sdpa" else "eager"
        block = NonLocalBlock(channels, batch_norm=False, attn_implementation=implementation)
    with torch.no_grad():  # leave the identity start, so every branch does real work
        for parameter in block.parameters():
            if parameter.abs().max() == 0:
                parameter.normal_(0.0, 0.1)
    return block.train()


def step(block: torch.nn.Module, features: torch.Tensor) -> None:
    block(features).square().mean().backward()


def seconds_per_step(block: torch.nn.Module, features: torch.Tensor) -> float:
    start = time.perf_counter()
    step(block, features)
    return time.perf_counter() - start


def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status: peak memory needs Linux.")


def measure_peak_memory_here(method: str, size: int, channels: int) -> None:
    """Run in a fresh process: print the peak extra resident memory (MiB) of one forward + backward."""
    block = build(method, channels)
    features = torch.randn(1, channels, size, size, requires_grad=True)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
    baseline = proc_status_kib("VmRSS")
    step(block, features)
    print(json.dumps({"peak_mib": (proc_status_kib("VmHWM") - baseline) / 1024}))


def peak_memory_mib(method: str, size: int, channels: int, threads: int) -> float:
    command = [sys.executable, __file__, "--memory-probe", method, str(size), "--channels", str(channels)]
    command += ["--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def measure(size: int, args) -> dict:
    features = torch.randn(1, args.channels, size, size, requires_grad=True)
    blocks = {method: build(method, args.channels) for method in METHODS}
    for block in blocks.values():  # warm-up
        step(block, features)
    rounds = {method: [] for method in METHODS}
    for _ in range(args.rounds):
        for method, block in blocks.items():
            rounds[method].append(seconds_per_step(block, features))
    row = {"size": f"{size}x{size}", "positions": size * size}
    for method in METHODS:
        row[f"{method}_ms"] = round(1000 * statistics.median(rounds[method]), 2)
        row[f"{method}_peak_mib"] = round(peak_memory_mib(method, size, args.channels, args.threads), 1)
    row["speedup_vs_non_local_sdpa"] = round(row["non_local_sdpa_ms"] / row["criss_cross_ms"], 2)
    row["speedup_vs_dense_eager"] = round(row["dense_eager_ms"] / row["criss_cross_ms"], 2)
    row["memory_ratio_dense_eager_over_criss_cross"] = round(
        row["dense_eager_peak_mib"] / max(row["criss_cross_peak_mib"], 0.1), 1
    )
    row["memory_ratio_non_local_sdpa_over_criss_cross"] = round(
        row["non_local_sdpa_peak_mib"] / max(row["criss_cross_peak_mib"], 0.1), 1
    )
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 48, 64, 96, 128])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady timings on a shared machine)")
    parser.add_argument("--out", default="benchmarks/results/criss_cross_cpu.json")
    parser.add_argument("--memory-probe", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        measure_peak_memory_here(args.memory_probe[0], int(args.memory_probe[1]), args.channels)
        return
    results = [measure(size, args) for size in args.sizes]
    report = {
        "benchmark": "criss-cross (R=2) vs non-local (sdpa) vs dense attention map (eager), forward + backward",
        "setup": {
            "batch_size": 1,
            "channels": args.channels,
            "rounds": args.rounds,
            "device": "cpu",
            **environment(args.threads),
            "peak_memory": "fresh subprocess per cell: VmHWM after one step minus VmRSS before it (clear_refs reset)",
        },
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(
        "| size | criss-cross ms | non-local sdpa ms | dense eager ms | criss-cross MiB | non-local MiB | dense MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in results:
        print(
            f"| {row['size']} | {row['criss_cross_ms']} | {row['non_local_sdpa_ms']} | {row['dense_eager_ms']} | "
            f"{row['criss_cross_peak_mib']} | {row['non_local_sdpa_peak_mib']} | {row['dense_eager_peak_mib']} |"
        )


if __name__ == "__main__":
    main()
