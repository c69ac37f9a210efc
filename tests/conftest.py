import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


BACKENDS = ["eager", "sdpa", "flex_attention"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: threads gain nothing, and on a busy machine their barriers cost 10-100x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def simulate_a_cpu_without_half_precision_kernels(monkeypatch):
    """A CPU whose oneDNN has no bf16 or fp16 kernels (AVX2 only), whatever CPU runs the test, as
    `optimize_for_cpu`'s kernels see it."""
    from hf_attention import cpu_optimization  # here, not at the top: the environment above must be set first

    monkeypatch.setattr(cpu_optimization, "CPU_HAS_HALF_KERNELS", {torch.bfloat16: False, torch.float16: False})
    monkeypatch.setattr(cpu_optimization, "HAS_ONEDNN_BF16_LINEAR", False)
    monkeypatch.setattr(cpu_optimization, "CPU_BF16_DOT_PRODUCT_UNITS", None)
    # every matmul takes the float32 route, however few its rows, so that tiny test shapes exercise it
    monkeypatch.setattr(cpu_optimization, "MIN_MULTIPLY_ADDS_PER_ELEMENT", 0)


@pytest.fixture
def no_half_precision_kernels(monkeypatch):
    simulate_a_cpu_without_half_precision_kernels(monkeypatch)
