"""Criss-cross attention: dense attention restricted to row and column, in O(hw(h + w)) memory, maps per pass."""

import pytest
import torch
from einops import rearrange
from feature_maps import CHANNELS, assert_fp16_stays_finite, leave_the_identity
from torch.utils._python_dispatch import TorchDispatchMode

from hf_attention import (
    CrissCrossAttention,
    CrissCrossAttentionConfig,
    CrissCrossAttentionModel,
    build_attention_mask,
    dot_product_attention,
)
from hf_attention.apps.attention_maps import criss_cross_dense


def criss_cross_pattern(height: int, width: int) -> torch.Tensor:
    rows = torch.arange(height).repeat_interleave(width)
    columns = torch.arange(width).repeat(height)
    return (rows[:, None] == rows[None, :]) | (columns[:, None] == columns[None, :])


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (9, 2)])
def test_criss_cross_equals_dense_attention_masked_to_row_and_column(size):
    height, width = size
    module = CrissCrossAttention(CHANNELS, reduction=2, recurrence=1)
    leave_the_identity(module)
    x = torch.randn(2, CHANNELS, height, width)
    pattern = criss_cross_pattern(height, width)
    assert int(pattern.sum(-1).min()) == int(pattern.sum(-1).max()) == height + width - 1  # itself once
    mask = build_attention_mask("eager", torch.zeros(2, height * width, 1), pattern=pattern)
    query, key, value = (
        rearrange(conv(x), "b c h w -> b 1 (h w) c") for conv in (module.query, module.key, module.value)
    )
    dense, probabilities = dot_product_attention(
        module, query, key, value, mask, "eager", scaling=1.0, output_attentions=True
    )
    expected = x + module.gamma * rearrange(dense, "b (h w) 1 c -> b c h w", h=height)
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected, atol=1e-5, rtol=1e-5)
    # the returned map, (batch, 1, h * w, h + w) with the column first, is that dense map on the cross
    model = CrissCrossAttentionModel(CrissCrossAttentionConfig.tiny(recurrence=1))
    model.block.load_state_dict(module.state_dict())
    with torch.no_grad():
        (attention,) = model(x, output_attentions=True).attentions
    assert attention.shape == (2, 1, height * width, height + width)
    dense_map = criss_cross_dense(attention.reshape(2, height, width, height + width))
    torch.testing.assert_close(dense_map, probabilities[:, 0], atol=1e-5, rtol=1e-5)


def test_two_criss_cross_recurrences_connect_every_pair_of_positions():
    x = torch.randn(1, CHANNELS, 6, 5, requires_grad=True)
    for recurrence, reaches_the_corner in ((1, False), (2, True)):
        module = CrissCrossAttention(CHANNELS, reduction=2, recurrence=recurrence)
        leave_the_identity(module)
        (gradient,) = torch.autograd.grad(module(x)[0, :, 0, 0].sum(), x)
        # the opposite corner shares neither row nor column with (0, 0): only a second pass reaches it
        assert bool(gradient[0, :, -1, -1].abs().sum() > 0) is reaches_the_corner


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operation produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        for tensor in output if isinstance(output, tuple | list) else (output,):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return output


def test_criss_cross_never_materialises_the_dense_attention_map():
    height = width = 12
    module = CrissCrossAttention(CHANNELS, reduction=2)
    x = torch.randn(1, CHANNELS, height, width, requires_grad=True)
    with LargestTensor() as tracker:
        module(x).sum().backward()
    assert tracker.largest == height * width * (height + width)  # the joint row + column scores
    assert tracker.largest < (height * width) ** 2 / 5  # the dense map would be (H + W) / HW times larger


def test_float16_scores_never_overflow():
    module = CrissCrossAttention(CHANNELS, reduction=2)
    leave_the_identity(module)
    with torch.no_grad():
        for conv in (module.query, module.key, module.value):
            conv.weight.normal_(0.0, 0.02)
    assert_fp16_stays_finite(module, torch.randn(1, CHANNELS, 5, 6) * 1e4)
