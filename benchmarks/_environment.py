"""What every benchmark JSON records about where it ran, measured rather than described.

The load average, read when the results are written, says whether other jobs shared the cores: on this project's
2-core machines a second job halves a timing, so a figure is only comparable with one taken at a similar load.
"""

import json
import os
import platform
import sys
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


# glibc hands a freed block of 128 KiB or more back to the system, and the next tensor of that size page-faults on
# every first touch: which model pays depends on what the one before it freed, which moved two models that run the
# same kernels by -6% to +2% between processes (`bench_vit.py`, ViT-S/16 float32). Kept mapped, as a caching
# allocator (jemalloc, tcmalloc) keeps it, freed memory is reused and the page faults leave the comparison.
KEEP_FREED_MEMORY_MAPPED = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}


def keep_freed_memory_mapped() -> None:
    """Restart this script with `KEEP_FREED_MEMORY_MAPPED`, before torch allocates anything; a `MALLOC_*` setting of
    the user's is kept as it is (and recorded by `environment`)."""
    if not any(name.startswith("MALLOC_") for name in os.environ):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **KEEP_FREED_MEMORY_MAPPED})


def environment(threads: int | None = None) -> dict:
    """Machine, library versions and load, as one block of a benchmark's JSON; `threads` defaults to torch's."""
    flags = set(cpu_info("flags").split())
    # glibc's allocator settings, where set: they decide how often large tensors page-fault (a few % of a timing)
    malloc = {name: value for name, value in os.environ.items() if name.startswith("MALLOC_")}
    return {
        "machine": platform.processor() or platform.machine(),
        "cpu_model": cpu_info("model name"),  # the same 2-core VM has been an AMD EPYC (AVX2) and an Intel Xeon (AMX)
        "cpu_family": cpu_info("cpu family"),  # "AMD EPYC" is every Zen: 23 is Zen 1-2, 25 Zen 3-4, 26 Zen 5
        "cpu_cores": os.cpu_count(),
        # without these, bfloat16 matmuls are emulated: much slower than float32, not faster
        "cpu_native_bfloat16": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "torch_threads": threads or torch.get_num_threads(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        **({"malloc_env": malloc} if malloc else {}),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def write_report(path: str | Path, report: dict) -> None:
    """Writes `report` as JSON to `path`, keeping the reports it replaces under "previous", newest first: a new run
    does not erase the figures an older README or issue cites."""
    path = Path(path)
    previous = []
    if path.exists():
        old = json.loads(path.read_text())
        previous = [{key: value for key, value in old.items() if key != "previous"}, *old.get("previous", [])]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**report, "previous": previous} if previous else report, indent=2) + "\n")
