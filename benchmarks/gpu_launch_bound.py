"""ViT-S/16 on a GPU where the host, not the GPU, sets the pace: ours against transformers' (same weights, fp16, sdpa).

First it counts the calls that synchronise host and GPU in one forward (`torch.cuda.set_sync_debug_mode`: none in
either), then times batches of 16, 64 and 128 in 9 interleaved rounds of 20 forwards: wall time, and the host's time
until the last forward is queued. Where the two agree the GPU waits on Python and launches; the ratio per round is
transformers' time over ours. Prints its results (`benchmarks/results/gpu_launch_bound*.txt` hold two runs on an H200,
by this script before `vit_s_pair` named our model "hf_attention": they call it "ours").

    python benchmarks/gpu_launch_bound.py
"""

import statistics
import time
import warnings

import torch
from gpu_check import vit_s_pair

dtype = torch.float16
models = vit_s_pair(torch.device("cuda"), dtype)
x = torch.randn(64, 3, 224, 224, device="cuda", dtype=dtype)
with torch.inference_mode():
    for k, m in models.items():
        m(pixel_values=x)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m(pixel_values=x)
        torch.cuda.set_sync_debug_mode(0)
        syncs = [str(w.message)[:160] for w in caught if "synchroniz" in str(w.message).lower()]
        print(k, "synchronizing calls in one forward:", len(syncs), syncs[:3])
    for batch in (16, 64, 128):
        x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=dtype)
        for m in models.values():
            for _ in range(5):
                m(pixel_values=x)
        rates = {k: [] for k in models}
        cpu = {k: [] for k in models}
        for _ in range(9):
            for k, m in models.items():
                torch.cuda.synchronize()
                s = time.perf_counter()
                for _ in range(20):
                    m(pixel_values=x)
                queued = time.perf_counter()
                torch.cuda.synchronize()
                e = time.perf_counter()
                rates[k].append((e - s) / 20 * 1e3)
                cpu[k].append((queued - s) / 20 * 1e3)
        print(
            "batch",
            batch,
            "wall ms/forward",
            {k: round(statistics.median(v), 3) for k, v in rates.items()},
            "host ms/forward until queued",
            {k: round(statistics.median(v), 3) for k, v in cpu.items()},
            "ratio per round",
            [round(t / o, 3) for t, o in zip(rates["transformers"], rates["hf_attention"], strict=True)],
        )
