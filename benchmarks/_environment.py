"""What every benchmark JSON records about where it ran, measured rather than described.

The load average, read when the results are written, says whether other jobs shared the cores: on this project's
2-core machines a second job halves a timing, so a figure is only comparable with one taken at a similar load.
"""

import os
import platform
from pathlib import Path

import torch
import transformers


def cpu_info(field: str) -> str:
    """One field of the first CPU in /proc/cpuinfo (Linux): "flags", "model name"; empty where it is not there."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return ""
    for line in cpuinfo.read_text().splitlines():
        if line.split(":", 1)[0].strip() == field:
            return line.split(":", 1)[1].strip()
    return ""


def environment(threads: int | None = None) -> dict:
    """Machine, library versions and load, as one block of a benchmark's JSON; `threads` defaults to torch's."""
    flags = set(cpu_info("flags").split())
    return {
        "machine": platform.processor() or platform.machine(),
        "cpu_model": cpu_info("model name"),  # the same 2-core VM has been an AMD EPYC (AVX2) and an Intel Xeon (AMX)
        "cpu_family": cpu_info("cpu family"),  # "AMD EPYC" is every Zen: 23 is Zen 1-2, 25 Zen 3-4, 26 Zen 5
        "cpu_cores": os.cpu_count(),
        # without these, bfloat16 matmuls are emulated: much slower than float32, not faster
        "cpu_native_bfloat16": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "torch_threads": threads or torch.get_num_threads(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
