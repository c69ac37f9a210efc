"""Linformer vs softmax attention in the Vision Transformer: forward time and peak memory as the sequence grows.

One run builds, for each sequence length, three ViTs of the same shape (same patch embeddings, MLPs and norms):
softmax attention on the `sdpa` and `eager` backends, and Linformer attention (k = 256, `sdpa`). Sequences grow by
making the image larger (patch 16, grids 16x16 ... 64x128, i.e. 256 ... 8192 patches + 1 class token). Timings
alternate between the three models, round after round, so machine noise hits all alike; the median time and the
median of the per-round time ratios are reported, for wall time and for the process's CPU time. torch runs on one
thread by default: on a busy machine, threads that wait at a barrier for a descheduled sibling make multi-threaded
timings jump by 100x from one call to the next.

Peak memory: CPU tensors have no allocator statistics (torch.cuda.max_memory_allocated has no CPU twin), so each
model runs one forward pass under `torch.profiler` with `profile_memory=True`; the profiler's memory timeline gives
the bytes held by live tensors after every allocation and free, and the peak of their sum is reported. It counts
tensor bytes only (weights, input, activations, temporaries), not the allocator's cached or fragmented memory.

    python benchmarks/bench_linformer.py                   # writes benchmarks/results/linformer_vit_cpu.json
    python benchmarks/bench_linformer.py --grids 16x16 32x32 --rounds 2 --threads 2
"""

import argparse
import json
import math
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _environment import environment
from torch.profiler import ProfilerActivity, profile

from hf_attention import VisionTransformerConfig, VisionTransformerModel

MODELS = {  # name: (attention_type, attn_implementation)
    "softmax_sdpa": ("softmax", "sdpa"),
    "softmax_eager": ("softmax", "eager"),
    "linformer_sdpa": ("linformer", "sdpa"),
}
RESULTS = Path(__file__).parent / "results" / "linformer_vit_cpu.json"


def build(attention_type: str, implementation: str, grid: tuple[int, int], args) -> VisionTransformerModel:
    config = VisionTransformerConfig(
        image_size=(grid[0] * 16, grid[1] * 16),
        patch_size=16,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden_size,
        attention_type=attention_type,
        linformer_k=args.k,
    )
    model = VisionTransformerModel(config).eval()
    model.set_attn_implementation(implementation)
    return model


def seconds_per_forward(model, pixels) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one forward pass. CPU time counts the work done whatever
    else runs on the machine, so its growth with length is the steadier measure on a shared machine."""
    with torch.inference_mode():
        wall, cpu = time.perf_counter(), time.process_time()
        model(pixels)
        return time.perf_counter() - wall, time.process_time() - cpu


def peak_tensor_bytes(model, pixels) -> int:
    """Peak bytes of live CPU tensors during one forward pass, from torch.profiler's memory timeline."""
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=True,
                                         record_shapes=True, with_stack=True) as profiler:  # fmt: skip
        model(pixels)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the timeline export is deprecated but has no CPU successor
        path = Path(folder) / "timeline.json"
        profiler.export_memory_timeline(str(path), device="cpu")
        _, sizes_by_category = json.loads(path.read_text())
    return max(sum(sizes) for sizes in sizes_by_category)


def measure(grid: tuple[int, int], args) -> dict:
    torch.manual_seed(0)
    models = {name: build(*settings, grid, args) for name, settings in MODELS.items()}
    pixels = torch.randn(1, 3, grid[0] * 16, grid[1] * 16)
    for model in models.values():  # warm-up
        seconds_per_forward(model, pixels)
    rounds = {(name, clock): [] for name in models for clock in ("wall", "cpu")}
    for _ in range(args.rounds):
        for name, model in models.items():
            wall, cpu = seconds_per_forward(model, pixels)
            rounds[name, "wall"].append(wall)
            rounds[name, "cpu"].append(cpu)
    row = {"tokens": grid[0] * grid[1] + 1, "grid": f"{grid[0]}x{grid[1]}"}
    for name, model in models.items():
        row[f"{name}_seconds"] = statistics.median(rounds[name, "wall"])
        row[f"{name}_cpu_seconds"] = statistics.median(rounds[name, "cpu"])
        row[f"{name}_peak_mib"] = peak_tensor_bytes(model, pixels) / 2**20
    for baseline in ("softmax_sdpa", "softmax_eager"):
        for clock, label in (("wall", "time"), ("cpu", "cpu_time")):
            # the ratio of each round (measured back to back) is steadier on a busy machine than a ratio of medians
            ours, theirs = rounds["linformer_sdpa", clock], rounds[baseline, clock]
            ratios = [mine / other for mine, other in zip(ours, theirs, strict=True)]
            row[f"{label}_ratio_vs_{baseline}"] = statistics.median(ratios)
            row[f"{label}_ratio_vs_{baseline}_per_round"] = ratios
        row[f"memory_ratio_vs_{baseline}"] = row["linformer_sdpa_peak_mib"] / row[f"{baseline}_peak_mib"]
    print(json.dumps(row), flush=True)
    return row


def growth_exponent(rows: list[dict], key: str) -> float:
    """Least-squares slope of log(cost) against log(tokens): 1 is linear growth, 2 quadratic."""
    xs = [math.log(row["tokens"]) for row in rows]
    ys = [math.log(row[key]) for row in rows]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)


def summarise(rows: list[dict]) -> dict:
    summary = {}
    largest = rows[-3:]  # fixed costs (patch embedding, MLPs, Python) hide the attention's growth at short lengths
    for name in MODELS:
        measures = (("time", f"{name}_seconds"), ("cpu_time", f"{name}_cpu_seconds"), ("memory", f"{name}_peak_mib"))
        for measure_name, key in measures:
            summary[f"{name}_{measure_name}_exponent_all_lengths"] = growth_exponent(rows, key)
            summary[f"{name}_{measure_name}_exponent_largest_3_lengths"] = growth_exponent(largest, key)
    for baseline in ("softmax_sdpa", "softmax_eager"):
        for measure_name in ("time", "cpu_time", "memory"):
            summary[f"linformer_{measure_name}_wins_vs_{baseline}_from_tokens"] = wins_from(
                rows, f"{measure_name}_ratio_vs_{baseline}"
            )
    return summary


def wins_from(rows: list[dict], ratio_key: str) -> int | None:
    """The shortest length from which Linformer wins at every longer length too (None if it does not win)."""
    start = None
    for row in reversed(rows):
        if row[ratio_key] >= 1:
            break
        start = row["tokens"]
    return start


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| tokens | softmax sdpa: wall ms / CPU ms / MiB | softmax eager: wall ms / CPU ms / MiB "
        "| Linformer k=256: wall ms / CPU ms / MiB | Linformer / sdpa: wall, CPU time | Linformer / eager memory |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [
            f"{row[f'{name}_seconds'] * 1000:.0f} / {row[f'{name}_cpu_seconds'] * 1000:.0f} / "
            f"{row[f'{name}_peak_mib']:.0f}"
            for name in MODELS
        ]
        ratios = (
            f"{row['time_ratio_vs_softmax_sdpa']:.2f}, {row['cpu_time_ratio_vs_softmax_sdpa']:.2f} "
            f"| {row['memory_ratio_vs_softmax_eager']:.2f}"
        )
        lines.append(f"| {row['tokens']} | {' | '.join(cells)} | {ratios} |")
    return "\n".join(lines)


def parse_grid(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grids", type=parse_grid, nargs="+",
                        default=[(16, 16), (16, 32), (32, 32), (32, 64), (64, 64), (64, 128)])  # fmt: skip
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="1: no thread barrier stalls on a busy machine")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(grid, args) for grid in args.grids]
    report = {
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "machine": environment(),
        "method": {
            "time": "median wall time and process CPU time of one forward pass (batch 1), models alternating round "
            "after round; ratios are the median of the per-round ratios",
            "memory": "peak bytes of live CPU tensors in one forward pass, torch.profiler memory timeline",
        },
        "rows": rows,
        "summary": summarise(rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown_table(rows))
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
