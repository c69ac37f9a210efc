"""Cross-attention from an image feature map to a token context (the conditioning block of latent diffusion).

Data flow: feature map (batch, channels, height, width) -> 1x1 conv to `hidden_size` -> height * width query
tokens -> multi-head attention to the context tokens (batch, length, context width), padded context tokens
masked -> back to (batch, hidden_size, height, width) -> 1x1 conv to `channels`.
"""

from dataclasses import dataclass
from typing import Unpack

import torch
from einops import rearrange
from torch import nn
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.output_capturing import capture_outputs

from .attention import ATTENTION_KWARGS, MultiHeadAttention, current_implementation
from .checks import check_dtype_matches, check_float_input, check_keywords, check_sizes
from .configuration_feature_map_cross_attention import FeatureMapCrossAttentionConfig
from .masks import build_attention_mask, validate_padding_mask
from .pretrained import HFAttentionPreTrainedModel, in_model_dtype, resolve_forward_kwargs


class FeatureMapCrossAttention(nn.Module):
    """Every pixel of a feature map attends to the tokens of a context.

    Args:
        in_channels: channels of the feature map, and of the output.
        embed_dim: width the pixels are projected to (1x1 conv) before attention.
        num_heads: attention heads; `num_heads=1` is single-head cross-attention.
        context_dim: width of the context tokens; defaults to `embed_dim`.
        dropout: dropout on the attention weights, in [0, 1).
        qkv_bias: whether the query/key/value projections have a bias.
        attn_implementation: backend when no `config` drives the module ("eager", "sdpa", "flex_attention", ...).
        config: a `PreTrainedConfig` whose live `_attn_implementation` overrides `attn_implementation`.

    Forward returns (feature map of shape (batch, in_channels, height, width), attention weights of shape
    (batch, heads, height * width, context_length) when `output_attentions` is set, else None).
    """

    def __init__(
        self,
        in_channels: int,
        embed_dim: int,
        num_heads: int,
        *,
        context_dim: int | None = None,
        dropout: float = 0.0,
        qkv_bias: bool = True,
        attn_implementation: str = "sdpa",
        config=None,
    ):
        super().__init__()
        check_sizes(in_channels=in_channels, embed_dim=embed_dim, num_heads=num_heads, context_dim=context_dim)
        self.in_channels = in_channels
        self.proj_in = nn.Conv2d(in_channels, embed_dim, kernel_size=1)
        self.attention = MultiHeadAttention(
            embed_dim,
            num_heads,
            key_dim=context_dim,
            dropout=dropout,
            bias=qkv_bias,
            attn_implementation=attn_implementation,
            config=config,
        )
        self.proj_out = nn.Conv2d(embed_dim, in_channels, kernel_size=1)

    def forward(
        self,
        feature_map: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`context_mask` (batch, context_length) holds 1 for context tokens to keep and 0 for padding. Other
        keywords: transformers' `TransformersKwargs` only (a model passes them down); anything else is refused."""
        check_keywords(self, kwargs, ATTENTION_KWARGS)
        self._check_inputs(feature_map, context)
        batch_size, _, height, width = feature_map.shape
        queries = rearrange(self.proj_in(feature_map), "b c h w -> b (h w) c")
        if context_mask is not None:
            context_mask = validate_padding_mask(context_mask, *context.shape[:2], "context_mask")
        mask = build_attention_mask(
            current_implementation(self.attention), queries, context, key_padding_mask=context_mask
        )
        attended, weights = self.attention(
            queries, context, attention_mask=mask, output_attentions=output_attentions, **kwargs
        )
        output = self.proj_out(rearrange(attended, "b (h w) c -> b c h w", h=height, w=width))
        if mask is not None:  # an image whose context is all padding reads nothing: zeros, not proj_out's bias
            has_context = rearrange(mask.query_keeps, "b (h w) -> b 1 h w", h=height, w=width)
            output = torch.where(has_context, output, 0.0)
        return output, weights

    def _check_inputs(self, feature_map: torch.Tensor, context: torch.Tensor) -> None:
        if feature_map.dim() != 4 or feature_map.shape[1] != self.in_channels:
            raise ValueError(
                f"Expected a feature map of shape (batch, {self.in_channels}, height, width), "
                f"got {tuple(feature_map.shape)}."
            )
        check_float_input("feature_map", feature_map, f"(batch, {self.in_channels}, height, width)")
        check_dtype_matches("feature_map", feature_map, self)
        if feature_map.shape[2] == 0 or feature_map.shape[3] == 0:
            raise ValueError(f"The feature map is empty ({feature_map.shape[2]}x{feature_map.shape[3]} pixels).")
        if context.dim() != 3 or context.shape[0] != feature_map.shape[0]:
            raise ValueError(
                f"Expected a context of shape (batch={feature_map.shape[0]}, length, width), "
                f"got {tuple(context.shape)}."
            )


@dataclass
class FeatureMapCrossAttentionOutput(ModelOutput):
    r"""
    last_hidden_state (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
        The feature map after cross-attention to the context.
    hidden_states (`tuple(torch.Tensor)`, *optional*, returned when `output_hidden_states=True`):
        The feature map before and after the cross-attention, each `(batch_size, num_channels, height, width)`.
    attentions (`tuple(torch.Tensor)`, *optional*, returned when `output_attentions=True`):
        One tensor of shape `(batch_size, num_heads, height * width, context_length)`: how much each pixel attends
        to each context token.
    """

    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class FeatureMapCrossAttentionPreTrainedModel(HFAttentionPreTrainedModel):
    config: FeatureMapCrossAttentionConfig
    config_class = FeatureMapCrossAttentionConfig
    base_model_prefix = "feature_map_cross_attention"
    main_input_name = "feature_map"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = False  # a single layer: there is nothing to checkpoint between
    _no_split_modules = ["FeatureMapCrossAttention"]
    _supports_sdpa = True
    _supports_flash_attn = False  # flash cannot mask padded keys when queries and keys differ in length
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {"hidden_states": FeatureMapCrossAttention, "attentions": MultiHeadAttention}

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """A deterministic small batch with a padded context (transformers' convention for example inputs)."""
        generator = torch.Generator().manual_seed(0)
        context_width = self.config.encoder_hidden_size or self.config.hidden_size
        return {
            "feature_map": torch.randn(2, self.config.num_channels, 4, 5, generator=generator),
            "encoder_hidden_states": torch.randn(2, 6, context_width, generator=generator),
            "encoder_attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]]),
        }


class FeatureMapCrossAttentionModel(FeatureMapCrossAttentionPreTrainedModel):
    """A feature map attends to a context; `last_hidden_state` is the resulting (batch, C, H, W) feature map."""

    def __init__(self, config: FeatureMapCrossAttentionConfig):
        super().__init__(config)
        self.cross_attention = FeatureMapCrossAttention(
            config.num_channels,
            config.hidden_size,
            config.num_attention_heads,
            context_dim=config.encoder_hidden_size,
            dropout=config.attention_dropout,
            qkv_bias=config.qkv_bias,
            config=config,
        )
        self.post_init()

    @capture_outputs
    def forward(
        self,
        feature_map: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> FeatureMapCrossAttentionOutput:
        r"""
        feature_map (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The image features whose pixels attend.
        encoder_hidden_states (`torch.Tensor` of shape `(batch_size, context_length, encoder_hidden_size)`):
            The context tokens (e.g. text embeddings) that give the keys and values.
        encoder_attention_mask (`torch.Tensor` of shape `(batch_size, context_length)`, *optional*):
            1 for context tokens to keep, 0 for padding.
        """
        kwargs = resolve_forward_kwargs(self, kwargs)
        if feature_map is None or encoder_hidden_states is None:
            raise ValueError("feature_map (batch, C, H, W) and encoder_hidden_states (batch, L, D) are both required.")
        feature_map, encoder_hidden_states = (
            in_model_dtype(self, feature_map),
            in_model_dtype(self, encoder_hidden_states),
        )
        if encoder_attention_mask is not None and encoder_hidden_states.dim() == 3:
            encoder_attention_mask = validate_padding_mask(
                encoder_attention_mask, *encoder_hidden_states.shape[:2], "encoder_attention_mask"
            )
        output, _ = self.cross_attention(feature_map, encoder_hidden_states, encoder_attention_mask, **kwargs)
        return FeatureMapCrossAttentionOutput(last_hidden_state=output)


__all__ = [
    "FeatureMapCrossAttention",
    "FeatureMapCrossAttentionModel",
    "FeatureMapCrossAttentionPreTrainedModel",
]
