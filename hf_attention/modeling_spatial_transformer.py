"""Spatial Transformer Network (Jaderberg et al., 2015): a learned affine warp of the feature map.

Data flow: x -> localisation network (two 3x3 convolutions, average-pooled to a fixed size) -> MLP -> six affine
parameters theta -> `affine_grid` -> `grid_sample` of x. The regressor starts at the identity transform. The STN
computes no query-key attention, so it returns no attention maps (its transforms come from `affine_transform`).
"""

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init

from .checks import check_feature_map, check_sizes
from .configuration_spatial_transformer import SpatialTransformerConfig
from .feature_map_pretrained import FeatureAttentionPreTrainedModel

IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class SpatialTransformer(nn.Module):
    """Resample the feature map with an affine transform that a localisation network predicts from it.

    The last layer of the regressor starts at zero weight and identity bias, so an untrained transformer returns
    its input. The localisation features are average-pooled to `pooled_size` x `pooled_size`, so any input size works.

    Args:
        channels: channels of the feature map.
        localisation_channels: channels of the localisation network's two 3x3 convolutions.
        pooled_size: side of the pooled localisation features.
        hidden_size: hidden units of the affine regressor.
    """

    def __init__(self, channels: int, localisation_channels: int = 16, pooled_size: int = 4, hidden_size: int = 32):
        super().__init__()
        check_sizes(
            channels=channels,
            localisation_channels=localisation_channels,
            pooled_size=pooled_size,
            hidden_size=hidden_size,
        )
        self.channels = channels
        self.localisation = nn.Sequential(
            nn.Conv2d(channels, localisation_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(localisation_channels, localisation_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(pooled_size),
            nn.Flatten(),
        )
        self.fc = nn.Linear(localisation_channels * pooled_size**2, hidden_size)
        self.theta = nn.Linear(hidden_size, 6)  # the affine parameters
        self.init_start_values()

    @torch.no_grad()
    def init_start_values(self) -> None:
        """The regressor starts at zero weight and identity bias: an untrained transformer returns its input."""
        init.zeros_(self.theta.weight)
        init.copy_(self.theta.bias, torch.tensor(IDENTITY_AFFINE, device=self.theta.bias.device))

    def affine_transform(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The (batch, 2, 3) affine matrices, in the normalised [-1, 1] coordinates of `affine_grid`."""
        features = F.relu(self.fc(self.localisation(hidden_states)))
        return self.theta(features).view(-1, 2, 3)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.channels, type(self).__name__, weights_of=self)
        if hidden_states.shape[0] == 0:  # affine_grid refuses an empty batch; warping no map gives no map
            return hidden_states.clone()
        theta = self.affine_transform(hidden_states)
        # align_corners=False samples pixel centres, so the identity transform reproduces the input exactly
        grid = F.affine_grid(theta.to(hidden_states.dtype), size=list(hidden_states.shape), align_corners=False)
        return F.grid_sample(hidden_states, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class SpatialTransformerModel(FeatureAttentionPreTrainedModel):
    """[`SpatialTransformer`]; an untrained model returns its input.

    `hidden_states`: (input, warped output). No `attentions`: the warp is a resampling, not a query-key attention.
    """

    config: SpatialTransformerConfig
    config_class = SpatialTransformerConfig
    _no_split_modules = ["SpatialTransformer"]

    def build_block(self, config: SpatialTransformerConfig) -> nn.Module:
        return SpatialTransformer(
            config.num_channels, config.localisation_channels, config.pooled_size, config.hidden_size
        )


__all__ = ["SpatialTransformer", "SpatialTransformerModel"]
