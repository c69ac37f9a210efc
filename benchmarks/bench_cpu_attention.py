"""bfloat16 attention on the CPU: PyTorch's SDPA kernel against our eager attention, over sequence lengths.

The measurement behind `attention._eager_outruns_cpu_sdpa`: on a CPU with AVX-512 bf16 but no AMX, "sdpa" in
bfloat16 runs as `eager_attention_forward`, which this times next to `F.scaled_dot_product_attention` (the kernel
transformers' sdpa path calls) on the same (batch, heads, tokens, head_dim) inputs, rounds alternating. Each row also
gives the largest difference from a float32 computation of the same inputs, for both.

    python benchmarks/bench_cpu_attention.py --out benchmarks/results/cpu_attention_bf16.json
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from _environment import environment
from torch import nn

from hf_attention.attention import eager_attention_forward

# (batch, heads, tokens, head_dim): ViT-B/32, ViT-S/16, ViT-B/16, ViT-S/16 at 448 px, DeiT-B at 384 px, long inputs
SHAPES = [(8, 12, 50, 64), (8, 6, 197, 64), (8, 12, 197, 64), (4, 6, 785, 64), (2, 12, 577, 64), (2, 6, 1024, 64)]
SHAPES += [(1, 6, 2048, 64)]


def attention_rate(attend, query, key, value, rounds: int) -> list[float]:
    flops = 4 * query.shape[:-1].numel() * key.shape[-2] * query.shape[-1]
    attend(query, key, value)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        attend(query, key, value)
        times.append(time.perf_counter() - start)
    return [flops / seconds / 1e9 for seconds in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", default="benchmarks/results/cpu_attention_bf16.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    module = nn.Module().eval()
    kernels = {
        "sdpa_kernel": lambda q, k, v: nn.functional.scaled_dot_product_attention(q, k, v),
        "eager": lambda q, k, v: eager_attention_forward(module, q, k, v, None)[0],
    }
    rows = []
    for batch, heads, tokens, head_dim in SHAPES:
        query, key, value = torch.randn(3, batch, heads, tokens, head_dim).unbind(0)
        expected = kernels["sdpa_kernel"](query, key, value)
        inputs = [tensor.to(torch.bfloat16) for tensor in (query, key, value)]
        row = {"batch": batch, "heads": heads, "tokens": tokens, "head_dim": head_dim}
        rates = {name: [] for name in kernels}
        with torch.inference_mode():
            for _ in range(3):  # alternate, so drifts of the machine hit both
                for name, attend in kernels.items():
                    rates[name] += attention_rate(attend, *inputs, args.rounds // 3)
            for name, attend in kernels.items():
                output = attend(*inputs).float()
                output = output if name == "sdpa_kernel" else output.transpose(1, 2)
                row[f"{name}_gflops"] = round(statistics.median(rates[name]), 1)
                row[f"{name}_max_abs_error_vs_float32"] = round((output - expected).abs().max().item(), 5)
        row["eager_over_sdpa_kernel"] = round(row["eager_gflops"] / row["sdpa_kernel_gflops"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {
        "benchmark": "bfloat16 attention on the CPU, inference: F.scaled_dot_product_attention against "
        "hf_attention's eager_attention_forward, GFLOP/s (4 x queries x keys x head_dim per head)",
        "setup": {"rounds": args.rounds, **environment()},
        "results": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
