"""bfloat16 attention on the CPU: PyTorch's SDPA kernel against our eager attention route, over sequence lengths.

The measurement behind `cpu_optimization._eager_outruns_cpu_sdpa`: where it says so, the attention `optimize_for_cpu`
switches "sdpa" models to runs bfloat16 eagerly (`cpu_optimization._eager_attention`), which this times next to
`F.scaled_dot_product_attention` (the kernel transformers' sdpa path calls) on the same (batch, heads, tokens,
head_dim) inputs, rounds alternating. Each row also gives the largest
difference from a float32 computation of the same inputs, for both: of the output, and with `--training` (forward +
backward, timed together) of the query's gradient.

    python benchmarks/bench_cpu_attention.py --out benchmarks/results/cpu_attention_bf16.json      # Zen 5, no AMX
    python benchmarks/bench_cpu_attention.py --out benchmarks/results/cpu_attention_bf16_amx.json  # Xeon with AMX
    python benchmarks/bench_cpu_attention.py --training --out benchmarks/results/cpu_attention_bf16_amx_training.json

On the Xeon with AMX the kernel won inference at every length (eager at 0.33-0.96x), so CPUs with AMX keep it there.
"""

import argparse
import json
import statistics
import time

import torch
from _environment import environment, write_report
from torch import nn

from hf_attention.cpu_optimization import _eager_attention

# (batch, heads, tokens, head_dim): ViT-B/32, ViT-S/16, ViT-B/16, ViT-S/16 at 320 px, ViT-S/16 at 448 px,
# DeiT-B at 384 px, long inputs
SHAPES = [(8, 12, 50, 64), (8, 6, 197, 64), (8, 12, 197, 64), (4, 6, 401, 64), (4, 6, 785, 64), (2, 12, 577, 64)]
SHAPES += [(2, 6, 1024, 64), (1, 6, 2048, 64)]
# training batches are larger: where the score count, not the length, decides (`AMX_EAGER_TRAINING_MAX_SCORES`)
TRAINING_SHAPES = [(32, 12, 197, 64), (64, 12, 197, 64), (16, 6, 320, 64), (48, 6, 320, 64), (16, 6, 401, 64)]


def sdpa_kernel(query, key, value):
    return nn.functional.scaled_dot_product_attention(query, key, value)


def eager(query, key, value):
    """(batch, heads, tokens, head_dim) out, as the kernel's (eager attention returns batch, tokens, heads, dim)."""
    return _eager_attention(query, key, value, None, None, dropout=0.0, is_causal=False).transpose(1, 2)


def run_once(attend, inputs, output_gradient):
    """One timed unit: the forward pass, or with an output gradient forward + backward; returns the outputs."""
    if output_gradient is None:
        with torch.inference_mode():
            return attend(*inputs), None
    for tensor in inputs:
        tensor.grad = None
    output = attend(*inputs)
    output.backward(output_gradient)
    return output, inputs[0].grad


def attention_rate(attend, inputs, output_gradient, rounds: int) -> list[float]:
    """GFLOP/s of each round: 4 x queries x keys x head_dim FLOPs forward (two matmuls), twice as many more backward."""
    query, key = inputs[0], inputs[1]
    flops = 4 * query.shape[:-1].numel() * key.shape[-2] * query.shape[-1] * (1 if output_gradient is None else 3)
    run_once(attend, inputs, output_gradient)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run_once(attend, inputs, output_gradient)
        times.append(time.perf_counter() - start)
    return [flops / seconds / 1e9 for seconds in times]


def measure(shape: tuple[int, ...], training: bool, rounds: int) -> dict:
    batch, heads, tokens, head_dim = shape
    *exact, exact_gradient = torch.randn(4, *shape).unbind(0)
    exact = [tensor.requires_grad_(training) for tensor in exact]
    exact_gradient = exact_gradient if training else None
    expected, expected_query_gradient = run_once(sdpa_kernel, exact, exact_gradient)
    inputs = [tensor.detach().to(torch.bfloat16).requires_grad_(training) for tensor in exact]
    output_gradient = None if exact_gradient is None else exact_gradient.to(torch.bfloat16)
    kernels = {"sdpa_kernel": sdpa_kernel, "eager": eager}
    rates = {name: [] for name in kernels}
    for _ in range(3):  # alternate, so drifts of the machine hit both
        for name, attend in kernels.items():
            rates[name] += attention_rate(attend, inputs, output_gradient, rounds // 3)
    row = {"batch": batch, "heads": heads, "tokens": tokens, "head_dim": head_dim}
    for name, attend in kernels.items():
        output, query_gradient = run_once(attend, inputs, output_gradient)
        row[f"{name}_gflops"] = round(statistics.median(rates[name]), 1)
        row[f"{name}_max_abs_error_vs_float32"] = round((output.float() - expected).abs().max().item(), 5)
        if training:
            error = (query_gradient.float() - expected_query_gradient).abs().max().item()
            row[f"{name}_query_gradient_max_abs_error_vs_float32"] = round(error, 5)
    row["eager_over_sdpa_kernel"] = round(row["eager_gflops"] / row["sdpa_kernel_gflops"], 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--training", action="store_true", help="time forward + backward instead of inference")
    parser.add_argument("--out", default="benchmarks/results/cpu_attention_bf16.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for shape in SHAPES + (TRAINING_SHAPES if args.training else []):
        rows.append(measure(shape, args.training, args.rounds))
        print(json.dumps(rows[-1]), flush=True)
    mode = "training (forward + backward, x3 FLOPs)" if args.training else "inference"
    report = {
        "benchmark": f"bfloat16 attention on the CPU, {mode}: F.scaled_dot_product_attention against "
        "optimize_for_cpu's eager attention route, GFLOP/s (4 x queries x keys x head_dim per head forward)",
        "setup": {"rounds": args.rounds, "training": args.training, **environment()},
        "results": rows,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
