"""CompressAI's attention block (Cheng et al., 2020): x + a(x) * sigmoid(b(x)).

Data flow: x -> a: three residual units; b: three residual units and a 1x1 convolution -> x + a * sigmoid(b). The
sigmoid gate is not a query-key attention, so the model returns no attention maps.
"""

import torch
from torch import nn
from torch.nn import functional as F

from .checks import check_feature_map, check_sizes
from .configuration_compressai import CompressAIAttentionConfig
from .feature_map_pretrained import FeatureAttentionPreTrainedModel


class CompressAIResidualUnit(nn.Module):
    """relu(x + conv1x1(relu(conv3x3(relu(conv1x1(x)))))) with an N // 2 bottleneck (CompressAI's ResidualUnit)."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv = nn.Sequential(
            nn.Conv2d(channels, half, 1),
            nn.ReLU(),
            nn.Conv2d(half, half, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(half, channels, 1),
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.relu(hidden_states + self.conv(hidden_states))


class CompressAIAttentionBlock(nn.Module):
    """x + a(x) * sigmoid(b(x)): a is three residual units, b three residual units and a 1x1 convolution.

    Parameter names (`conv_a.0.conv.0.weight`, ..., `conv_b.3.weight`) match `compressai.layers.AttentionBlock`, so
    its state dict loads directly.
    """

    def __init__(self, channels: int):
        super().__init__()
        check_sizes(channels=channels)
        if channels < 2:
            raise ValueError(f"channels must be at least 2 (the residual units use channels // 2), got {channels}.")
        self.channels = channels
        self.conv_a = nn.Sequential(*(CompressAIResidualUnit(channels) for _ in range(3)))
        self.conv_b = nn.Sequential(
            *(CompressAIResidualUnit(channels) for _ in range(3)), nn.Conv2d(channels, channels, 1)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.channels, type(self).__name__, weights_of=self)
        return hidden_states + self.conv_a(hidden_states) * torch.sigmoid(self.conv_b(hidden_states))


class CompressAIAttentionModel(FeatureAttentionPreTrainedModel):
    """[`CompressAIAttentionBlock`]. `hidden_states`: (input, output) feature maps; no `attentions`."""

    config: CompressAIAttentionConfig
    config_class = CompressAIAttentionConfig
    _no_split_modules = ["CompressAIAttentionBlock"]

    def build_block(self, config: CompressAIAttentionConfig) -> nn.Module:
        return CompressAIAttentionBlock(config.num_channels)


__all__ = ["CompressAIAttentionBlock", "CompressAIAttentionModel", "CompressAIResidualUnit"]
