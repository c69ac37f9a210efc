"""The DETR transformer (Carion et al., 2020): encoder over image features, decoder over learned object queries.

Data flow: feature map (batch, channels, height, width) -> 1x1 conv to `hidden_size` -> height * width tokens,
plus 2-D sine position embeddings computed from the pixel mask -> encoder layers (self-attention with the
position embeddings added to queries and keys, never to values; then a feed-forward network) -> memory.
Object queries start at zero, with a learned position embedding each -> decoder layers (self-attention among
the queries, cross-attention to the memory, feed-forward network) -> final norm -> one embedding per query,
and on request every decoder layer's normalised output (for DETR's auxiliary losses).

Layers are post-norm, norm(x + f(x)), as in DETR, or pre-norm, x + f(norm(x)), with `normalize_before`.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Unpack

import torch
from einops import rearrange
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .attention import ATTENTION_KWARGS, MultiHeadAttention
from .checks import (
    check_dtype_matches,
    check_float_input,
    check_keywords,
    check_positive,
    check_probability,
    check_sizes,
)
from .configuration_detr_transformer import DETRTransformerConfig
from .layers import FeedForward
from .masks import AttentionMask, build_attention_mask, validate_padding_mask
from .pretrained import HFAttentionPreTrainedModel, in_model_dtype, resolve_forward_kwargs


def sine_position_embeddings(pixel_mask: torch.Tensor, hidden_size: int, temperature: float) -> torch.Tensor:
    """DETR's 2-D sine embeddings, (batch, height * width, hidden_size), from a (batch, height, width) 0/1 mask.

    Coordinates count valid pixels only and are normalised to [0, 2 pi], so padding does not stretch the image;
    half the channels encode y and half x, alternating sin and cos at geometrically spaced frequencies.
    """
    valid = pixel_mask.float()
    y_position, x_position = valid.cumsum(1), valid.cumsum(2)
    y_position = y_position / (y_position[:, -1:, :] + 1e-6) * 2 * math.pi
    x_position = x_position / (x_position[:, :, -1:] + 1e-6) * 2 * math.pi
    num_features = hidden_size // 2
    exponents = 2 * (torch.arange(num_features, device=pixel_mask.device) // 2) / num_features
    frequencies = temperature**exponents
    embeddings = []
    for position in (y_position, x_position):
        phases = position[..., None] / frequencies
        embeddings.append(torch.stack((phases[..., 0::2].sin(), phases[..., 1::2].cos()), dim=-1).flatten(-2))
    return rearrange(torch.cat(embeddings, dim=-1), "b h w d -> b (h w) d")


def with_position(
    hidden_states: torch.Tensor, position_embeddings: torch.Tensor | None, name: str = "position_embeddings"
) -> torch.Tensor:
    if position_embeddings is None:
        return hidden_states
    check_float_input(name, position_embeddings, "(batch, length, hidden_size)")
    if position_embeddings.shape != hidden_states.shape:
        raise ValueError(
            f"{name} must have the shape of the tokens they are added to, {tuple(hidden_states.shape)}, "
            f"got {tuple(position_embeddings.shape)}."
        )
    return hidden_states + position_embeddings


class DETRTransformerLayerBase(GradientCheckpointingLayer):
    """What encoder and decoder layers share: the arguments, the feed-forward network and the residual rule.

    Args:
        hidden_size: width of the tokens.
        num_heads: attention heads; must divide `hidden_size`.
        intermediate_size: width of the feed-forward network's hidden layer.
        dropout: dropout on every residual branch, in [0, 1).
        attention_dropout: dropout on the attention weights, in [0, 1).
        activation_dropout: dropout after the feed-forward activation, in [0, 1).
        activation: feed-forward activation, a key of `transformers.activations.ACT2FN`.
        normalize_before: pre-norm, x + f(norm(x)), instead of post-norm, norm(x + f(x)).
        layer_norm_eps: epsilon of the layer norms.
        attn_implementation: backend when no `config` drives the layer ("eager", "sdpa", "flex_attention", ...).
        config: a `PreTrainedConfig` whose live `_attn_implementation` overrides `attn_implementation`.
    """

    has_cross_attention = False

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        *,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
        layer_norm_eps: float = 1e-5,
        attn_implementation: str = "sdpa",
        config=None,
    ):
        super().__init__()
        check_sizes(hidden_size=hidden_size, num_heads=num_heads, intermediate_size=intermediate_size)
        check_probability("dropout", dropout)
        check_positive("layer_norm_eps", layer_norm_eps)
        self.normalize_before = normalize_before
        self.dropout = nn.Dropout(dropout)
        attention = dict(dropout=attention_dropout, attn_implementation=attn_implementation, config=config)
        self.self_attn = MultiHeadAttention(hidden_size, num_heads, **attention)
        self.self_attn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        if self.has_cross_attention:
            self.cross_attn = MultiHeadAttention(hidden_size, num_heads, **attention)
            self.cross_attn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.mlp = FeedForward(hidden_size, intermediate_size, activation, dropout=activation_dropout)
        self.mlp_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def residual(self, hidden_states: torch.Tensor, branch: Callable, norm: nn.LayerNorm) -> torch.Tensor:
        """Pre-norm: x + branch(norm(x)); post-norm: norm(x + branch(x)). Dropout on the branch either way."""
        if self.normalize_before:
            return hidden_states + self.dropout(branch(norm(hidden_states)))
        return norm(hidden_states + self.dropout(branch(hidden_states)))


class DETRTransformerEncoderLayer(DETRTransformerLayerBase):
    """Self-attention over the image tokens (position embeddings on queries and keys), then a feed-forward network.

    Takes the arguments of [`DETRTransformerLayerBase`].
    """

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | AttentionMask | None = None,
        position_embeddings: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """`attention_mask` (batch, length), 1 for tokens to keep, hides padded tokens as keys; `position_embeddings`
        (batch, length, hidden_size) are added to queries and keys only."""
        check_keywords(self, kwargs, ATTENTION_KWARGS)
        check_float_input("hidden_states", hidden_states, "(batch, length, hidden_size)")
        check_dtype_matches("hidden_states", hidden_states, self)

        def self_attention(states):
            return self.self_attn(
                with_position(states, position_embeddings), value_states=states, attention_mask=attention_mask, **kwargs
            )[0]

        hidden_states = self.residual(hidden_states, self_attention, self.self_attn_norm)
        return self.residual(hidden_states, self.mlp, self.mlp_norm)


class DETRTransformerDecoderLayer(DETRTransformerLayerBase):
    """Self-attention among the object queries, cross-attention to the encoder memory, then a feed-forward network.

    Takes the arguments of [`DETRTransformerLayerBase`].
    """

    has_cross_attention = True

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | AttentionMask | None = None,
        encoder_attention_mask: torch.Tensor | AttentionMask | None = None,
        position_embeddings: torch.Tensor | None = None,
        query_position_embeddings: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """`hidden_states` (batch, queries, hidden_size) attend to `encoder_hidden_states` (batch, length,
        hidden_size). `query_position_embeddings` are added to the queries (and, in self-attention, to the keys),
        `position_embeddings` to the memory's keys; values never get position embeddings. `attention_mask` masks
        padded queries as keys of the self-attention, `encoder_attention_mask` padded memory tokens."""
        check_keywords(self, kwargs, ATTENTION_KWARGS)
        check_float_input("hidden_states", hidden_states, "(batch, queries, hidden_size)")
        check_float_input("encoder_hidden_states", encoder_hidden_states, "(batch, length, hidden_size)")
        for name, states in (("hidden_states", hidden_states), ("encoder_hidden_states", encoder_hidden_states)):
            check_dtype_matches(name, states, self)

        def self_attention(states):
            queries = with_position(states, query_position_embeddings, "query_position_embeddings")
            return self.self_attn(queries, value_states=states, attention_mask=attention_mask, **kwargs)[0]

        def cross_attention(states):
            return self.cross_attn(
                with_position(states, query_position_embeddings, "query_position_embeddings"),
                with_position(encoder_hidden_states, position_embeddings),
                value_states=encoder_hidden_states,
                attention_mask=encoder_attention_mask,
                **kwargs,
            )[0]

        hidden_states = self.residual(hidden_states, self_attention, self.self_attn_norm)
        hidden_states = self.residual(hidden_states, cross_attention, self.cross_attn_norm)
        return self.residual(hidden_states, self.mlp, self.mlp_norm)


def layer_arguments(config: DETRTransformerConfig) -> dict:
    """The layer constructor arguments a config implies."""
    return dict(
        hidden_size=config.hidden_size,
        num_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        activation_dropout=config.activation_dropout,
        activation=config.hidden_act,
        normalize_before=config.normalize_before,
        layer_norm_eps=config.layer_norm_eps,
        config=config,
    )


def key_padding_mask(config, queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None):
    """The `AttentionMask` hiding padded keys, built once for every layer (padded queries are still computed, as in
    DETR: the decoder never reads them)."""
    return build_attention_mask(config._attn_implementation, queries, keys, key_padding_mask=mask)


@dataclass
class DETRTransformerDecoderOutput(ModelOutput):
    r"""
    last_hidden_state (`torch.Tensor` of shape `(batch_size, num_queries, hidden_size)`):
        The normalised output of the last decoder layer: one embedding per object query.
    intermediate_hidden_states (`torch.Tensor` of shape `(batch_size, decoder_layers, num_queries, hidden_size)`):
        The normalised output of every decoder layer, when `config.return_intermediate`; the last equals
        `last_hidden_state`.
    hidden_states (`tuple(torch.Tensor)`, *optional*):
        The decoder input and every decoder layer's (unnormalised) output, when `output_hidden_states=True`.
    attentions (`tuple(torch.Tensor)`, *optional*):
        Self-attention weights of every decoder layer, (batch_size, heads, num_queries, num_queries).
    cross_attentions (`tuple(torch.Tensor)`, *optional*):
        Cross-attention weights of every decoder layer, (batch_size, heads, num_queries, height * width).
    """

    last_hidden_state: torch.Tensor | None = None
    intermediate_hidden_states: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class DETRTransformerModelOutput(ModelOutput):
    r"""
    last_hidden_state (`torch.Tensor` of shape `(batch_size, num_queries, hidden_size)`):
        One embedding per object query, for DETR's class and box heads.
    intermediate_hidden_states (`torch.Tensor` of shape `(batch_size, decoder_layers, num_queries, hidden_size)`):
        Every decoder layer's normalised output, when `config.return_intermediate`.
    encoder_last_hidden_state (`torch.Tensor` of shape `(batch_size, height * width, hidden_size)`):
        The encoder memory.
    decoder_hidden_states, decoder_attentions, cross_attentions, encoder_hidden_states, encoder_attentions:
        Per-layer states and attention weights, when `output_hidden_states` / `output_attentions` are set.
    """

    last_hidden_state: torch.Tensor | None = None
    intermediate_hidden_states: torch.Tensor | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    decoder_hidden_states: tuple[torch.Tensor, ...] | None = None
    decoder_attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    encoder_hidden_states: tuple[torch.Tensor, ...] | None = None
    encoder_attentions: tuple[torch.Tensor, ...] | None = None


class DETRTransformerPreTrainedModel(HFAttentionPreTrainedModel):
    config: DETRTransformerConfig
    config_class = DETRTransformerConfig
    base_model_prefix = "model"
    main_input_name = "feature_map"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["DETRTransformerEncoderLayer", "DETRTransformerDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = False  # flash cannot mask padded memory in the decoder's cross-attention
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False  # the pixel mask is validated on the host

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """Two deterministic feature maps, the second padded on the right (transformers' example-input convention)."""
        generator = torch.Generator().manual_seed(0)
        pixel_mask = torch.ones(2, 3, 4, dtype=torch.long)
        pixel_mask[1, :, 3:] = 0
        feature_map = torch.randn(2, self.config.num_channels, 3, 4, generator=generator)
        return {"feature_map": feature_map, "pixel_mask": pixel_mask}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # zero biases, unit layer norms
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
            init.xavier_uniform_(module.weight)  # as DETR's _reset_parameters: every matrix Xavier-uniform


class DETRTransformerEncoder(DETRTransformerPreTrainedModel):
    """`encoder_layers` encoder layers, plus a final norm when pre-norm (post-norm layers end normalised)."""

    _can_record_outputs = {"hidden_states": DETRTransformerEncoderLayer, "attentions": MultiHeadAttention}

    def __init__(self, config: DETRTransformerConfig):
        super().__init__(config)
        self.layers = nn.ModuleList(
            DETRTransformerEncoderLayer(**layer_arguments(config)) for _ in range(config.encoder_layers)
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.normalize_before else None
        self.post_init()

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        r"""
        inputs_embeds (`torch.Tensor` of shape `(batch_size, length, hidden_size)`): the image tokens.
        attention_mask (`torch.Tensor` of shape `(batch_size, length)`, *optional*): 1 for real pixels, 0 for padding.
        position_embeddings (`torch.Tensor` of shape `(batch_size, length, hidden_size)`, *optional*):
            Added to queries and keys of every self-attention.
        """
        kwargs = resolve_forward_kwargs(self, kwargs)
        mask = key_padding_mask(self.config, inputs_embeds, inputs_embeds, attention_mask)
        hidden_states = inputs_embeds
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask, position_embeddings, **kwargs)
        if self.norm is not None:
            hidden_states = self.norm(hidden_states)
        return BaseModelOutput(last_hidden_state=hidden_states)


class DETRTransformerDecoder(DETRTransformerPreTrainedModel):
    """`decoder_layers` decoder layers and a final norm, optionally returning every layer's normalised output."""

    _can_record_outputs = {
        "hidden_states": DETRTransformerDecoderLayer,
        "attentions": OutputRecorder(MultiHeadAttention, index=1, layer_name="self_attn"),
        "cross_attentions": OutputRecorder(MultiHeadAttention, index=1, layer_name="cross_attn"),
    }

    def __init__(self, config: DETRTransformerConfig):
        super().__init__(config)
        self.layers = nn.ModuleList(
            DETRTransformerDecoderLayer(**layer_arguments(config)) for _ in range(config.decoder_layers)
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        inputs_embeds: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        position_embeddings: torch.Tensor | None = None,
        query_position_embeddings: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> DETRTransformerDecoderOutput:
        r"""
        inputs_embeds (`torch.Tensor` of shape `(batch_size, num_queries, hidden_size)`): the object queries.
        encoder_hidden_states (`torch.Tensor` of shape `(batch_size, length, hidden_size)`): the encoder memory.
        encoder_attention_mask (`torch.Tensor` of shape `(batch_size, length)`, *optional*): 1 for real pixels.
        position_embeddings (`torch.Tensor` of shape `(batch_size, length, hidden_size)`, *optional*):
            Added to the memory's keys in every cross-attention.
        query_position_embeddings (`torch.Tensor` of shape `(batch_size, num_queries, hidden_size)`, *optional*):
            Added to the queries of every attention and to the keys of every self-attention.
        """
        kwargs = resolve_forward_kwargs(self, kwargs)
        memory_mask = key_padding_mask(self.config, inputs_embeds, encoder_hidden_states, encoder_attention_mask)
        hidden_states, intermediate = inputs_embeds, []
        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                encoder_hidden_states,
                encoder_attention_mask=memory_mask,
                position_embeddings=position_embeddings,
                query_position_embeddings=query_position_embeddings,
                **kwargs,
            )
            if self.config.return_intermediate:
                intermediate.append(self.norm(hidden_states))
        return DETRTransformerDecoderOutput(
            last_hidden_state=self.norm(hidden_states),
            intermediate_hidden_states=torch.stack(intermediate, dim=1) if intermediate else None,
        )


class DETRTransformerModel(DETRTransformerPreTrainedModel):
    """The full DETR transformer over a backbone feature map; `last_hidden_state` has one embedding per object query."""

    def __init__(self, config: DETRTransformerConfig):
        super().__init__(config)
        self.input_projection = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=1)
        self.query_position_embeddings = nn.Embedding(config.num_queries, config.hidden_size)
        self.encoder = DETRTransformerEncoder(config)
        self.decoder = DETRTransformerDecoder(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        feature_map: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> DETRTransformerModelOutput:
        r"""
        feature_map (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            Backbone features (e.g. ResNet-50's last stage).
        pixel_mask (`torch.Tensor` of shape `(batch_size, height, width)`, *optional*):
            1 for real pixels, 0 for padding (images of different sizes padded to one batch), at the feature map's
            resolution. Padded pixels are never attended to and do not shift the position embeddings.
        """
        kwargs = resolve_forward_kwargs(self, kwargs)
        feature_map, pixel_mask = self._check_inputs(feature_map, pixel_mask)
        feature_map = in_model_dtype(self, feature_map)
        tokens = rearrange(self.input_projection(feature_map), "b d h w -> b (h w) d")
        positions = sine_position_embeddings(pixel_mask, self.config.hidden_size, self.config.position_temperature)
        positions = positions.to(tokens.dtype)
        token_mask = rearrange(pixel_mask, "b h w -> b (h w)")
        encoded = self.encoder(tokens, attention_mask=token_mask, position_embeddings=positions, **kwargs)
        query_positions = self.query_position_embeddings.weight.expand(tokens.shape[0], -1, -1)
        decoded = self.decoder(
            torch.zeros_like(query_positions),
            encoded.last_hidden_state,
            encoder_attention_mask=token_mask,
            position_embeddings=positions,
            query_position_embeddings=query_positions,
            **kwargs,
        )
        return DETRTransformerModelOutput(
            last_hidden_state=decoded.last_hidden_state,
            intermediate_hidden_states=decoded.intermediate_hidden_states,
            encoder_last_hidden_state=encoded.last_hidden_state,
            decoder_hidden_states=decoded.hidden_states,
            decoder_attentions=decoded.attentions,
            cross_attentions=decoded.cross_attentions,
            encoder_hidden_states=encoded.hidden_states,
            encoder_attentions=encoded.attentions,
        )

    def _check_inputs(self, feature_map, pixel_mask) -> tuple[torch.Tensor, torch.Tensor]:
        expected = self.config.num_channels
        if feature_map is None or feature_map.dim() != 4 or feature_map.shape[1] != expected:
            shape = None if feature_map is None else tuple(feature_map.shape)
            raise ValueError(f"feature_map must have shape (batch, {expected}, height, width), got {shape}.")
        check_float_input("feature_map", feature_map, f"(batch, {expected}, height, width)")
        batch_size, _, height, width = feature_map.shape
        if height == 0 or width == 0:
            raise ValueError(f"feature_map holds empty maps ({height}x{width}); expected maps of positive size.")
        if pixel_mask is None:
            return feature_map, feature_map.new_ones(batch_size, height, width, dtype=torch.bool)
        if tuple(pixel_mask.shape) != (batch_size, height, width):
            raise ValueError(
                f"pixel_mask must have the feature map's shape (batch, height, width) = {(batch_size, height, width)} "
                f"and hold 1 for real pixels, 0 for padding; got shape {tuple(pixel_mask.shape)}."
            )
        keep = validate_padding_mask(pixel_mask.flatten(1), batch_size, height * width, "pixel_mask")
        return feature_map, keep.view(batch_size, height, width)


__all__ = [
    "DETRTransformerDecoder",
    "DETRTransformerDecoderLayer",
    "DETRTransformerEncoder",
    "DETRTransformerEncoderLayer",
    "DETRTransformerModel",
    "DETRTransformerPreTrainedModel",
]
