"""Inference throughput: our Vision Transformer vs transformers' ViTForImageClassification, side by side.

Both models hold the same weights (ours is converted from theirs) and see the same batch. Timings alternate
between the two models, round after round, so machine noise hits both alike; the median round is reported.

    python benchmarks/bench_vit.py                      # ViT-S/16, 224x224, batch 8, eager and sdpa
    python benchmarks/bench_vit.py --rounds 5 --out benchmarks/results/vit_cpu.json
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers
from transformers import ViTConfig, ViTForImageClassification

from hf_attention import from_transformers

VIT_SMALL = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536)


def images_per_second(model, pixels, iterations: int) -> float:
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(iterations):
            model(pixel_values=pixels)
        return iterations * pixels.shape[0] / (time.perf_counter() - start)


def measure(implementation: str, args) -> dict:
    config = ViTConfig(**VIT_SMALL, image_size=args.image_size, patch_size=16, num_labels=1000)
    config._attn_implementation = implementation
    reference = ViTForImageClassification(config).eval()
    ours = from_transformers(reference)
    ours.set_attn_implementation(implementation)
    pixels = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    with torch.inference_mode():
        max_difference = (ours(pixels).logits - reference(pixels).logits).abs().max().item()
    for model in (reference, ours):  # warm-up
        images_per_second(model, pixels, 2)
    theirs_rounds, ours_rounds = [], []
    for _ in range(args.rounds):
        theirs_rounds.append(images_per_second(reference, pixels, args.iterations))
        ours_rounds.append(images_per_second(ours, pixels, args.iterations))
    ratios = [o / t for o, t in zip(ours_rounds, theirs_rounds, strict=True)]
    return {
        "attn_implementation": implementation,
        "transformers_images_per_s": round(statistics.median(theirs_rounds), 2),
        "hf_attention_images_per_s": round(statistics.median(ours_rounds), 2),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_per_round": [round(r, 3) for r in ratios],
        "max_abs_logit_difference": max_difference,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--iterations", type=int, default=5, help="forward passes per timed round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--implementations", nargs="+", default=["eager", "sdpa"])
    parser.add_argument("--out", default="benchmarks/results/vit_cpu.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    results = [measure(implementation, args) for implementation in args.implementations]
    report = {
        "benchmark": "ViT-S/16 inference, ours vs transformers.ViTForImageClassification (same weights)",
        "setup": {
            "batch_size": args.batch_size,
            "image_size": args.image_size,
            "iterations_per_round": args.iterations,
            "rounds": args.rounds,
            "device": "cpu",
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "machine": platform.processor() or platform.machine(),
        },
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| attention | transformers (img/s) | hf_attention (img/s) | ratio |")
    print("|---|---|---|---|")
    for row in results:
        print(
            f"| {row['attn_implementation']} | {row['transformers_images_per_s']} | "
            f"{row['hf_attention_images_per_s']} | {row['ratio']}x |"
        )


if __name__ == "__main__":
    main()
