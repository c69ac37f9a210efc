"""Throughput of our Vision Transformer against transformers' ViTForImageClassification, side by side.

Three models hold the same weights (ours is converted from theirs) and see the same batch: transformers' ViT, ours as
it is built ("hf_attention", plain torch layers, PyTorch's kernels) and ours after `optimize_for_cpu`
("hf_attention_optimized", the opt-in CPU kernels). Timings alternate between the models, round after round, the
order turning by one each round, so machine noise hits them alike; the median round and the median of the per-round
ratios to transformers are reported ("ratio" for the plain model, "hf_attention_optimized_vs_transformers"), next to
the share of a 2048^3 matmul's rate that each model reaches (the median of per-round shares: the matmul is timed in
every round, right after the models, in the dtype the optimized model multiplies in: the model's, or float32 for a
half dtype on a CPU without kernels for it). Cases: inference in float32 (eager, sdpa), bfloat16 and float16
(sdpa), a training step (forward + backward) in float32 and under bfloat16 autocast, and inference under
`torch.compile` (inductor). `--against-timm` adds timm's
`vit_small_patch16_224` (random weights, same shapes; timm needs the second venv of
benchmarks/setup_reference_venv.sh). Freed memory stays mapped (`_environment.keep_freed_memory_mapped`), so that
page faults do not decide the comparison. A report that `--out` replaces is kept in the new one, under "previous".

    python benchmarks/bench_vit.py                      # ViT-S/16, 224x224, batch 8, every case
    python benchmarks/bench_vit.py --cases bf16 --rounds 3              # bf16 inference only
    /tmp/refvenv/bin/python benchmarks/bench_vit.py --against-timm --cases fp32 bf16 \\
        --out benchmarks/results/vit_timm_cpu.json
"""

import argparse
import json
import statistics
import time
from contextlib import nullcontext

import torch
import transformers
from _environment import environment, keep_freed_memory_mapped, write_report
from transformers import ViTConfig, ViTForImageClassification

from hf_attention import from_transformers, optimize_for_cpu
from hf_attention.cpu_optimization import float32_compute_dtype

VIT_SMALL = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536)
# (case, attn_implementation, dtype, training, compiled)
CASES = {
    "fp32": [
        ("inference fp32", "eager", torch.float32, False, False),
        ("inference fp32", "sdpa", torch.float32, False, False),
    ],
    "bf16": [("inference bf16", "sdpa", torch.bfloat16, False, False)],
    "fp16": [("inference fp16", "sdpa", torch.float16, False, False)],
    "train": [("train step fp32", "sdpa", torch.float32, True, False)],
    "train-bf16": [("train step bf16 autocast", "sdpa", torch.bfloat16, True, False)],
    "compile": [("inference fp32 compiled", "sdpa", torch.float32, False, True)],
    "compile-bf16": [("inference bf16 compiled", "sdpa", torch.bfloat16, False, True)],
}  # fmt: skip


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """The rate of one square matmul in `dtype`: the ceiling a matmul-bound model can reach on this machine."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def vit_forward_flops(config: ViTConfig) -> float:
    """Multiply-adds x 2 of one image's forward pass: patch embedding, attention and MLP matmuls, classifier."""
    patches = (config.image_size // config.patch_size) ** 2
    tokens, width, mlp = patches + 1, config.hidden_size, config.intermediate_size
    per_layer = tokens * (4 * width * width + 2 * width * mlp) + 2 * tokens * tokens * width
    embedding = patches * config.num_channels * config.patch_size**2 * width
    return 2.0 * (embedding + config.num_hidden_layers * per_layer + width * config.num_labels)


def make_step(model, pixels, dtype, training: bool):
    """One timed unit: a forward pass, or forward + backward (bf16 training runs under autocast on fp32 weights)."""
    if not training:

        def infer():
            with torch.inference_mode():
                model(pixel_values=pixels)

        return infer
    labels = torch.zeros(pixels.shape[0], dtype=torch.long)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == torch.bfloat16 else nullcontext()

    def train_step():
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(pixel_values=pixels).logits, labels)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return train_step


def images_per_second(step, batch_size: int, iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    return iterations * batch_size / (time.perf_counter() - start)


class TimmClassifier(torch.nn.Module):
    """timm's ViT called as the transformers models are: `pixel_values=` in, an object with `.logits` out."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor):
        return transformers.modeling_outputs.ImageClassifierOutput(logits=self.model(pixel_values))


def build_models(implementation: str, dtype: torch.dtype, training: bool, args) -> dict:
    config = ViTConfig(**VIT_SMALL, image_size=args.image_size, patch_size=16, num_labels=1000)
    config._attn_implementation = implementation
    reference = ViTForImageClassification(config)
    ours = from_transformers(reference)
    ours.set_attn_implementation(implementation)
    optimized = from_transformers(reference)
    optimized.set_attn_implementation(implementation)
    optimized = optimize_for_cpu(optimized)  # after choosing the backend: it replaces "sdpa" with its own
    models = {"transformers": reference, "hf_attention": ours, "hf_attention_optimized": optimized}
    if args.against_timm:
        import timm

        timm_vit = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=args.image_size)
        models["timm"] = TimmClassifier(timm_vit)
    weight_dtype = torch.float32 if training else dtype  # autocast trains fp32 weights
    return {name: model.train(training).to(weight_dtype) for name, model in models.items()}, config


def measure(case: str, implementation: str, dtype, training: bool, compiled: bool, args) -> dict:
    models, config = build_models(implementation, dtype, training, args)
    pixels = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    pixels = pixels if training else pixels.to(dtype)
    with torch.inference_mode():
        reference_logits = models["transformers"].eval()(pixel_values=pixels).logits.float()
        differences = {
            name: float((models[name].eval()(pixel_values=pixels).logits.float() - reference_logits).abs().max())
            for name in ("hf_attention", "hf_attention_optimized")
        }
    if compiled:
        models = {name: torch.compile(model) for name, model in models.items()}
    steps = {name: make_step(model.train(training), pixels, dtype, training) for name, model in models.items()}
    for step in steps.values():  # warm-up (and compilation)
        step()
        step()
    rounds, peaks = {name: [] for name in steps}, []
    # a CPU without bf16 kernels (AVX2) emulates bf16 matmuls 6-70x slower than fp32, and there the optimized model
    # multiplies on fp32 kernels (cpu_optimization): fp32's rate is the ceiling
    emulated = float32_compute_dtype(pixels.to(dtype)) is not None
    matmul_dtype = torch.float32 if emulated else dtype
    names = list(steps)
    for round_index in range(args.rounds):  # the order turns by one each round: no model always follows another
        for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
            rounds[name].append(images_per_second(steps[name], args.batch_size, args.iterations))
        # in every round, as this VM's matmul rate was seen to move by 2x within an hour
        peaks.append(matmul_gflops(matmul_dtype, repeats=2))
    flops_per_image = vit_forward_flops(config) * (3 if training else 1)  # backward ~ twice the forward
    row = {"case": case, "attn_implementation": implementation, "max_abs_logit_difference": differences["hf_attention"]}
    row["optimized_max_abs_logit_difference"] = differences["hf_attention_optimized"]
    row["matmul_peak_dtype"] = str(matmul_dtype).removeprefix("torch.")
    row["matmul_2048_gflops_per_round"] = [round(peak, 1) for peak in peaks]
    for name, values in rounds.items():
        row[f"{name}_images_per_s"] = round(statistics.median(values), 2)
        shares = [rate * flops_per_image / 1e9 / peak for rate, peak in zip(values, peaks, strict=True)]
        row[f"{name}_share_of_matmul_peak"] = round(statistics.median(shares), 3)
    for name in rounds:
        if name == "transformers":
            continue
        ratios = [ours / theirs for ours, theirs in zip(rounds[name], rounds["transformers"], strict=True)]
        key = "ratio" if name == "hf_attention" else f"{name}_vs_transformers"
        row[key] = round(statistics.median(ratios), 3)
        row[f"{key}_per_round"] = [round(ratio, 3) for ratio in ratios]
    if "timm" in rounds:
        ratios = [ours / theirs for ours, theirs in zip(rounds["hf_attention"], rounds["timm"], strict=True)]
        row["hf_attention_vs_timm"] = round(statistics.median(ratios), 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--iterations", type=int, default=3, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--against-timm", action="store_true", help="add timm's vit_small_patch16_224")
    parser.add_argument("--out", default="benchmarks/results/vit_cpu.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    results = []
    for name in args.cases:
        for spec in CASES[name]:
            results.append(measure(*spec, args))
            print(json.dumps(results[-1]), flush=True)  # a long run shows its progress, case by case
    report = {
        "benchmark": "ViT-S/16, ours vs transformers.ViTForImageClassification (same weights), "
        "images per second, medians of interleaved rounds",
        "setup": {
            "batch_size": args.batch_size,
            "image_size": args.image_size,
            "iterations_per_round": args.iterations,
            "rounds": args.rounds,
            "device": "cpu",
            **environment(),
        },
        "results": results,
    }
    write_report(args.out, report)
    print(
        "| case | attention | transformers (img/s) | hf_attention (img/s) | ratio | optimize_for_cpu (img/s) | ratio "
        "| share of matmul peak (theirs / ours / optimized) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in results:
        shares = (
            row[f"{name}_share_of_matmul_peak"] for name in ("transformers", "hf_attention", "hf_attention_optimized")
        )
        print(
            f"| {row['case']} | {row['attn_implementation']} | {row['transformers_images_per_s']} | "
            f"{row['hf_attention_images_per_s']} | {row['ratio']}x | {row['hf_attention_optimized_images_per_s']} | "
            f"{row['hf_attention_optimized_vs_transformers']}x | "
            + " / ".join(f"{share:.0%}" for share in shares)
            + " |"
        )


if __name__ == "__main__":
    keep_freed_memory_mapped()
    main()
