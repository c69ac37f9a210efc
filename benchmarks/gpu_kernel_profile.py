"""ViT-S/16 on a GPU, ours against transformers' (same weights, fp16, sdpa): wall ms per forward at batches 64 and
256, each model's kernels by GPU time (torch.profiler; the table lists both the aten op and its kernel, so each time
appears twice and the "GPU kernel time" total counts it twice too: compare ratios, not absolutes), and batch 1, where
the host's Python and launches set the pace. `benchmarks/results/gpu_kernel_profile_before_python_trim.txt` is one run
on an H200, by this script before `vit_s_pair` named our model "hf_attention" (it calls it "ours").

    python benchmarks/gpu_kernel_profile.py
"""

import statistics
import time

import torch
from gpu_check import vit_s_pair
from torch.profiler import ProfilerActivity, profile


def run(model, pixels: torch.Tensor, iterations: int) -> None:
    for _ in range(iterations):
        model(pixel_values=pixels)


def milliseconds_per_forward(model, pixels: torch.Tensor, iterations: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    run(model, pixels, iterations)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iterations * 1e3


dtype = torch.float16
models = vit_s_pair(torch.device("cuda"), dtype)
with torch.inference_mode():
    for batch in (64, 256):
        x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=dtype)
        for m in models.values():
            run(m, x, 5)
        rates = {k: [] for k in models}
        for _ in range(5):
            for k, m in models.items():
                rates[k].append(milliseconds_per_forward(m, x, 10))
        print("batch", batch, "ms/forward", {k: round(statistics.median(v), 3) for k, v in rates.items()})
        for k, m in models.items():
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
                run(m, x, 3)
                torch.cuda.synchronize()
            ev = p.key_averages()
            total = sum(e.self_device_time_total for e in ev) / 3 / 1e3
            print(f"== {k} batch {batch}: GPU kernel time per forward {total:.3f} ms")
            for e in sorted(ev, key=lambda e: -e.self_device_time_total)[:14]:
                print(f"   {e.self_device_time_total / 3 / 1e3:8.3f} ms  x{e.count // 3:4d}  {e.key[:110]}")
    x = torch.randn(1, 3, 224, 224, device="cuda", dtype=dtype)
    for k, m in models.items():
        run(m, x, 5)
        print(k, "batch 1 ms/forward (launch/Python bound)", round(milliseconds_per_forward(m, x, 50), 3))
