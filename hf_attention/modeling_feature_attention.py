"""Attention blocks for CNN feature maps, each a plain `nn.Module` on (batch, channels, height, width) tensors.

- `SqueezeExcitation`, `SEBasicBlock`, `SEBottleneckBlock`: channel attention (Hu et al., 2018).
- `SpatialTransformer`: a learned affine warp (Jaderberg et al., 2015).
- `ResidualAttentionModule`: trunk T and soft mask M, (1 + M) * T (Wang et al., 2017).
- `PositionAttention`, `ChannelAttention`, `DualAttention`: DANet (Fu et al., 2019).
- `NonLocalBlock`: non-local neural networks (Wang et al., 2018).
- `CrissCrossAttention`: CCNet (Huang et al., 2019), row + column attention in O(HW(H+W)) memory.
- `CompressAIAttentionBlock`: the attention block of CompressAI (Cheng et al., 2020).

No block fixes a height, a width or a channel count, and none needs a compiled extension. Every block is also
wrapped as a `PreTrainedModel` (`SqueezeExcitationModel`, ...) that saves to safetensors and loads with `AutoModel`.
"""

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils.generic import can_return_tuple

from .attention import dot_product_attention, masked_softmax
from .configuration_feature_attention import (
    BOTTLENECK_EXPANSION,
    CompressAIAttentionConfig,
    CrissCrossAttentionConfig,
    DualAttentionConfig,
    NonLocalConfig,
    ResidualAttentionConfig,
    SpatialTransformerConfig,
    SqueezeExcitationConfig,
)
from .pretrained import HFAttentionPreTrainedModel


def check_feature_map(hidden_states: torch.Tensor, channels: int, block: str) -> None:
    """Raise unless `hidden_states` is a (batch, channels, height, width) feature map."""
    if hidden_states.dim() != 4:
        raise ValueError(
            f"{block} expects a feature map of shape (batch, {channels}, height, width), "
            f"got a {hidden_states.dim()}-D tensor of shape {tuple(hidden_states.shape)}."
        )
    if hidden_states.shape[1] != channels:
        raise ValueError(f"{block} was built for {channels} channels, got a feature map with {hidden_states.shape[1]}.")


def reduced(channels: int, reduction: int) -> int:
    """Width of a bottleneck: channels // reduction, never less than one channel."""
    return max(1, channels // reduction)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def attend_over_positions(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_implementation: str | None
) -> torch.Tensor:
    """softmax(Q K^T) V between all positions of two feature maps, through `dot_product_attention`.

    query (b, c, h, w), key (b, c, h', w'), value (b, c_v, h', w') -> (b, c_v, h, w). Unscaled, as in the
    non-local and DANet papers; one head.
    """
    height = query.shape[-2]
    query, key, value = (rearrange(t, "b c h w -> b 1 (h w) c") for t in (query, key, value))
    output, _ = dot_product_attention(module, query, key, value, None, attn_implementation, scaling=1.0)
    return rearrange(output, "b (h w) 1 c -> b c h w", h=height)


class ZeroInitConv2d(nn.Conv2d):
    """A convolution that starts at zero, so the residual branch it ends adds nothing until trained."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class ZeroInitBatchNorm2d(nn.BatchNorm2d):
    """A batch norm whose scale starts at zero, so the residual branch it ends adds nothing until trained."""

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.zeros_(self.weight)


class AttentionBackendMixin:
    """The attention implementation: the one given at construction, unless a model config overrides it live."""

    def current_implementation(self) -> str:
        return getattr(self.config, "_attn_implementation", None) or self.attn_implementation


# --- 1. Squeeze-and-Excitation ---------------------------------------------------------------------------------


class SqueezeExcitation(nn.Module):
    """x * sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2): one gate in (0, 1) per channel, from global context.

    Args:
        channels: channels of the feature map.
        reduction: the bottleneck has max(1, channels // reduction) hidden units.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.channels = channels
        self.fc1 = nn.Linear(channels, reduced(channels, reduction))
        self.fc2 = nn.Linear(reduced(channels, reduction), channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.channels, type(self).__name__)
        squeezed = hidden_states.mean(dim=(2, 3))
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(squeezed))))
        return hidden_states * gate[:, :, None, None]


class BasicResidualBlock(nn.Module):
    """ResNet basic block, relu(attention(bn(conv3x3(relu(bn(conv3x3(x)))))) + shortcut(x)).

    `attention` (any shape-preserving module, e.g. `SqueezeExcitation`) gates the residual branch before the sum.
    The shortcut is a strided 1x1 convolution whenever the width or the resolution changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, attention: nn.Module | None = None):
        super().__init__()
        self.in_channels = in_channels
        self.conv1 = conv_bn_relu(in_channels, out_channels, stride=stride)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.attention = attention or nn.Identity()
        self.shortcut = shortcut(in_channels, out_channels, stride)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.in_channels, type(self).__name__)
        residual = self.attention(self.bn2(self.conv2(self.conv1(hidden_states))))
        return F.relu(residual + self.shortcut(hidden_states))


class BottleneckResidualBlock(nn.Module):
    """ResNet bottleneck block: 1x1 down to out_channels / 4, 3x3 (strided), 1x1 up, optional attention, + shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, attention: nn.Module | None = None):
        super().__init__()
        if out_channels % BOTTLENECK_EXPANSION:
            raise ValueError(f"out_channels must be a multiple of {BOTTLENECK_EXPANSION}, got {out_channels}.")
        width = out_channels // BOTTLENECK_EXPANSION
        self.in_channels = in_channels
        self.conv1 = conv_bn_relu(in_channels, width, kernel_size=1)
        self.conv2 = conv_bn_relu(width, width, stride=stride)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.attention = attention or nn.Identity()
        self.shortcut = shortcut(in_channels, out_channels, stride)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.in_channels, type(self).__name__)
        residual = self.bn3(self.conv3(self.conv2(self.conv1(hidden_states))))
        return F.relu(self.attention(residual) + self.shortcut(hidden_states))


def shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    # the seed's block projects only when the width changes, so a strided block of constant width fails to add up
    if in_channels == out_channels and stride == 1:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


class SEBasicBlock(BasicResidualBlock):
    """SE-ResNet basic block: the residual branch is gated by `SqueezeExcitation` before the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, reduction: int = 16):
        super().__init__(in_channels, out_channels, stride, SqueezeExcitation(out_channels, reduction))


class SEBottleneckBlock(BottleneckResidualBlock):
    """SE-ResNet bottleneck block: the residual branch is gated by `SqueezeExcitation` before the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, reduction: int = 16):
        super().__init__(in_channels, out_channels, stride, SqueezeExcitation(out_channels, reduction))


# --- 2. Spatial Transformer Network --------------------------------------------------------------------------------

IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class IdentityAffineRegressor(nn.Linear):
    """Linear layer to the six affine parameters that starts at zero weight and identity bias."""

    def __init__(self, in_features: int):
        super().__init__(in_features, 6)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        with torch.no_grad():
            self.bias.copy_(torch.tensor(IDENTITY_AFFINE))


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
        self.theta = IdentityAffineRegressor(hidden_size)

    def affine_transform(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The (batch, 2, 3) affine matrices, in the normalised [-1, 1] coordinates of `affine_grid`."""
        features = F.relu(self.fc(self.localisation(hidden_states)))
        return self.theta(features).view(-1, 2, 3)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.channels, type(self).__name__)
        theta = self.affine_transform(hidden_states)
        # align_corners=False samples pixel centres, so the identity transform reproduces the input exactly
        grid = F.affine_grid(theta.to(hidden_states.dtype), list(hidden_states.shape), align_corners=False)
        return F.grid_sample(hidden_states, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# --- 3. Residual Attention Network ---------------------------------------------------------------------------------


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
        self.channels = channels
        self.pre = residual_units(channels, num_pre_post_units)
        self.trunk = residual_units(channels, num_trunk_units)
        self.mask = SoftMaskBranch(channels, mask_depth, num_mask_units)
        self.post = residual_units(channels, num_pre_post_units)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.channels, type(self).__name__)
        hidden_states = self.pre(hidden_states)
        # attention residual learning: the mask modulates the trunk without ever zeroing it
        attended = (1 + self.mask(hidden_states)) * self.trunk(hidden_states)
        return self.post(attended)


# --- 4. DANet dual attention ---------------------------------------------------------------------------------------


class PositionAttention(AttentionBackendMixin, nn.Module):
    """x + gamma * V softmax(Q^T K): every position attends to every position. gamma starts at 0.

    Queries and keys are 1x1 convolutions to max(1, channels // reduction) channels, values keep `channels`.
    The attention goes through `dot_product_attention`, so `attn_implementation` (or `config._attn_implementation`)
    picks the kernel.
    """

    def __init__(self, channels: int, reduction: int = 8, attn_implementation: str = "sdpa", config=None):
        super().__init__()
        self.channels = channels
        self.query = nn.Conv2d(channels, reduced(channels, reduction), 1)
        self.key = nn.Conv2d(channels, reduced(channels, reduction), 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.attn_implementation = attn_implementation
        self.config = config

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.channels, type(self).__name__)
        query, key, value = self.query(hidden_states), self.key(hidden_states), self.value(hidden_states)
        attended = attend_over_positions(self, query, key, value, self.current_implementation())
        return hidden_states + self.gamma * attended


class ChannelAttention(nn.Module):
    """x + gamma * softmax(max(E) - E) X with channel affinity E = X X^T over positions. gamma starts at 0.

    max - energy (DANet's choice) makes channels that are *less* similar attend to each other more, and keeps the
    exponentials bounded: every logit is <= max - min of its row. No parameter besides gamma.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.channels, type(self).__name__)
        flat = rearrange(hidden_states, "b c h w -> b c (h w)")
        energy = torch.bmm(flat, flat.transpose(1, 2)).float()
        energy = energy.amax(dim=-1, keepdim=True) - energy
        attention = torch.softmax(energy, dim=-1).to(flat.dtype)
        attended = torch.bmm(attention, flat).view_as(hidden_states)
        return hidden_states + self.gamma * attended


class DualAttention(nn.Module):
    """DANet's head: a position branch and a channel branch, each conv3x3 in -> attention -> conv3x3 out, summed.

    Args:
        channels: channels of the input and of the output.
        inner_channels: channels inside each branch, default max(1, channels // 4).
        reduction: query/key reduction of the position attention.
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
        inner = inner_channels or reduced(channels, 4)
        self.channels = channels
        self.position_in = conv_bn_relu(channels, inner)
        self.position_attention = PositionAttention(inner, reduction, attn_implementation, config)
        self.position_out = conv_bn_relu(inner, channels)
        self.channel_in = conv_bn_relu(channels, inner)
        self.channel_attention = ChannelAttention(inner)
        self.channel_out = conv_bn_relu(inner, channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.channels, type(self).__name__)
        position = self.position_out(self.position_attention(self.position_in(hidden_states)))
        channel = self.channel_out(self.channel_attention(self.channel_in(hidden_states)))
        return position + channel


# --- 5. Non-local block --------------------------------------------------------------------------------------------


class NonLocalBlock(AttentionBackendMixin, nn.Module):
    """z = x + W y, y_i = sum_j f(x_i, x_j) g(x_j) / C(x), for the four pairwise functions f of the paper.

    The softmax forms ("embedded_gaussian", "gaussian") are dense attention through `dot_product_attention`, so
    sdpa or flex kernels apply. "dot_product" is computed as theta (phi^T g) / N, which is the same sum without the
    N x N matrix. W is followed by a batch norm whose scale starts at 0 (or is itself 0 without batch norm), so the
    block starts as the identity and can be inserted into a pretrained network.

    Args:
        channels: channels of the feature map.
        inner_channels: channels of theta, phi and g, default max(1, channels // 2).
        pairwise_function: "embedded_gaussian", "gaussian", "dot_product" or "concatenation".
        sub_sample: 2x2 max-pool the keys and values (ceil mode, so odd sizes keep their last row/column).
        batch_norm: follow W with a batch norm.
        attn_implementation: kernel for the softmax forms when no config drives the block.
        config: a `PreTrainedConfig` whose live `_attn_implementation` overrides `attn_implementation`.
    """

    def __init__(
        self,
        channels: int,
        inner_channels: int | None = None,
        pairwise_function: str = "embedded_gaussian",
        sub_sample: bool = False,
        batch_norm: bool = True,
        attn_implementation: str = "sdpa",
        config=None,
    ):
        super().__init__()
        inner = inner_channels or reduced(channels, 2)
        self.channels = channels
        self.pairwise_function = pairwise_function
        self.sub_sample = sub_sample
        self.attn_implementation = attn_implementation
        self.config = config
        self.g = nn.Conv2d(channels, inner, 1)
        if pairwise_function != "gaussian":  # the plain Gaussian compares the inputs themselves
            self.theta = nn.Conv2d(channels, inner, 1)
            self.phi = nn.Conv2d(channels, inner, 1)
        if pairwise_function == "concatenation":
            self.concat_project = nn.Conv2d(2 * inner, 1, 1, bias=False)
        elif pairwise_function not in ("embedded_gaussian", "gaussian", "dot_product"):
            raise ValueError(
                "pairwise_function must be 'embedded_gaussian', 'gaussian', 'dot_product' or 'concatenation', "
                f"got {pairwise_function!r}."
            )
        self.output = nn.Conv2d(inner, channels, 1) if batch_norm else ZeroInitConv2d(inner, channels, 1)
        self.output_norm = ZeroInitBatchNorm2d(channels) if batch_norm else nn.Identity()

    def _keys(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.sub_sample:
            return F.max_pool2d(hidden_states, kernel_size=2, ceil_mode=True)
        return hidden_states

    def pairwise(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """y: the non-local response (batch, inner_channels, height, width) before W."""
        value = self._keys(self.g(hidden_states))
        if self.pairwise_function == "gaussian":
            query, key = hidden_states, self._keys(hidden_states)
        else:
            query, key = self.theta(hidden_states), self._keys(self.phi(hidden_states))
        if self.pairwise_function in ("embedded_gaussian", "gaussian"):
            return attend_over_positions(self, query, key, value, self.current_implementation())
        height = query.shape[-2]
        query, key, value = (rearrange(t, "b c h w -> b (h w) c") for t in (query, key, value))
        num_keys = key.shape[1]
        if self.pairwise_function == "dot_product":
            context = torch.einsum("bnc,bnd->bcd", key, value) / num_keys
            output = torch.einsum("bqc,bcd->bqd", query, context)
        else:  # concatenation: w . [theta_i, phi_j] splits into a query part plus a key part
            query_weight, key_weight = self.concat_project.weight.flatten().chunk(2)
            relation = F.relu((query @ query_weight)[:, :, None] + (key @ key_weight)[:, None, :]) / num_keys
            output = relation @ value
        return rearrange(output, "b (h w) c -> b c h w", h=height)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.channels, type(self).__name__)
        return hidden_states + self.output_norm(self.output(self.pairwise(hidden_states)))


# --- 6. Criss-cross attention --------------------------------------------------------------------------------------


class CrissCrossAttention(nn.Module):
    """x + gamma * sum over the H + W - 1 positions of x's row and column of softmax(q . k) v, `recurrence` times.

    The column scores (B, H, W, H) and row scores (B, H, W, W) are computed separately and share one softmax;
    the position itself is dropped from the column so it is counted once. Memory is O(HW(H + W)), not O((HW)^2),
    and plain einsums replace CCNet's CUDA extension, so it runs on any device. The same weights are applied at
    every recurrence (2 lets every position reach every other). gamma starts at 0.

    Args:
        channels: channels of the feature map.
        reduction: queries and keys have max(1, channels // reduction) channels.
        recurrence: how many times the module is applied.
    """

    def __init__(self, channels: int, reduction: int = 8, recurrence: int = 2):
        super().__init__()
        if recurrence <= 0:
            raise ValueError(f"recurrence must be a positive integer, got {recurrence}.")
        self.channels = channels
        self.recurrence = recurrence
        self.query = nn.Conv2d(channels, reduced(channels, reduction), 1)
        self.key = nn.Conv2d(channels, reduced(channels, reduction), 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def attend(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """One criss-cross pass: the attended values (batch, channels, height, width), before gamma and residual."""
        query, key, value = self.query(hidden_states), self.key(hidden_states), self.value(hidden_states)
        height, width = hidden_states.shape[-2:]
        column_scores = torch.einsum("bchw,bcgw->bhwg", query, key)  # g runs over the rows of column w
        row_scores = torch.einsum("bchw,bchv->bhwv", query, key)  # v runs over the columns of row h
        # each position is dropped from its column (it is counted in its row): keep (height, 1, height + width)
        not_itself = ~torch.eye(height, dtype=torch.bool, device=hidden_states.device)[:, None, :]
        whole_row = torch.ones(height, 1, width, dtype=torch.bool, device=hidden_states.device)
        keep = torch.cat((not_itself, whole_row), dim=-1)
        probabilities = masked_softmax(torch.cat((column_scores, row_scores), dim=-1), keep)
        column_probabilities, row_probabilities = probabilities.to(value.dtype).split((height, width), -1)
        from_column = torch.einsum("bhwg,bcgw->bchw", column_probabilities, value)
        from_row = torch.einsum("bhwv,bchv->bchw", row_probabilities, value)
        return from_column + from_row

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.channels, type(self).__name__)
        for _ in range(self.recurrence):
            hidden_states = hidden_states + self.gamma * self.attend(hidden_states)
        return hidden_states


# --- 7. CompressAI attention block ---------------------------------------------------------------------------------


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
        if channels < 2:
            raise ValueError(f"channels must be at least 2 (the residual units use channels // 2), got {channels}.")
        self.channels = channels
        self.conv_a = nn.Sequential(*(CompressAIResidualUnit(channels) for _ in range(3)))
        self.conv_b = nn.Sequential(
            *(CompressAIResidualUnit(channels) for _ in range(3)), nn.Conv2d(channels, channels, 1)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.channels, type(self).__name__)
        return hidden_states + self.conv_a(hidden_states) * torch.sigmoid(self.conv_b(hidden_states))


# --- PreTrainedModel wrappers --------------------------------------------------------------------------------------


@torch.no_grad()
def init_feature_attention_weights(module: nn.Module, std: float) -> None:
    """`_init_weights` of every model built from these blocks (plain blocks keep PyTorch's default initialisation).

    Convolutions get Kaiming (fan-out) initialisation as in ResNets, linear layers N(0, std), norms 1 and 0, except
    the parts that make a block start as the identity: zero gammas, the STN's identity regressor, the zero-initialised
    end of the non-local branch. (transformers visits only modules that hold parameters themselves, hence the marker
    classes rather than rules on the blocks.)
    """
    if isinstance(module, IdentityAffineRegressor):
        init.zeros_(module.weight)
        init.copy_(module.bias, torch.tensor(IDENTITY_AFFINE))
    elif isinstance(module, ZeroInitConv2d):
        init.zeros_(module.weight)
        init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        init.normal_(module.weight, mean=0.0, std=std)
        init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        (init.zeros_ if isinstance(module, ZeroInitBatchNorm2d) else init.ones_)(module.weight)
        init.zeros_(module.bias)
        init.zeros_(module.running_mean)
        init.ones_(module.running_var)
        init.zeros_(module.num_batches_tracked)
    if isinstance(module, (PositionAttention, ChannelAttention, CrissCrossAttention)):
        init.zeros_(module.gamma)


class FeatureAttentionPreTrainedModel(HFAttentionPreTrainedModel):
    """Base of the block wrappers: `forward(hidden_states)` on (batch, channels, height, width) feature maps.

    Subclasses build `self.block` from their config. The blocks hold batch norms, which gradient checkpointing would
    update twice per step, so checkpointing is not offered.
    """

    main_input_name = "hidden_states"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False
    _supports_sdpa = False
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False
    _can_compile_fullgraph = True
    _no_split_modules = []

    def __init__(self, config):
        super().__init__(config)
        self.block = self.build_block(config)
        self.post_init()

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """A deterministic batch of two 8x8 feature maps (transformers' convention for example inputs)."""
        generator = torch.Generator().manual_seed(0)
        return {"hidden_states": torch.randn(2, self.config.num_channels, 8, 8, generator=generator)}

    def build_block(self, config) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must build its block from the config.")

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        init_feature_attention_weights(module, self.config.initializer_range)

    @can_return_tuple
    def forward(self, hidden_states: torch.Tensor | None = None, **kwargs) -> BaseModelOutput:
        r"""
        hidden_states (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The feature map to attend over; the output has the block's output shape.
        """
        if hidden_states is None:
            raise ValueError("hidden_states is required: a (batch, channels, height, width) feature map.")
        return BaseModelOutput(last_hidden_state=self.block(hidden_states))


class SqueezeExcitationModel(FeatureAttentionPreTrainedModel):
    """[`SqueezeExcitation`], [`SEBasicBlock`] or [`SEBottleneckBlock`], as `config.block_type` says."""

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


class SpatialTransformerModel(FeatureAttentionPreTrainedModel):
    """[`SpatialTransformer`]; an untrained model returns its input."""

    config: SpatialTransformerConfig
    config_class = SpatialTransformerConfig
    _no_split_modules = ["SpatialTransformer"]

    def build_block(self, config: SpatialTransformerConfig) -> nn.Module:
        return SpatialTransformer(
            config.num_channels, config.localisation_channels, config.pooled_size, config.hidden_size
        )


class ResidualAttentionModel(FeatureAttentionPreTrainedModel):
    """[`ResidualAttentionModule`]: (1 + M) * T between p pre- and post-processing units."""

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


class DualAttentionModel(FeatureAttentionPreTrainedModel):
    """[`DualAttention`]: DANet's position + channel attention head."""

    config: DualAttentionConfig
    config_class = DualAttentionConfig
    _no_split_modules = ["DualAttention"]
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def build_block(self, config: DualAttentionConfig) -> nn.Module:
        return DualAttention(config.num_channels, config.inner_channels, config.reduction, config=config)


class NonLocalModel(FeatureAttentionPreTrainedModel):
    """[`NonLocalBlock`]; starts as the identity."""

    config: NonLocalConfig
    config_class = NonLocalConfig
    _no_split_modules = ["NonLocalBlock"]
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def build_block(self, config: NonLocalConfig) -> nn.Module:
        return NonLocalBlock(
            config.num_channels,
            config.inner_channels,
            config.pairwise_function,
            config.sub_sample,
            config.batch_norm,
            config=config,
        )


class CrissCrossAttentionModel(FeatureAttentionPreTrainedModel):
    """[`CrissCrossAttention`] applied `config.recurrence` times; starts as the identity (gamma = 0)."""

    config: CrissCrossAttentionConfig
    config_class = CrissCrossAttentionConfig
    _no_split_modules = ["CrissCrossAttention"]

    def build_block(self, config: CrissCrossAttentionConfig) -> nn.Module:
        return CrissCrossAttention(config.num_channels, config.reduction, config.recurrence)


class CompressAIAttentionModel(FeatureAttentionPreTrainedModel):
    """[`CompressAIAttentionBlock`]."""

    config: CompressAIAttentionConfig
    config_class = CompressAIAttentionConfig
    _no_split_modules = ["CompressAIAttentionBlock"]

    def build_block(self, config: CompressAIAttentionConfig) -> nn.Module:
        return CompressAIAttentionBlock(config.num_channels)


__all__ = [
    "BasicResidualBlock",
    "BottleneckResidualBlock",
    "ChannelAttention",
    "CompressAIAttentionBlock",
    "CompressAIAttentionModel",
    "CrissCrossAttention",
    "CrissCrossAttentionModel",
    "DualAttention",
    "DualAttentionModel",
    "FeatureAttentionPreTrainedModel",
    "NonLocalBlock",
    "NonLocalModel",
    "PositionAttention",
    "ResidualAttentionModel",
    "ResidualAttentionModule",
    "SEBasicBlock",
    "SEBottleneckBlock",
    "SpatialTransformer",
    "SpatialTransformerModel",
    "SqueezeExcitation",
    "SqueezeExcitationModel",
]
