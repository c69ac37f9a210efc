#!/usr/bin/env bash
# Builds a second virtual environment in which timm, vit-pytorch, linformer and CompressAI import, then runs the
# parity tests against them and the timm speed comparison. The README's own commands stay on the CPU torch 2.13.0:
# PyPI's torchvision does not load next to it ('operator torchvision::nms does not exist'), while torch 2.14.1 +
# torchvision 0.29.1 come as a matching pair from this machine's local wheel files (a CUDA build, ~5.5 GB, that runs
# on the CPU).
#
#   bash benchmarks/setup_reference_venv.sh            # build /tmp/refvenv (if missing), run tests + benchmark
#   REFVENV=/other/path bash benchmarks/setup_reference_venv.sh
#   SKIP_BENCH=1 bash benchmarks/setup_reference_venv.sh   # parity tests only
#   BENCH_CASES="fp32 bf16" bash benchmarks/setup_reference_venv.sh   # add bf16 on a CPU with native bf16
set -euo pipefail
REFVENV="${REFVENV:-/tmp/refvenv}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -x "$REFVENV/bin/python" ]; then
    python -m venv "$REFVENV"
fi
PY="$REFVENV/bin/python"
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
    "$PY" -m pip install torch==2.14.1 torchvision==0.29.1
fi
if ! "$PY" -c "import timm, vit_pytorch, linformer, compressai" 2>/dev/null; then
    "$PY" -m pip install timm vit-pytorch linformer compressai
fi
if ! "$PY" -c "import hf_attention" 2>/dev/null; then
    # torch 2.14.1 above already satisfies "torch>=2.13.0", so pip keeps it.
    "$PY" -m pip install -e "$REPO[dev]"
fi
cd "$REPO"
"$PY" -m pytest -q tests/test_reference_libraries.py -rs
if [ -z "${SKIP_BENCH:-}" ]; then
    # its own JSON: these figures come from torch 2.14.1, the main table's from 2.13.0
    # bf16 only where the CPU has it natively (AVX-512 bf16 / AMX): elsewhere it runs ~9x slower than fp32
    "$PY" benchmarks/bench_vit.py --against-timm --cases ${BENCH_CASES:-fp32} --out benchmarks/results/vit_timm_cpu.json
fi
