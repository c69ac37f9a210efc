"""Every family in half precision on a CPU without kernels for it: `optimize_for_cpu`'s float32 route against aten's
emulation, with float32 beside them.

Where oneDNN has no kernels for a half dtype (bf16 and fp16 on AVX2-only CPUs, fp16 on AMD's Zen 4 and 5), aten
emulates its matmuls and convolutions. `optimize_for_cpu` swaps every family's linear layers and convolutions for
`cpu_optimization.CPULinear` and `CPUConv2d`, and routes the matmuls model code calls as functions, onto float32
kernels there, with the half dtype's arithmetic. Each base model (default config) runs one forward pass, in
inference, three ways: float32, the half dtype after `optimize_for_cpu` ("routed", on a copy with the same weights),
and the half dtype as the model is built ("emulated", aten's own path). The three alternate inside every round;
medians of `--rounds` rounds are reported, with the largest output difference of each half-precision way from
float32. The convolutional families get `--batch-size` x C x `--size` x `--size` inputs, the others their
`dummy_inputs` (224 px images for the ViTs). A report that `--out` replaces is kept in the new one, under "previous".

    python benchmarks/bench_half_precision.py                      # float16, JSON in benchmarks/results/
    python benchmarks/bench_half_precision.py --dtype bfloat16 --rounds 3 --models DETRTransformerModel
    python benchmarks/bench_half_precision.py --models CLIPResidualTextModel --min-multiply-adds 0 --out /tmp/floor.json
"""

import argparse
import copy
import json
import statistics
import time

import torch
from _environment import environment, write_report

from hf_attention import REGISTRY, cpu_optimization, optimize_for_cpu

WAYS = ("float32", "routed", "emulated")


def base_models(names: list[str] | None) -> dict[str, torch.nn.Module]:
    """Every family's base model at its default config (or those `names` picks)."""
    models = {}
    for config_class, model_class, _ in REGISTRY:
        if names is None or model_class.__name__ in names:
            models[model_class.__name__] = model_class(config_class()).eval()
    return models


def inputs_for(model: torch.nn.Module, batch_size: int, size: int) -> dict[str, torch.Tensor]:
    """The model's dummy inputs, with a 4-d image or feature map smaller than `size` (the convolutional families'
    8 x 8 ones) replaced by (batch_size, its channels, size, size); a configured image size is kept."""
    inputs = dict(model.dummy_inputs)
    for name in ("pixel_values", "hidden_states"):
        image = inputs.get(name)
        resizable = image is not None and image.dim() == 4 and not hasattr(model.config, "image_size")
        if resizable and image.shape[-1] < size:
            inputs[name] = torch.randn(batch_size, image.shape[1], size, size)
    return inputs


def forward(model, inputs, dtype):
    with torch.inference_mode():
        output = model(
            **{name: value.to(dtype) if value.is_floating_point() else value for name, value in inputs.items()}
        )
    return output[0] if isinstance(output, tuple) else next(iter(output.values()))


def seconds(model, inputs, dtype, iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        forward(model, inputs, dtype)
    return (time.perf_counter() - start) / iterations


def measure(name: str, model, inputs, dtype, args) -> dict:
    float32 = forward(model.float(), inputs, torch.float32).float()
    optimized = optimize_for_cpu(copy.deepcopy(model).to(dtype))
    model.to(dtype)
    routed = forward(optimized, inputs, dtype)
    aten = forward(model, inputs, dtype)
    times = {way: [] for way in WAYS}
    for _ in range(args.rounds):
        times["routed"].append(seconds(optimized, inputs, dtype, args.iterations))
        times["emulated"].append(seconds(model, inputs, dtype, args.iterations))
        model.float()
        times["float32"].append(seconds(model, inputs, torch.float32, args.iterations))
        model.to(dtype)
    milliseconds = {way: round(statistics.median(values) * 1e3, 2) for way, values in times.items()}
    return {
        "model": name,
        "input_shape": list(max(inputs.values(), key=torch.Tensor.numel).shape),  # the largest input's
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
    parser.add_argument("--models", nargs="+", help="base model class names (default: every family)")
    parser.add_argument(
        "--min-multiply-adds",
        type=int,
        default=cpu_optimization.MIN_MULTIPLY_ADDS_PER_ELEMENT,
        help="the routed way's floor on a matmul's multiply-adds per operand element (0: every matmul takes the route)",
    )
    parser.add_argument("--out", default="benchmarks/results/half_precision_cpu.json")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    if cpu_optimization.float32_compute_dtype(torch.ones(1, dtype=dtype)) is None:
        raise SystemExit(f"This CPU has oneDNN kernels for {args.dtype}: the route does not apply, nothing to compare.")
    cpu_optimization.MIN_MULTIPLY_ADDS_PER_ELEMENT = args.min_multiply_adds
    torch.manual_seed(0)
    results = []
    for name, model in base_models(args.models).items():
        results.append(measure(name, model, inputs_for(model, args.batch_size, args.size), dtype, args))
        print(json.dumps(results[-1]), flush=True)
    report = {
        "benchmark": f"every family in {args.dtype}, optimize_for_cpu's float32 route vs aten's emulation, float32 "
        "beside them; median ms of one inference forward",
        "setup": {
            "dtype": args.dtype,
            "min_multiply_adds_per_element": args.min_multiply_adds,
            "rounds": args.rounds,
            "iterations_per_round": args.iterations,
            **environment(),
        },
        "results": results,
    }
    write_report(args.out, report)
    print(markdown_table(results, args.dtype))


def markdown_table(results: list[dict], dtype: str) -> str:
    """The README's table."""
    lines = [
        f"| model | largest input | float32 ms | {dtype} routed ms | {dtype} emulated ms | routed vs emulated | "
        "routed / float32 | largest difference from float32 (routed / emulated) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        shape = "x".join(map(str, row["input_shape"]))
        differences = (row[f"{way}_max_abs_difference_from_float32"] for way in ("routed", "emulated"))
        lines.append(
            f"| {row['model']} | {shape} | {row['float32_ms']} | {row['routed_ms']} | {row['emulated_ms']} | "
            f"**{row['routed_speedup_over_emulated']}x** | {row['routed_time_over_float32']} | "
            + " / ".join(f"{difference:.2g}" for difference in differences)
            + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
