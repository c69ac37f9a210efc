"""DANet's dual attention head (Fu et al., 2019): position attention + channel attention, summed.

Data flow: x -> two branches, each conv3x3 in (to inner channels) -> attention -> conv3x3 out; output = sum.
- position attention: x + gamma * V softmax(Q^T K), every position attending to every position, through
  `attention.dot_product_attention` (so eager, sdpa, flex or a registered kernel runs it);
- channel attention: x + gamma * softmax(max(E) - E) X with the channel affinity E = X X^T over positions.
Both gammas start at 0. Scores and affinities are computed in float32 whatever the input dtype.

`output_attentions=True` returns, per DANet head, the position map as `attentions` (batch, 1, h * w, h * w), queries
and keys the row-major positions of the inner feature map, and the channel map as `channel_attentions`
(batch, 1, inner_channels, inner_channels), row c the weights channel c gives every channel.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs

from .attention import attend_over_positions, current_implementation
from .checks import check_feature_map, check_reduction, check_sizes, reduced
from .configuration_dual_attention import DualAttentionConfig, dual_attention_inner_channels
from .feature_map_pretrained import FeatureAttentionPreTrainedModel, init_query_key_, recorded_with_attentions
from .layers import AttentionMap
from .residual_blocks import conv_bn_relu


class ChannelAttentionMap(nn.Module):
    """Passes DANet's channel attention (batch, 1, channels, channels) through unchanged, for output capturing."""

    def forward(self, probabilities: torch.Tensor) -> torch.Tensor:
        return probabilities


class PositionAttention(nn.Module):
    """x + gamma * V softmax(Q^T K): every position attends to every position. gamma starts at 0.

    Queries and keys are 1x1 convolutions to max(1, channels // reduction) channels, values keep `channels`.
    The attention goes through `dot_product_attention`, so `attn_implementation` (or the live
    `config._attn_implementation`) picks the kernel.
    """

    def __init__(self, channels: int, reduction: int = 8, attn_implementation: str = "sdpa", config=None):
        super().__init__()
        check_sizes(channels=channels)
        check_reduction(reduction, channels)
        self.channels = channels
        self.query = nn.Conv2d(channels, reduced(channels, reduction), 1)
        self.key = nn.Conv2d(channels, reduced(channels, reduction), 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.attention_map = AttentionMap()
        self.attn_implementation = attn_implementation
        self.config = config
        self.init_start_values()

    @torch.no_grad()
    def init_start_values(self) -> None:
        init.zeros_(self.gamma)
        init_query_key_(self.query)
        init_query_key_(self.key)

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False) -> torch.Tensor:
        check_feature_map(hidden_states, self.channels, type(self).__name__, weights_of=self)
        query, key, value = self.query(hidden_states), self.key(hidden_states), self.value(hidden_states)
        attended, probabilities = attend_over_positions(
            self, query, key, value, current_implementation(self), output_attentions
        )
        if probabilities is not None:
            self.attention_map(probabilities)
        return hidden_states + self.gamma * attended


class ChannelAttention(nn.Module):
    """x + gamma * softmax(max(E) - E) X with channel affinity E = X X^T over positions. gamma starts at 0.

    max - energy (DANet's choice) makes channels that are *less* similar attend to each other more, and keeps the
    exponentials bounded: every logit is <= max - min of its row. The affinities are summed over all positions, so
    they are computed in float32 (in float16 they overflow for features of a few hundred). No parameter besides gamma.
    """

    def __init__(self, channels: int):
        super().__init__()
        check_sizes(channels=channels)
        self.channels = channels
        self.gamma = nn.Parameter(torch.zeros(1))
        self.attention_map = ChannelAttentionMap()

    @torch.no_grad()
    def init_start_values(self) -> None:
        init.zeros_(self.gamma)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.channels, type(self).__name__, weights_of=self)
        flat = hidden_states.flatten(2).float()  # (batch, channels, positions)
        energy = torch.bmm(flat, flat.transpose(1, 2))
        energy = energy.amax(dim=-1, keepdim=True) - energy
        probabilities = self.attention_map(torch.softmax(energy, dim=-1)[:, None])
        attended = torch.matmul(probabilities[:, 0], flat).view_as(hidden_states).to(hidden_states.dtype)
        return hidden_states + self.gamma * attended


class DualAttention(nn.Module):
    """DANet's head: a position branch and a channel branch, each conv3x3 in -> attention -> conv3x3 out, summed.

    Args:
        channels: channels of the input and of the output.
        inner_channels: channels inside each branch, default max(1, channels // 4).
        reduction: query/key reduction of the position attention, 1 <= reduction <= inner channels.
        attn_implementation: kernel of the position attention when no config drives the block.
        config: a `PreTrainedConfig` whose live `_attn_implementation` overrides `attn_implementation`.
    """

    def __init__(
        self,
        channels: int,
        inner_channels: int | None = None,
        reduction: int = 8,
        attn_implementation: str = "sdpa",
        config=None,
    ):
        super().__init__()
        check_sizes(channels=channels, inner_channels=inner_channels)
        inner = dual_attention_inner_channels(channels, inner_channels)
        self.channels = channels
        self.position_in = conv_bn_relu(channels, inner)
        self.position_attention = PositionAttention(inner, reduction, attn_implementation, config)
        self.position_out = conv_bn_relu(inner, channels)
        self.channel_in = conv_bn_relu(channels, inner)
        self.channel_attention = ChannelAttention(inner)
        self.channel_out = conv_bn_relu(inner, channels)

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False) -> torch.Tensor:
        check_feature_map(hidden_states, self.channels, type(self).__name__, weights_of=self)
        position = self.position_attention(self.position_in(hidden_states), output_attentions)
        channel = self.channel_attention(self.channel_in(hidden_states))
        return self.position_out(position) + self.channel_out(channel)


@dataclass
class DualAttentionModelOutput(BaseModelOutput):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
        The feature map after the DANet head.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
        The feature map before and after the head.
    attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
        The position attention, (batch_size, 1, height * width, height * width).
    channel_attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
        The channel attention, (batch_size, 1, inner_channels, inner_channels).
    """

    channel_attentions: tuple[torch.FloatTensor, ...] | None = None


class DualAttentionModel(FeatureAttentionPreTrainedModel):
    """[`DualAttention`]: DANet's position + channel attention head."""

    config: DualAttentionConfig
    config_class = DualAttentionConfig
    _no_split_modules = ["DualAttention"]
    _supports_attention_backend = True
    _can_record_outputs = {"attentions": AttentionMap, "channel_attentions": ChannelAttentionMap}
    output_class = DualAttentionModelOutput

    def build_block(self, config: DualAttentionConfig) -> nn.Module:
        return DualAttention(config.num_channels, config.inner_channels, config.reduction, config=config)

    def run_block(self, hidden_states: torch.Tensor, output_attentions: bool) -> torch.Tensor:
        return self.block(hidden_states, output_attentions)

    @recorded_with_attentions("channel_attentions")
    def forward(self, hidden_states: torch.Tensor | None = None, **kwargs: Unpack[TransformersKwargs]):
        r"""
        hidden_states (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The feature map to attend over, any height and width.
        """
        return super().forward(hidden_states, **kwargs)


__all__ = ["ChannelAttention", "DualAttention", "DualAttentionModel", "DualAttentionModelOutput", "PositionAttention"]
