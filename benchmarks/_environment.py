"""What every benchmark JSON records about where it ran, measured rather than described.

The load average, read when the results are written, says whether other jobs shared the cores: on this project's
2-core machines a second job halves a timing, so a figure is only comparable with one taken at a similar load.
"""

import os
import platform
from pathlib import Path

import torch
import transformers


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux), empty where /proc/cpuinfo is not there."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def environment(threads: int | None = None) -> dict:
    """Machine, library versions and load, as one block of a benchmark's JSON; `threads` defaults to torch's."""
    flags = cpu_flags()
    return {
        "machine": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        # without these, bfloat16 matmuls are emulated: much slower than float32, not faster
        "cpu_native_bfloat16": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "torch_threads": threads or torch.get_num_threads(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
