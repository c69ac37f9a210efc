"""Non-local block (Wang et al., 2018): z = x + W y, y_i = sum_j f(x_i, x_j) g(x_j) / C(x).

Data flow: x -> theta, phi, g (1x1 convolutions; the plain Gaussian compares x itself) -> keys and values optionally
max-pooled -> pairwise relation f over all positions -> y -> W (1x1 convolution) -> batch norm (scale 0 at the
start) -> + x. The softmax forms run through `attention.dot_product_attention`; every pairwise function computes
its scores in float32.

`output_attentions=True` returns the relation f(x_i, x_j) / C(x) as `attentions` (batch, 1, h * w, keys), queries
the row-major positions, keys the positions of the (sub-sampled: ceil(h / 2) * ceil(w / 2)) key map.
"""

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from .attention import attend_over_positions, current_implementation
from .checks import check_choice, check_feature_map, check_sizes, reduced
from .configuration_non_local import NON_LOCAL_PAIRWISE_FUNCTIONS, NonLocalConfig
from .feature_map_pretrained import FeatureAttentionPreTrainedModel, init_query_key_, init_zeros_
from .layers import AttentionMap


class NonLocalBlock(nn.Module):
    """z = x + W y, y_i = sum_j f(x_i, x_j) g(x_j) / C(x), for the four pairwise functions f of the paper.

    The softmax forms ("embedded_gaussian", "gaussian") are dense attention through `dot_product_attention`, so
    sdpa or flex kernels apply. "dot_product" is computed as theta (phi^T g) / N, the same sum without the N x N
    matrix (which is built only when `output_attentions` asks for it). W is followed by a batch norm whose scale
    starts at 0 (or is itself 0 without batch norm), so the block starts as the identity and can be inserted into a
    pretrained network.

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
        check_sizes(channels=channels, inner_channels=inner_channels)
        check_choice("pairwise_function", pairwise_function, NON_LOCAL_PAIRWISE_FUNCTIONS)
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
        self.output = nn.Conv2d(inner, channels, 1)
        self.output_norm = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
        self.attention_map = AttentionMap()
        self.init_start_values()

    @torch.no_grad()
    def init_start_values(self) -> None:
        """The block starts as the identity: W's batch-norm scale (or W itself) is zero. Queries and keys start soft."""
        init_zeros_(self.output_norm if isinstance(self.output_norm, nn.BatchNorm2d) else self.output)
        if self.pairwise_function != "gaussian":
            init_query_key_(self.theta)
            init_query_key_(self.phi)

    def _keys(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.sub_sample:
            return F.max_pool2d(hidden_states, kernel_size=2, ceil_mode=True)
        return hidden_states

    def pairwise(self, hidden_states: torch.Tensor, output_attentions: bool = False) -> torch.Tensor:
        """y: the non-local response (batch, inner_channels, height, width) before W."""
        value = self._keys(self.g(hidden_states))
        if self.pairwise_function == "gaussian":
            query, key = hidden_states, self._keys(hidden_states)
        else:
            query, key = self.theta(hidden_states), self._keys(self.phi(hidden_states))
        if self.pairwise_function in ("embedded_gaussian", "gaussian"):
            output, probabilities = attend_over_positions(
                self, query, key, value, current_implementation(self), output_attentions
            )
            if probabilities is not None:
                self.attention_map(probabilities)
            return output
        dtype, height = value.dtype, query.shape[-2]
        query, key, value = (rearrange(t, "b c h w -> b (h w) c").float() for t in (query, key, value))
        num_keys = key.shape[1]
        if self.pairwise_function == "dot_product" and not output_attentions:
            context = torch.einsum("bnc,bnd->bcd", key, value) / num_keys
            output = torch.einsum("bqc,bcd->bqd", query, context)
        else:
            output = self.attention_map(self.relation(query, key)[:, None])[:, 0] @ value
        return rearrange(output, "b (h w) c -> b c h w", h=height).to(dtype)

    def relation(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """f(x_i, x_j) / N of the non-softmax forms, (batch, queries, keys), from float32 (batch, positions, c)."""
        if self.pairwise_function == "dot_product":
            return query @ key.transpose(1, 2) / key.shape[1]
        # concatenation: w . [theta_i, phi_j] splits into a query part plus a key part
        query_weight, key_weight = self.concat_project.weight.flatten().float().chunk(2)
        return F.relu((query @ query_weight)[:, :, None] + (key @ key_weight)[:, None, :]) / key.shape[1]

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False) -> torch.Tensor:
        check_feature_map(hidden_states, self.channels, type(self).__name__, weights_of=self)
        return hidden_states + self.output_norm(self.output(self.pairwise(hidden_states, output_attentions)))


class NonLocalModel(FeatureAttentionPreTrainedModel):
    """[`NonLocalBlock`]; starts as the identity.

    `hidden_states`: (input, output) feature maps; `attentions`: the relation map (batch, 1, h * w, keys).
    """

    config: NonLocalConfig
    config_class = NonLocalConfig
    _no_split_modules = ["NonLocalBlock"]
    _supports_attention_backend = True
    _can_record_outputs = {"attentions": AttentionMap}

    def build_block(self, config: NonLocalConfig) -> nn.Module:
        return NonLocalBlock(
            config.num_channels,
            config.inner_channels,
            config.pairwise_function,
            config.sub_sample,
            config.batch_norm,
            config=config,
        )

    def run_block(self, hidden_states: torch.Tensor, output_attentions: bool) -> torch.Tensor:
        return self.block(hidden_states, output_attentions)


__all__ = ["NonLocalBlock", "NonLocalModel"]
