"""DANet: position and channel attention equal their formulas; both maps are returned, in float32 affinities."""

import pytest
import torch
from einops import rearrange
from feature_maps import CHANNELS, assert_fp16_stays_finite, leave_the_identity

from hf_attention import ChannelAttention, DualAttentionConfig, DualAttentionModel, PositionAttention


def position_attention_formula(module: PositionAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    query, key, value = (
        rearrange(conv(x), "b c h w -> b c (h w)") for conv in (module.query, module.key, module.value)
    )
    attention = torch.softmax(query.transpose(1, 2) @ key, dim=-1)  # (b, positions, positions), rows sum to 1
    out = value @ attention.transpose(1, 2)
    return x + module.gamma * out.view_as(x), attention


def channel_attention_formula(module: ChannelAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.flatten(2)
    energy = flat @ flat.transpose(1, 2)
    attention = torch.softmax(energy.max(dim=-1, keepdim=True).values - energy, dim=-1)
    return x + module.gamma * (attention @ flat).view_as(x), attention


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_position_attention_equals_its_formula(implementation):
    module = PositionAttention(CHANNELS, reduction=2, attn_implementation=implementation)
    leave_the_identity(module)
    x = torch.randn(2, CHANNELS, 5, 3)
    with torch.no_grad():
        torch.testing.assert_close(module(x), position_attention_formula(module, x)[0], atol=1e-5, rtol=1e-5)


def test_channel_attention_equals_its_formula():
    module = ChannelAttention(CHANNELS)
    leave_the_identity(module)
    x = torch.randn(2, CHANNELS, 4, 5)
    torch.testing.assert_close(module(x), channel_attention_formula(module, x)[0])


def test_dual_attention_sums_its_branches_and_returns_both_maps():
    model = DualAttentionModel(DualAttentionConfig(num_channels=CHANNELS, inner_channels=4, reduction=2)).eval()
    leave_the_identity(model)
    block, x = model.block, torch.randn(2, CHANNELS, 6, 5)
    with torch.no_grad():
        inner_position, inner_channel = block.position_in(x), block.channel_in(x)
        position, position_map = position_attention_formula(block.position_attention, inner_position)
        channel, channel_map = channel_attention_formula(block.channel_attention, inner_channel)
        output = model(x, output_attentions=True)
    expected = block.position_out(position) + block.channel_out(channel)
    torch.testing.assert_close(output.last_hidden_state, expected, atol=1e-5, rtol=1e-5)
    (returned_position,), (returned_channel,) = output.attentions, output.channel_attentions
    assert returned_position.shape == (2, 1, 30, 30) and returned_channel.shape == (2, 1, 4, 4)
    torch.testing.assert_close(returned_position[:, 0], position_map, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(returned_channel[:, 0], channel_map, atol=1e-5, rtol=1e-5)
    assert model(x).channel_attentions is None


def test_float16_affinities_never_overflow():
    x = torch.randn(1, CHANNELS, 5, 6) * 1e4
    channel = ChannelAttention(CHANNELS)
    leave_the_identity(channel)
    assert torch.isinf(x.half().flatten(2) @ x.half().flatten(2).transpose(1, 2)).any()  # the naive affinity
    assert_fp16_stays_finite(channel, x)
    position = PositionAttention(CHANNELS, reduction=2, attn_implementation="sdpa")
    leave_the_identity(position)
    with torch.no_grad():
        for conv in (position.query, position.key, position.value):
            conv.weight.normal_(0.0, 0.02)
    assert_fp16_stays_finite(position, x)
