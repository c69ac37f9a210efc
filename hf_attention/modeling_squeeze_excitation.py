"""Squeeze-and-Excitation (Hu et al., 2018): channel attention, alone or gating a ResNet block's residual branch.

Data flow: x -> mean over height and width (squeeze) -> linear, ReLU, linear, sigmoid (excitation) -> one gate in
(0, 1) per channel -> x * gate. SE computes no query-key attention, so it returns no attention maps.
"""

import torch
from torch import nn
from torch.nn import functional as F

from .checks import check_feature_map, check_reduction, check_sizes, reduced
from .configuration_squeeze_excitation import BOTTLENECK_EXPANSION, SqueezeExcitationConfig
from .feature_map_pretrained import FeatureAttentionPreTrainedModel
from .residual_blocks import BasicResidualBlock, BottleneckResidualBlock


class SqueezeExcitation(nn.Module):
    """x * sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2): one gate in (0, 1) per channel, from global context.

    Args:
        channels: channels of the feature map.
        reduction: the bottleneck has max(1, channels // reduction) hidden units; 1 <= reduction <= channels.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        check_sizes(channels=channels)
        check_reduction(reduction, channels)
        self.channels = channels
        self.fc1 = nn.Linear(channels, reduced(channels, reduction))
        self.fc2 = nn.Linear(reduced(channels, reduction), channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.channels, type(self).__name__, weights_of=self)
        squeezed = hidden_states.mean(dim=(2, 3))
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(squeezed))))
        return hidden_states * gate[:, :, None, None]


class SEBasicBlock(BasicResidualBlock):
    """SE-ResNet basic block: the residual branch is gated by `SqueezeExcitation` before the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, reduction: int = 16):
        check_sizes(out_channels=out_channels)
        super().__init__(in_channels, out_channels, stride, SqueezeExcitation(out_channels, reduction))


class SEBottleneckBlock(BottleneckResidualBlock):
    """SE-ResNet bottleneck block: the residual branch is gated by `SqueezeExcitation` before the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, reduction: int = 16):
        check_sizes(out_channels=out_channels)
        attention = SqueezeExcitation(out_channels, reduction)
        super().__init__(in_channels, out_channels, stride, attention, expansion=BOTTLENECK_EXPANSION)


class SqueezeExcitationModel(FeatureAttentionPreTrainedModel):
    """[`SqueezeExcitation`], [`SEBasicBlock`] or [`SEBottleneckBlock`], as `config.block_type` says.

    `hidden_states`: (input, output) feature maps. No `attentions`: SE weighs channels, it attends over no keys.
    """

    config: SqueezeExcitationConfig
    config_class = SqueezeExcitationConfig
    _no_split_modules = ["SqueezeExcitation", "SEBasicBlock", "SEBottleneckBlock"]

    def build_block(self, config: SqueezeExcitationConfig) -> nn.Module:
        if config.block_type == "layer":
            return SqueezeExcitation(config.num_channels, config.reduction)
        block_class = SEBasicBlock if config.block_type == "basic" else SEBottleneckBlock
        return block_class(
            config.num_channels, config.out_channels or config.num_channels, config.stride, config.reduction
        )


__all__ = ["SEBasicBlock", "SEBottleneckBlock", "SqueezeExcitation", "SqueezeExcitationModel"]
