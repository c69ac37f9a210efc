"""CompressAI's attention block: its formula, CompressAI's weight names, and parity with CompressAI itself."""

import pytest
import torch
from feature_maps import CHANNELS

from hf_attention import CompressAIAttentionBlock


def test_compressai_block_equals_its_formula_and_uses_compressai_names():
    block = CompressAIAttentionBlock(CHANNELS)
    x = torch.randn(2, CHANNELS, 5, 6)

    def residual_unit(unit, t):
        return torch.relu(t + unit.conv(t))

    a, b = x, x
    for unit in block.conv_a:
        a = residual_unit(unit, a)
    for unit in block.conv_b[:3]:
        b = residual_unit(unit, b)
    b = block.conv_b[3](b)
    torch.testing.assert_close(block(x), x + a * torch.sigmoid(b))
    names = set(block.state_dict())
    assert {f"conv_a.{i}.conv.{j}.weight" for i in range(3) for j in (0, 2, 4)} <= names
    assert {"conv_b.3.weight", "conv_b.3.bias"} <= names and len(names) == 38


def test_compressai_parity_when_it_imports():
    try:
        layers = pytest.importorskip("compressai.layers")
    except Exception as error:  # compressai imports torchvision, whose CUDA build fails next to a CPU torch
        pytest.skip(f"compressai does not import here: {error}")
    reference = layers.AttentionBlock(CHANNELS).eval()
    ours = CompressAIAttentionBlock(CHANNELS).eval()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, CHANNELS, 7, 5)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))
