"""Squeeze-and-Excitation: the gate formula and the SE residual blocks of the paper."""

import pytest
import torch
from feature_maps import CHANNELS

from hf_attention import BasicResidualBlock, CrissCrossAttention, SEBasicBlock, SEBottleneckBlock, SqueezeExcitation


def test_squeeze_excitation_equals_its_formula():
    layer = SqueezeExcitation(CHANNELS, reduction=4)
    x = torch.randn(3, CHANNELS, 5, 7)
    squeezed = x.mean(dim=(2, 3))
    hidden = torch.relu(squeezed @ layer.fc1.weight.T + layer.fc1.bias)
    gate = torch.sigmoid(hidden @ layer.fc2.weight.T + layer.fc2.bias)
    assert layer.fc1.out_features == 2
    torch.testing.assert_close(layer(x), x * gate[:, :, None, None])


@pytest.mark.parametrize("stride", [1, 2])
def test_se_residual_blocks_gate_the_residual_branch(stride):
    x = torch.randn(2, CHANNELS, 7, 6)
    basic = SEBasicBlock(CHANNELS, CHANNELS, stride=stride, reduction=2).eval()
    residual = basic.bn2(basic.conv2(basic.conv1(x)))
    torch.testing.assert_close(basic(x), torch.relu(basic.attention(residual) + basic.shortcut(x)))
    assert isinstance(basic.attention, SqueezeExcitation)
    # a strided block of constant width still adds up: the shortcut projects (the seed's block does not)
    assert basic(x).shape == (2, CHANNELS, 4 if stride == 2 else 7, 3 if stride == 2 else 6)
    bottleneck = SEBottleneckBlock(CHANNELS, 16, stride=stride, reduction=2).eval()
    residual = bottleneck.bn3(bottleneck.conv3(bottleneck.conv2(bottleneck.conv1(x))))
    torch.testing.assert_close(bottleneck(x), torch.relu(bottleneck.attention(residual) + bottleneck.shortcut(x)))
    assert bottleneck.conv2[0].out_channels == 4  # 16 / expansion 4


def test_basic_residual_block_accepts_any_attention_module():
    block = BasicResidualBlock(CHANNELS, CHANNELS, attention=CrissCrossAttention(CHANNELS, reduction=2)).eval()
    x = torch.randn(1, CHANNELS, 5, 5)
    torch.testing.assert_close(block(x), torch.relu(block.attention(block.bn2(block.conv2(block.conv1(x)))) + x))
