"""Throughput and peak memory: our X-CLIP video encoder vs transformers' XCLIPVisionModel, side by side.

Three encoders hold the same weights (ours is converted from theirs) and see the same clips: transformers' encoder,
ours as it is built ("hf_attention", plain torch layers, PyTorch's kernels) and ours after `optimize_for_cpu`
("hf_attention_optimized", the opt-in CPU kernels). S/16 (384 wide, 12 layers, 6 heads), 224x224 frames, 2 clips x
8 frames, eager and sdpa, float32 and bfloat16, inference and a training step (forward + backward of the mean square
of the last hidden state; bfloat16 training runs under autocast on float32 weights). Timings alternate between the
models round after round, so machine noise hits them alike; the median round is reported with the medians of the
per-round ratios to transformers (clips per second): "ratio" for the plain model,
"hf_attention_optimized_vs_transformers" for the optimized one; the order in which the models run turns by one each
round. Peak memory (inference) is the rise of the resident set size over one forward pass, measured in a child process
(the kernel's peak-RSS counter is reset before it; glibc's mmap threshold is pinned there so that freed tensors leave
the resident set instead of being silently reused: pinned in the timed process, it made every large tensor page-fault
in all three models and halved their throughput). The timed process keeps freed memory mapped instead
(`_environment.keep_freed_memory_mapped`). A report that `--out` replaces is kept in the new one, under "previous".

    python benchmarks/bench_video.py                       # S/16, as in the README (slow on a shared CPU)
    python benchmarks/bench_video.py --hidden-size 192 --num-layers 4 --num-heads 3 --out /tmp/small.json
"""

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch
from _environment import environment, keep_freed_memory_mapped, write_report
from transformers import XCLIPVisionConfig, XCLIPVisionModel

from hf_attention import from_transformers, optimize_for_cpu

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MODELS = ("transformers", "hf_attention", "hf_attention_optimized")


def build_models(args, implementation: str, dtype: torch.dtype, training: bool) -> dict:
    torch.manual_seed(0)
    config = XCLIPVisionConfig(
        hidden_size=args.hidden_size,
        intermediate_size=4 * args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        image_size=args.image_size,
        patch_size=16,
        num_frames=args.num_frames,
    )
    reference = XCLIPVisionModel(config)
    reference.set_attn_implementation(implementation)
    ours, optimized = from_transformers(reference), from_transformers(reference)
    ours.set_attn_implementation(implementation)
    optimized.set_attn_implementation(implementation)
    models = dict(zip(MODELS, (reference, ours, optimize_for_cpu(optimized)), strict=True))
    weight_dtype = torch.float32 if training else dtype  # bf16 training: autocast on float32 weights
    return {name: model.train(training).to(weight_dtype) for name, model in models.items()}


def clips(args, dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    shape = (args.clips, args.num_frames, 3, args.image_size, args.image_size)
    return torch.randn(*shape, generator=generator).to(dtype)


def forward(model, pixel_values: torch.Tensor, name: str) -> torch.Tensor:
    if name == "transformers":  # transformers' encoder takes the frames of all clips as one batch of images
        return model(pixel_values=pixel_values.flatten(0, 1)).last_hidden_state
    return model(pixel_values=pixel_values).last_hidden_state.flatten(0, 1)


def run(model, pixel_values: torch.Tensor, name: str) -> torch.Tensor:
    with torch.inference_mode():
        return forward(model, pixel_values, name)


def make_step(model, pixel_values, name: str, dtype: torch.dtype, training: bool):
    if not training:
        return lambda: run(model, pixel_values, name)
    autocast = torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else nullcontext()

    def train_step():
        with autocast:
            loss = forward(model, pixel_values, name).float().square().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    return train_step


def clips_per_second(step, num_clips: int) -> float:
    start = time.perf_counter()
    step()
    return num_clips / (time.perf_counter() - start)


def measure(args, implementation: str, dtype_name: str, training: bool) -> dict:
    dtype = DTYPES[dtype_name]
    models = build_models(args, implementation, dtype, training)
    pixel_values = clips(args, torch.float32 if training else dtype)
    row = {"mode": "training" if training else "inference", "attn_implementation": implementation, "dtype": dtype_name}
    if not training:
        row |= peak_memory_in_a_child_process(args, implementation, dtype_name)
    autocast = torch.autocast("cpu", dtype=dtype) if training and dtype != torch.float32 else nullcontext()
    with torch.inference_mode(), autocast:
        reference = forward(models["transformers"].eval(), pixel_values, "transformers").float()
        for name in MODELS[1:]:
            output = forward(models[name].eval(), pixel_values, name).float()
            row[f"{name}_max_abs_difference"] = float((output - reference).abs().max())
    steps = {
        name: make_step(model.train(training), pixel_values, name, dtype, training) for name, model in models.items()
    }
    rounds = {name: [] for name in MODELS}
    for round_index in range(args.rounds + 1):  # round 0 warms up
        for name in MODELS[round_index % len(MODELS) :] + MODELS[: round_index % len(MODELS)]:
            rate = clips_per_second(steps[name], args.clips)
            if round_index:
                rounds[name].append(rate)
    for name in MODELS:
        row[f"{name}_clips_per_s"] = round(statistics.median(rounds[name]), 3)
    for name, key in (("hf_attention", "ratio"), ("hf_attention_optimized", "hf_attention_optimized_vs_transformers")):
        ratios = [ours / theirs for ours, theirs in zip(rounds[name], rounds["transformers"], strict=True)]
        row[key] = round(statistics.median(ratios), 3)
        row[f"{key}_per_round"] = [round(ratio, 3) for ratio in ratios]
    print(json.dumps(row), flush=True)
    return row


def peak_memory_in_a_child_process(args, implementation: str, dtype_name: str) -> dict:
    """`{name}_peak_mib` of each model, measured by this script run with `--memory-of`, where glibc's mmap threshold
    is pinned."""
    shape = ("hidden_size", "num_layers", "num_heads", "image_size", "num_frames", "clips", "threads")
    options = [item for name in shape for item in (f"--{name.replace('_', '-')}", str(getattr(args, name)))]
    command = [sys.executable, __file__, *options, "--memory-of", implementation, dtype_name]
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
    return json.loads(finished.stdout.strip().splitlines()[-1])


def print_peak_memory(args, implementation: str, dtype_name: str) -> None:
    dtype = DTYPES[dtype_name]
    models = build_models(args, implementation, dtype, training=False)
    pixel_values = clips(args, dtype)
    peaks = {f"{name}_peak_mib": peak_memory_mib(model, pixel_values, name) for name, model in models.items()}
    print(json.dumps(peaks))


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith(key))


def peak_memory_mib(model, pixel_values, name: str) -> float:
    """Rise of the resident set size over one forward pass (Linux): peak-RSS counter reset, then read after it."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    before = _status_mib("VmRSS")
    run(model, pixel_values, name)
    return round(_status_mib("VmHWM") - before, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden-size", type=int, default=384)
    parser.add_argument("--num-layers", type=int, default=12)
    parser.add_argument("--num-heads", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--implementations", nargs="+", default=["eager", "sdpa"])
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--modes", nargs="+", choices=["inference", "training"], default=["inference", "training"])
    parser.add_argument("--out", default="benchmarks/results/video_cpu.json")
    parser.add_argument("--memory-of", nargs=2, metavar=("IMPLEMENTATION", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_of:  # the child process of `peak_memory_in_a_child_process`
        return print_peak_memory(args, *args.memory_of)
    results = [
        measure(args, implementation, dtype, mode == "training")
        for mode in args.modes
        for dtype in args.dtypes
        for implementation in args.implementations
    ]
    report = {
        "benchmark": "X-CLIP video encoder, ours (plain and optimize_for_cpu) vs transformers.XCLIPVisionModel "
        "(same weights), clips per second, medians of interleaved rounds",
        "setup": {
            "hidden_size": args.hidden_size,
            "num_layers": args.num_layers,
            "num_heads": args.num_heads,
            "image_size": args.image_size,
            "patch_size": 16,
            "clips": args.clips,
            "frames_per_clip": args.num_frames,
            "rounds": args.rounds,
            "device": "cpu",
            **environment(args.threads),
        },
        "results": results,
    }
    write_report(args.out, report)
    print(markdown_table(results))


def markdown_table(results: list[dict]) -> str:
    lines = [
        "| mode | attention | dtype | transformers (clips/s) | hf_attention (clips/s) | ratio | optimize_for_cpu "
        "(clips/s) | ratio | peak MiB (theirs / ours / optimized) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        peaks = (
            " / ".join(f"{row[f'{name}_peak_mib']:.0f}" for name in MODELS) if f"{MODELS[0]}_peak_mib" in row else ""
        )
        lines.append(
            f"| {row['mode']} | {row['attn_implementation']} | {row['dtype']} | {row['transformers_clips_per_s']} | "
            f"{row['hf_attention_clips_per_s']} | {row['ratio']}x | {row['hf_attention_optimized_clips_per_s']} | "
            f"{row['hf_attention_optimized_vs_transformers']}x | {peaks} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    keep_freed_memory_mapped()
    main()
