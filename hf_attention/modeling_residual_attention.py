"""Residual Attention Network (Wang et al., 2017): one attention module, (1 + M(x)) * T(x).

Data flow: x -> p pre-activation residual units -> trunk branch T (t units) and soft mask branch M (max-pool down
`mask_depth` times with r units per level, bilinear up-sampling back with skip connections, sigmoid) -> (1 + M) * T
-> p units. The mask is a gate in [0, 1] per channel and position, not a query-key attention, so the model returns
no attention maps.
"""

import torch
from torch import nn
from torch.nn import functional as F

from .checks import check_counts, check_feature_map, check_sizes, reduced
from .configuration_residual_attention import ResidualAttentionConfig
from .feature_map_pretrained import FeatureAttentionPreTrainedModel


class PreActivationResidualUnit(nn.Module):
    """x + conv1x1(relu(bn(conv3x3(relu(bn(conv1x1(relu(bn(x))))))))), bottleneck width channels // 4."""

    def __init__(self, channels: int):
        super().__init__()
        width = reduced(channels, 4)
        self.residual = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, channels, 1, bias=False),
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.residual(hidden_states)


def residual_units(channels: int, count: int) -> nn.Sequential:
    return nn.Sequential(*(PreActivationResidualUnit(channels) for _ in range(count)))


class SoftMaskBranch(nn.Module):
    """Bottom-up (max-pool, r units) `depth` times, then top-down (bilinear up-sampling + skip, r units), sigmoid.

    The lowest resolution gets 2r units as in the paper. Up-sampling targets the exact size each level had on the
    way down, so odd and non-square sizes come back to the input size.
    """

    def __init__(self, channels: int, depth: int, num_units: int):
        super().__init__()
        check_sizes(channels=channels, mask_depth=depth, num_mask_units=num_units)
        self.down = nn.ModuleList(residual_units(channels, num_units) for _ in range(depth))
        self.skips = nn.ModuleList(PreActivationResidualUnit(channels) for _ in range(depth - 1))
        self.bottom = residual_units(channels, num_units)
        self.up = nn.ModuleList(residual_units(channels, num_units) for _ in range(depth - 1))
        self.to_mask = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        sizes, skips = [], []
        for level, down in enumerate(self.down):
            sizes.append(hidden_states.shape[-2:])
            hidden_states = down(F.max_pool2d(hidden_states, kernel_size=3, stride=2, padding=1))
            if level < len(self.skips):
                skips.append(self.skips[level](hidden_states))
        hidden_states = self.bottom(hidden_states)
        for level in reversed(range(len(self.down))):
            hidden_states = F.interpolate(hidden_states, size=sizes[level], mode="bilinear", align_corners=False)
            if level > 0:
                hidden_states = self.up[level - 1](hidden_states + skips[level - 1])
        return torch.sigmoid(self.to_mask(hidden_states))


class ResidualAttentionModule(nn.Module):
    """p units, then (1 + M(x)) * T(x) with trunk T (t units) and soft mask M in [0, 1], then p units.

    Args:
        channels: channels of the feature map, kept throughout.
        num_pre_post_units: the paper's p.
        num_trunk_units: the paper's t.
        num_mask_units: the paper's r.
        mask_depth: down-sampling steps of the mask branch.
    """

    def __init__(
        self,
        channels: int,
        num_pre_post_units: int = 1,
        num_trunk_units: int = 2,
        num_mask_units: int = 1,
        mask_depth: int = 2,
    ):
        super().__init__()
        check_sizes(channels=channels, num_trunk_units=num_trunk_units)
        check_counts(num_pre_post_units=num_pre_post_units)
        self.channels = channels
        self.pre = residual_units(channels, num_pre_post_units)
        self.trunk = residual_units(channels, num_trunk_units)
        self.mask = SoftMaskBranch(channels, mask_depth, num_mask_units)
        self.post = residual_units(channels, num_pre_post_units)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.channels, type(self).__name__, weights_of=self)
        hidden_states = self.pre(hidden_states)
        # attention residual learning: the mask modulates the trunk without ever zeroing it
        attended = (1 + self.mask(hidden_states)) * self.trunk(hidden_states)
        return self.post(attended)


class ResidualAttentionModel(FeatureAttentionPreTrainedModel):
    """[`ResidualAttentionModule`]: (1 + M) * T between p pre- and post-processing units.

    `hidden_states`: (input, output) feature maps. No `attentions`: the soft mask is a gate, not query-key attention.
    """

    config: ResidualAttentionConfig
    config_class = ResidualAttentionConfig
    _no_split_modules = ["ResidualAttentionModule"]

    def build_block(self, config: ResidualAttentionConfig) -> nn.Module:
        return ResidualAttentionModule(
            config.num_channels,
            config.num_pre_post_units,
            config.num_trunk_units,
            config.num_mask_units,
            config.mask_depth,
        )


__all__ = ["PreActivationResidualUnit", "ResidualAttentionModel", "ResidualAttentionModule", "SoftMaskBranch"]
