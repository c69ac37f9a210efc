"""Whether `optimize_for_cpu` should fuse q/k/v: one (width -> 3 x width) projection against three, side by side.

The measurement behind leaving the fusion out. ViT-S/16's shapes (batch 8, 197 tokens, 384 wide, 6 heads), inference,
on the kernels `optimize_for_cpu` runs (`cpu_optimization.linear`: oneDNN's inner product in bf16 where the CPU has
it); for each dtype, ways alternating inside every round:

- "three": q_proj, k_proj and v_proj, each split into heads, as the models hold them;
- "fused": one projection by the three weights concatenated once, beforehand (a cache that a fused layer would have
  to keep, and invalidate whenever a weight changes);
- "fused, concatenated per call": the same with the weights concatenated on every call (no cache);
- "three + attention" and "fused + attention": the projections followed by the attention `optimize_for_cpu` runs for
  the dtype (its eager route in bf16 on an AVX-512 CPU without AMX, PyTorch's SDPA elsewhere), on the layouts each
  way gives it.

Medians of per-round milliseconds and of per-round speed-ups over "three" are reported.

    python benchmarks/bench_fused_qkv.py --out benchmarks/results/fused_qkv_cpu.json
"""

import argparse
import json
import statistics
import time

import torch
from _environment import environment, write_report
from torch import nn

from hf_attention.cpu_optimization import cpu_attention_forward, linear

BATCH, TOKENS, WIDTH, HEADS = 8, 197, 384, 6


def milliseconds(function, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats * 1e3


def ways(dtype: torch.dtype) -> dict:
    projections = [nn.Linear(WIDTH, WIDTH).to(dtype) for _ in range(3)]
    weight = torch.cat([layer.weight for layer in projections]).detach()
    bias = torch.cat([layer.bias for layer in projections]).detach()
    hidden = torch.randn(BATCH, TOKENS, WIDTH, dtype=dtype)
    module = nn.Module().eval()

    def three():
        return [
            linear(hidden, layer.weight, layer.bias).unflatten(-1, (HEADS, -1)).transpose(1, 2) for layer in projections
        ]

    def split(qkv):  # b n (three h d) -> three b h n d
        return qkv.unflatten(-1, (3, HEADS, -1)).permute(2, 0, 3, 1, 4).unbind(0)

    def fused():
        return split(linear(hidden, weight, bias))

    def fused_per_call():
        weights = [torch.cat([getattr(layer, name) for layer in projections]) for name in ("weight", "bias")]
        return split(linear(hidden, *weights))

    def attend(qkv):
        return cpu_attention_forward(module, *qkv, None, scaling=(WIDTH // HEADS) ** -0.5, is_causal=False)[0]

    return {
        "three": three,
        "fused": fused,
        "fused, concatenated per call": fused_per_call,
        "three + attention": lambda: attend(three()),
        "fused + attention": lambda: attend(fused()),
    }


def measure(dtype: torch.dtype, rounds: int, repeats: int) -> dict:
    functions = ways(dtype)
    times = {name: [] for name in functions}
    with torch.inference_mode():
        for function in functions.values():  # warm-up
            function()
        for _ in range(rounds):
            for name, function in functions.items():
                times[name].append(milliseconds(function, repeats))
    row = {"dtype": str(dtype).removeprefix("torch.")}
    row.update({f"{name}_ms": round(statistics.median(values), 3) for name, values in times.items()})
    for name, baseline in (
        ("fused", "three"),
        ("fused, concatenated per call", "three"),
        ("fused + attention", "three + attention"),
    ):
        ratios = [base / time for base, time in zip(times[baseline], times[name], strict=True)]
        row[f"{name}_speedup"] = round(statistics.median(ratios), 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=20, help="calls per timed round")
    parser.add_argument("--out", default="benchmarks/results/fused_qkv_cpu.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    results = []
    for dtype in (torch.bfloat16, torch.float32):
        results.append(measure(dtype, args.rounds, args.repeats))
        print(json.dumps(results[-1]), flush=True)
    report = {
        "benchmark": "q/k/v projections of ViT-S/16 (batch 8), inference on optimize_for_cpu's kernels: three "
        "projections vs one fused, milliseconds per call, medians of interleaved rounds",
        "setup": {"rounds": args.rounds, "repeats_per_round": args.repeats, **environment()},
        "results": results,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
