"""The Python each ViT forward costs, ours against transformers' (same weights, sdpa): a 12-layer ViT on 5 tokens, one
thread, where the arithmetic is negligible and the time is the layers' Python and dispatch. On a GPU that time is what
small batches wait for (`benchmarks/gpu_launch_bound.py`). Medians of `--rounds` interleaved rounds.

    python benchmarks/bench_python_overhead.py     # -> benchmarks/results/python_overhead_cpu.json
"""

import argparse
import json
import statistics
import time

import torch
from _environment import environment, write_report
from transformers import ViTConfig, ViTForImageClassification

from hf_attention import from_transformers


def milliseconds_per_forward(model, pixels: torch.Tensor, iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        model(pixel_values=pixels)
    return (time.perf_counter() - start) / iterations * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--out", default="benchmarks/results/python_overhead_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = ViTConfig(
        hidden_size=64, num_hidden_layers=12, num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=16
    )
    config._attn_implementation = "sdpa"
    theirs = ViTForImageClassification(config).eval()
    ours = from_transformers(theirs).eval()
    ours.set_attn_implementation("sdpa")
    models = {"transformers": theirs, "hf_attention": ours}
    pixels = torch.randn(1, 3, 32, 32)
    times = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            milliseconds_per_forward(model, pixels, args.iterations // 10)
        for round_index in range(args.rounds):  # the order turns each round
            for name in list(models)[round_index % 2 :] + list(models)[: round_index % 2]:
                times[name].append(milliseconds_per_forward(models[name], pixels, args.iterations))
    medians = {f"{name}_ms": round(statistics.median(values), 3) for name, values in times.items()}
    report = {
        "benchmark": "ms of one ViT forward (12 layers, width 64, 5 tokens, one thread): Python and dispatch",
        "setup": {"rounds": args.rounds, "iterations_per_round": args.iterations, **environment()},
        **medians,
        "ours_over_theirs": round(medians["hf_attention_ms"] / medians["transformers_ms"], 3),
    }
    write_report(args.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
