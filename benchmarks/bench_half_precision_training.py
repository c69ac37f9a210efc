"""A half-precision training step on a CPU without kernels for the dtype: what autograd keeps, and how long it takes.

Where oneDNN has no kernels for a half dtype (fp16 on AMD's Zen 4 and 5, bf16 and fp16 on AVX2-only CPUs),
`optimize_for_cpu` multiplies on float32 kernels. Three ways of one ViT-S/16 training step (batch 8, 224 px, sdpa,
after `optimize_for_cpu`), side by side in one process, alternating inside every round:

- "half operands kept": as it ships; autograd keeps the half-precision operands and converts them again in the
  backward (`cpu_optimization.on_float32_kernels`);
- "float32 copies kept": the same route, with autograd keeping the float32 copies the forward multiplied (how the
  route ran before);
- "aten": the route off, aten's own half-precision kernels: emulated where the CPU has none for the dtype, ~22x
  slower than the route there.

For each: the bytes the forward leaves allocated (what autograd keeps for the backward, plus the logits; the net of
torch.profiler's memory events, deterministic) and the median seconds of a forward + backward over `--rounds`.
`--dtype` sets fp16 or bf16; the route is taken for it whatever the CPU, as on one without its kernels. Each dtype
runs twice: half-precision weights, and float32 weights under autocast.

    python benchmarks/bench_half_precision_training.py                     # fp16 weights, then fp16 autocast
    python benchmarks/bench_half_precision_training.py --rounds 3 --skip-aten-timing   # aten's memory, not its time
"""

import argparse
import json
import statistics
import time
from contextlib import contextmanager, nullcontext

import torch
from _environment import environment, write_report
from torch.profiler import ProfilerActivity, profile
from transformers import ViTConfig, ViTForImageClassification

from hf_attention import cpu_optimization, from_transformers, optimize_for_cpu

VIT_SMALL = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536)
WAYS = ("half operands kept", "float32 copies kept", "aten")


@contextmanager
def way(name: str, dtype: torch.dtype):
    """The route for `dtype` on (as on a CPU without its kernels) or off, keeping half operands or float32 copies."""
    kernels, keeps = cpu_optimization.CPU_HAS_HALF_KERNELS, cpu_optimization._keeps_tensors_for_backward
    cpu_optimization.CPU_HAS_HALF_KERNELS = {**kernels, dtype: name == "aten"}
    if name == "float32 copies kept":
        cpu_optimization._keeps_tensors_for_backward = lambda tensors: False
    try:
        yield
    finally:
        cpu_optimization.CPU_HAS_HALF_KERNELS, cpu_optimization._keeps_tensors_for_backward = kernels, keeps


def make_step(model, pixels, labels, dtype, autocast: bool):
    context = (lambda: torch.autocast("cpu", dtype=dtype)) if autocast else nullcontext

    def forward():
        with context():
            return torch.nn.functional.cross_entropy(model(pixel_values=pixels).logits.float(), labels)

    def step():
        forward().backward()
        model.zero_grad(set_to_none=True)

    return forward, step


def kept_mib(forward) -> float:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        loss = forward()
    del loss
    return sum(event.self_cpu_memory_usage for event in profiler.events()) / 2**20


def measure(dtype: torch.dtype, autocast: bool, args) -> dict:
    torch.manual_seed(0)
    config = ViTConfig(**VIT_SMALL, image_size=224, patch_size=16, num_labels=1000)
    config._attn_implementation = "sdpa"
    model = from_transformers(ViTForImageClassification(config)).train()
    model.set_attn_implementation("sdpa")
    model = optimize_for_cpu(model)
    pixels, labels = torch.randn(args.batch_size, 3, 224, 224), torch.zeros(args.batch_size, dtype=torch.long)
    if not autocast:
        model, pixels = model.to(dtype), pixels.to(dtype)
    forward, step = make_step(model, pixels, labels, dtype, autocast)
    row = {"dtype": str(dtype).removeprefix("torch."), "weights": "float32, autocast" if autocast else "half"}
    timed = [name for name in WAYS if not (args.skip_aten_timing and name == "aten")]
    gradients, times = {}, {name: [] for name in timed}
    for name in WAYS:
        with way(name, dtype):
            row[f"{name}: MiB kept after the forward"] = round(kept_mib(forward), 1)
            forward().backward()  # warm-up, and the gradients the ways are compared by
            gradients[name] = [parameter.grad.clone() for parameter in model.parameters()]
            model.zero_grad(set_to_none=True)
    row["gradients_identical_with_and_without_float32_copies"] = all(
        torch.equal(kept, copied)
        for kept, copied in zip(gradients["half operands kept"], gradients["float32 copies kept"], strict=True)
    )
    for _ in range(args.rounds):
        for name in timed:
            with way(name, dtype):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        row[f"{name}: s per step"] = round(statistics.median(values), 3)
    ratios = [kept / copied for kept, copied in zip(times[WAYS[0]], times[WAYS[1]], strict=True)]
    row["time_half_operands_vs_float32_copies"] = round(statistics.median(ratios), 3)
    row["time_ratio_per_round"] = [round(ratio, 3) for ratio in ratios]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-aten-timing", action="store_true", help="measure aten's memory, not its time")
    parser.add_argument("--out", default="benchmarks/results/half_precision_training_cpu.json")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    results = []
    for autocast in (False, True):
        results.append(measure(dtype, autocast, args))
        print(json.dumps(results[-1]), flush=True)
    report = {
        "benchmark": "ViT-S/16 training step (batch 8, 224 px, sdpa) in half precision on float32 kernels",
        "setup": {"batch_size": args.batch_size, "rounds": args.rounds, **environment()},
        "results": results,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
