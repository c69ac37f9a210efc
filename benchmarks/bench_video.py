"""Inference throughput and peak memory: our X-CLIP video encoder vs transformers' XCLIPVisionModel, side by side.

Both encoders hold the same weights (ours is converted from theirs) and see the same clips: S/16 (384 wide, 12
layers, 6 heads), 224x224 frames, 2 clips x 8 frames, eager and sdpa, float32 and bfloat16. Timings alternate
between the two models round after round, so machine noise hits both alike; the median round is reported with the
ratio (ours / theirs, clips per second). Peak memory is the rise of the resident set size over one forward pass
(the kernel's peak-RSS counter is reset before it; glibc's mmap threshold is pinned so that freed tensors leave the
resident set instead of being silently reused).

    python benchmarks/bench_video.py                       # S/16, as in the README (slow on a shared CPU)
    python benchmarks/bench_video.py --hidden-size 192 --num-layers 4 --num-heads 3 --out /tmp/small.json
"""

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

if "MALLOC_MMAP_THRESHOLD_" not in os.environ:  # before torch allocates anything: restart with the threshold pinned
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})

import torch
from _environment import environment
from transformers import XCLIPVisionConfig, XCLIPVisionModel

from hf_attention import from_transformers

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build_pair(args, implementation: str, dtype: torch.dtype):
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
    reference = XCLIPVisionModel(config).eval()
    reference.set_attn_implementation(implementation)
    ours = from_transformers(reference)
    ours.set_attn_implementation(implementation)
    return reference.to(dtype), ours.to(dtype)


def clips(args, dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    shape = (args.clips, args.num_frames, 3, args.image_size, args.image_size)
    return torch.randn(*shape, generator=generator).to(dtype)


def run(model, pixel_values: torch.Tensor, is_reference: bool) -> torch.Tensor:
    with torch.inference_mode():
        if is_reference:  # transformers' encoder takes the frames of all clips as one batch of images
            return model(pixel_values=pixel_values.flatten(0, 1)).last_hidden_state
        return model(pixel_values=pixel_values).last_hidden_state.flatten(0, 1)


def clips_per_second(model, pixel_values, is_reference: bool) -> float:
    start = time.perf_counter()
    run(model, pixel_values, is_reference)
    return pixel_values.shape[0] / (time.perf_counter() - start)


def measure(args, implementation: str, dtype_name: str) -> dict:
    dtype = DTYPES[dtype_name]
    reference, ours = build_pair(args, implementation, dtype)
    pixel_values = clips(args, dtype)
    memory = {
        "transformers": peak_memory_mib(reference, pixel_values, True),
        "ours": peak_memory_mib(ours, pixel_values, False),
    }
    difference = (run(ours, pixel_values, False).float() - run(reference, pixel_values, True).float()).abs().max()
    theirs_rounds, ours_rounds = [], []
    for round_index in range(args.rounds + 1):  # round 0 warms up
        theirs = clips_per_second(reference, pixel_values, True)
        mine = clips_per_second(ours, pixel_values, False)
        if round_index:
            theirs_rounds.append(theirs)
            ours_rounds.append(mine)
    ratios = [o / t for o, t in zip(ours_rounds, theirs_rounds, strict=True)]
    row = {
        "attn_implementation": implementation,
        "dtype": dtype_name,
        "transformers_clips_per_s": round(statistics.median(theirs_rounds), 3),
        "hf_attention_clips_per_s": round(statistics.median(ours_rounds), 3),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_per_round": [round(ratio, 3) for ratio in ratios],
        "transformers_peak_mib": memory["transformers"],
        "hf_attention_peak_mib": memory["ours"],
        "max_abs_difference": float(difference),
    }
    print(json.dumps(row), flush=True)
    return row


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith(key))


def peak_memory_mib(model, pixel_values, is_reference: bool) -> float:
    """Rise of the resident set size over one forward pass (Linux): peak-RSS counter reset, then read after it."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    before = _status_mib("VmRSS")
    run(model, pixel_values, is_reference)
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
    parser.add_argument("--out", default="benchmarks/results/video_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [measure(args, impl, dtype) for dtype in args.dtypes for impl in args.implementations]
    report = {
        "benchmark": "X-CLIP video encoder inference, ours vs transformers.XCLIPVisionModel (same weights)",
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
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(markdown_table(results))


def markdown_table(results: list[dict]) -> str:
    lines = [
        "| attention | dtype | transformers (clips/s) | hf_attention (clips/s) | ratio | peak MiB (theirs / ours) |",
        "|---|---|---|---|---|---|",
    ]
    for row in results:
        lines.append(
            f"| {row['attn_implementation']} | {row['dtype']} | {row['transformers_clips_per_s']} | "
            f"{row['hf_attention_clips_per_s']} | {row['ratio']}x | "
            f"{row['transformers_peak_mib']:.0f} / {row['hf_attention_peak_mib']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
