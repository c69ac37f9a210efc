"""The convolutional families in half precision on a CPU without kernels for it: `RoutedConv2d` against aten's
emulation, with float32 beside them.

Where oneDNN has no kernels for a half dtype (bf16 and fp16 on AVX2-only CPUs, fp16 on AMD's Zen 4 and 5), aten
emulates its convolutions. Every family's convolutions are `fused_linear.RoutedConv2d`, which runs them on float32
kernels there with the half dtype's arithmetic. Each family (default config) runs one forward pass, in inference,
three ways: float32, the half dtype as it ships ("routed"), and the half dtype with the route switched off
("emulated", aten's own path). The three alternate inside every round; medians of `--rounds` rounds are reported,
with the largest output difference of each half-precision way from float32.

    python benchmarks/bench_half_precision_cnn.py                      # float16, JSON in benchmarks/results/
    python benchmarks/bench_half_precision_cnn.py --dtype bfloat16 --rounds 3
"""

import argparse
import json
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from _environment import environment

from hf_attention import REGISTRY, fused_linear
from hf_attention.feature_map_layers import FeatureAttentionPreTrainedModel
from hf_attention.modeling_attention_cnn import AttentionCNNPreTrainedModel

WAYS = ("float32", "routed", "emulated")


@contextmanager
def emulated():
    """aten's own half-precision kernels: the route off, as on a CPU that has kernels for the dtype."""
    kernels = fused_linear.CPU_HAS_HALF_KERNELS
    fused_linear.CPU_HAS_HALF_KERNELS = {torch.bfloat16: True, torch.float16: True}
    try:
        yield
    finally:
        fused_linear.CPU_HAS_HALF_KERNELS = kernels


def convolutional_models() -> dict[str, torch.nn.Module]:
    """The feature-map attention blocks and the attention CNN that hold convolutions, at their default configs."""
    models = {}
    for config_class, model_class, _ in REGISTRY:
        if not issubclass(model_class, (FeatureAttentionPreTrainedModel, AttentionCNNPreTrainedModel)):
            continue
        model = model_class(config_class()).eval()
        if any(isinstance(module, fused_linear.RoutedConv2d) for module in model.modules()):
            models[model_class.__name__] = model
    return models


def inputs_for(model: torch.nn.Module, batch_size: int, size: int) -> dict[str, torch.Tensor]:
    """The model's dummy input, resized to (batch_size, its channels, size, size)."""
    name, example = next(iter(model.dummy_inputs.items()))
    return {name: torch.randn(batch_size, example.shape[1], size, size)}


def forward(model, inputs, dtype):
    with torch.inference_mode():
        output = model(**{name: value.to(dtype) for name, value in inputs.items()})
    return output[0] if isinstance(output, tuple) else next(iter(output.values()))


def seconds(model, inputs, dtype, iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        forward(model, inputs, dtype)
    return (time.perf_counter() - start) / iterations


def measure(name: str, model, inputs, dtype, args) -> dict:
    float32 = forward(model.float(), inputs, torch.float32).float()
    model.to(dtype)
    routed = forward(model, inputs, dtype)
    with emulated():
        aten = forward(model, inputs, dtype)
    times = {way: [] for way in WAYS}
    for _ in range(args.rounds):
        times["routed"].append(seconds(model, inputs, dtype, args.iterations))
        with emulated():
            times["emulated"].append(seconds(model, inputs, dtype, args.iterations))
        model.float()
        times["float32"].append(seconds(model, inputs, torch.float32, args.iterations))
        model.to(dtype)
    milliseconds = {way: round(statistics.median(values) * 1e3, 2) for way, values in times.items()}
    return {
        "model": name,
        "input_shape": list(next(iter(inputs.values())).shape),
        **{f"{way}_ms": value for way, value in milliseconds.items()},
        "routed_speedup_over_emulated": round(milliseconds["emulated"] / milliseconds["routed"], 2),
        "routed_time_over_float32": round(milliseconds["routed"] / milliseconds["float32"], 2),
        "routed_max_abs_difference_from_float32": float((routed.float() - float32).abs().max()),
        "emulated_max_abs_difference_from_float32": float((aten.float() - float32).abs().max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=32, help="height and width of the input")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=2, help="forward passes per timed round")
    parser.add_argument("--out", default="benchmarks/results/half_precision_cnn_cpu.json")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    if fused_linear.float32_compute_dtype(torch.ones(1, dtype=dtype)) is None:
        raise SystemExit(f"This CPU has oneDNN kernels for {args.dtype}: the route does not apply, nothing to compare.")
    torch.manual_seed(0)
    results = []
    for name, model in convolutional_models().items():
        results.append(measure(name, model, inputs_for(model, args.batch_size, args.size), dtype, args))
        print(json.dumps(results[-1]), flush=True)
    report = {
        "benchmark": f"convolutional families in {args.dtype}, RoutedConv2d vs aten's emulation, float32 beside them; "
        "median ms of one inference forward",
        "setup": {"dtype": args.dtype, "rounds": args.rounds, "iterations_per_round": args.iterations, **environment()},
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| model | input | float32 (ms) | routed (ms) | emulated (ms) | routed vs emulated | routed / float32 |")
    print("|---|---|---|---|---|---|---|")
    for row in results:
        shape = "x".join(map(str, row["input_shape"]))
        print(
            f"| {row['model']} | {shape} | {row['float32_ms']} | {row['routed_ms']} | {row['emulated_ms']} | "
            f"{row['routed_speedup_over_emulated']}x | {row['routed_time_over_float32']} |"
        )


if __name__ == "__main__":
    main()
