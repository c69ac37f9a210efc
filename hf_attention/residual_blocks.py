"""ResNet residual blocks that carry a feature-map attention block: the squeeze-and-excitation networks and the
attention CNN build on them."""

import torch
from torch import nn
from torch.nn import functional as F

from .checks import check_feature_map, check_sizes


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    # the seed's block projects only when the width changes, so a strided block of constant width fails to add up
    if in_channels == out_channels and stride == 1:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


class BasicResidualBlock(nn.Module):
    """ResNet basic block, relu(attention(bn(conv3x3(relu(bn(conv3x3(x)))))) + shortcut(x)).

    `attention` (any shape-preserving module, e.g. `SqueezeExcitation`) gates the residual branch before the sum.
    The shortcut is a strided 1x1 convolution whenever the width or the resolution changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, attention: nn.Module | None = None):
        super().__init__()
        check_sizes(in_channels=in_channels, out_channels=out_channels, stride=stride)
        self.in_channels = in_channels
        self.conv1 = conv_bn_relu(in_channels, out_channels, stride=stride)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.attention = attention or nn.Identity()
        self.shortcut = shortcut(in_channels, out_channels, stride)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.in_channels, type(self).__name__, weights_of=self)
        residual = self.attention(self.bn2(self.conv2(self.conv1(hidden_states))))
        return F.relu(residual + self.shortcut(hidden_states))


class BottleneckResidualBlock(nn.Module):
    """ResNet bottleneck block: 1x1 down to out_channels / expansion, 3x3 (strided), 1x1 up, attention, + shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        attention: nn.Module | None = None,
        expansion: int = 4,
    ):
        super().__init__()
        check_sizes(in_channels=in_channels, out_channels=out_channels, stride=stride, expansion=expansion)
        if out_channels % expansion:
            raise ValueError(f"out_channels must be a multiple of {expansion}, got {out_channels}.")
        width = out_channels // expansion
        self.in_channels = in_channels
        self.conv1 = conv_bn_relu(in_channels, width, kernel_size=1)
        self.conv2 = conv_bn_relu(width, width, stride=stride)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.attention = attention or nn.Identity()
        self.shortcut = shortcut(in_channels, out_channels, stride)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.in_channels, type(self).__name__, weights_of=self)
        residual = self.bn3(self.conv3(self.conv2(self.conv1(hidden_states))))
        return F.relu(self.attention(residual) + self.shortcut(hidden_states))


__all__ = ["BasicResidualBlock", "BottleneckResidualBlock", "conv_bn_relu", "shortcut"]
