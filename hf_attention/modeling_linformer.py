"""Linformer self-attention (Wang et al., 2020): keys and values projected along the sequence to k rows.

Data flow: tokens (batch, n, hidden) -> Q, K, V projections split into heads -> padded keys and values zeroed ->
K and V projected along the sequence by E, F (n x k; the first n rows of the max_length x k parameters) to
(batch, heads, k, head_dim) -> softmax(Q (E^T K)^T / sqrt(d)) (F^T V) through `dot_product_attention`, so every
backend applies -> heads concatenated -> output projection. Cost: O(n k) time and memory instead of O(n^2).
"""

import math
from typing import Unpack

import torch
from einops import rearrange
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import TransformersKwargs
from transformers.utils.output_capturing import capture_outputs

from .attention import MultiHeadAttention
from .configuration_linformer import LinformerConfig, check_linformer
from .masks import AttentionMask, validate_padding_mask
from .pretrained import HFAttentionPreTrainedModel, in_model_dtype, resolve_forward_kwargs


class LinformerSelfAttention(MultiHeadAttention):
    """Multi-head self-attention whose keys and values are projected from n positions to k.

    A `MultiHeadAttention` (same projections, head split, backends, mask handling and input checks) whose
    `transform_keys_values` hook projects the keys and values along the sequence before the kernel runs.

    Args:
        embed_dim: width of the tokens and of the output.
        num_heads: attention heads; must divide `embed_dim`.
        max_length: longest sequence the projections cover; shorter ones use the first rows.
        projected_length: k, the rows keys and values are projected to.
        sharing: "none" (per-head key and value projections), "headwise" (one key and one value projection for all
            heads, as the `linformer` package does) or "key_value" (one projection for keys and values).
        dropout: dropout probability on the attention weights, in [0, 1).
        bias: whether the query/key/value projections have a bias.
        attn_implementation: backend when no config drives the module ("eager", "sdpa", "flex_attention", ...).
        config: a `PreTrainedConfig` whose live `_attn_implementation` overrides `attn_implementation`.

    Forward returns (output, attention probabilities (batch, heads, n, k) or None).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        max_length: int,
        projected_length: int,
        *,
        sharing: str = "headwise",
        dropout: float = 0.0,
        bias: bool = False,
        attn_implementation: str = "sdpa",
        config=None,
    ):
        check_linformer(max_length, projected_length, sharing, length_name="max_length")
        super().__init__(
            embed_dim, num_heads, dropout=dropout, bias=bias, attn_implementation=attn_implementation, config=config
        )
        self.max_length = max_length
        self.projected_length = projected_length
        # (heads or 1, max_length, k): a leading 1 broadcasts one projection over every head
        projection_shape = (num_heads if sharing == "none" else 1, max_length, projected_length)
        self.key_projection = nn.Parameter(torch.empty(projection_shape))
        self.value_projection = None if sharing == "key_value" else nn.Parameter(torch.empty(projection_shape))
        init_sequence_projections(self)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Self-attention over `hidden_states` (batch, n, embed_dim), n <= max_length.

        `attention_mask` (batch, n) holds 1 for tokens to keep and 0 for padding: padded tokens are left out of the
        projected keys and values and output zeros. The mask covers (n, k), never (n, n).
        """
        if isinstance(attention_mask, torch.Tensor):
            self._check_inputs(hidden_states, None, None)
            batch_size, length = hidden_states.shape[:2]
            keep = validate_padding_mask(attention_mask, batch_size, length, "attention_mask").to(hidden_states.device)
            allowed = keep.new_ones(1, 1, 1, 1).expand(batch_size, 1, length, self.projected_length)
            attention_mask = AttentionMask(allowed=allowed, query_keeps=keep, backend_mask=None, key_keeps=keep)
        return super().forward(
            hidden_states, attention_mask=attention_mask, output_attentions=output_attentions, **kwargs
        )

    def transform_keys_values(
        self, key: torch.Tensor, value: torch.Tensor, mask: AttentionMask | None
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMask | None]:
        """E^T K and F^T V, with padded keys and values zeroed first: a zero row adds nothing to the k projected
        keys, so padding (and whatever NaN it holds) never reaches them. Every query may then see all k rows; only
        padded queries are silenced."""
        length = key.shape[2]
        if mask is not None and mask.key_keeps is not None:
            keeps = mask.key_keeps[:, None, :, None]
            key, value = torch.where(keeps, key, 0.0), torch.where(keeps, value, 0.0)
            mask = AttentionMask(allowed=mask.allowed, query_keeps=mask.query_keeps, backend_mask=None)
        key_projection = self.key_projection[:, :length]  # shorter sequences use the first rows of E and F
        value_projection = key_projection if self.value_projection is None else self.value_projection[:, :length]
        return project_sequence(key_projection, key), project_sequence(value_projection, value), mask

    def _check_inputs(self, hidden_states, key_value_states, value_states) -> None:
        if key_value_states is not None or value_states is not None:
            raise ValueError("Linformer attention is self-attention only; it takes no key_value_states.")
        super()._check_inputs(hidden_states, key_value_states, value_states)
        if hidden_states.shape[1] > self.max_length:
            raise ValueError(
                f"The sequence has {hidden_states.shape[1]} tokens but the Linformer projections cover at most "
                f"max_length={self.max_length}; build the layer with a larger max_length."
            )


def project_sequence(projection: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """E^T X per head: (groups, n, k) projections, groups = heads or 1, on (b, heads, n, d) states -> (b, heads, k, d).

    Batch and heads of a group are stacked as columns, so E is used as it is: `torch.matmul`'s broadcasting would
    copy E for every batch element and head, b * heads * n * k numbers, many times the states themselves.
    """
    batch_size, num_heads, _, head_dim = states.shape
    groups = projection.shape[0]
    columns = rearrange(states, "b (g h) n d -> g n (b h d)", g=groups)
    projected = torch.matmul(projection.to(states.dtype).transpose(-1, -2), columns)
    # every axis named: einops cannot infer one from an empty batch
    projected = projected.reshape(groups, projection.shape[-1], batch_size, num_heads // groups, head_dim)
    return rearrange(projected, "g k b h d -> b (g h) k d")


@torch.no_grad()
def init_sequence_projections(module: LinformerSelfAttention) -> None:
    """Uniform in +-1/sqrt(k), the `linformer` package's choice; skipped for weights loaded from a checkpoint."""
    bound = 1.0 / math.sqrt(module.projected_length)
    init.uniform_(module.key_projection, -bound, bound)
    if module.value_projection is not None:
        init.uniform_(module.value_projection, -bound, bound)


class LinformerPreTrainedModel(HFAttentionPreTrainedModel):
    config: LinformerConfig
    config_class = LinformerConfig
    base_model_prefix = "linformer"
    main_input_name = "inputs_embeds"
    supports_gradient_checkpointing = False  # a single layer: there is nothing to checkpoint between
    _no_split_modules = ["LinformerSelfAttention"]
    _supports_sdpa = True
    _supports_flash_attn = False  # queries (n) and projected keys (k) differ in length; flash would need varlen
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    # one layer: hidden states are its input and its output; attentions (batch, heads, n, k)
    _can_record_outputs = {"hidden_states": LinformerSelfAttention, "attentions": LinformerSelfAttention}

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """A deterministic small batch that fits the config (transformers' convention for example inputs)."""
        generator = torch.Generator().manual_seed(0)
        length = min(6, self.config.max_sequence_length)
        inputs_embeds = torch.randn(2, length, self.config.hidden_size, generator=generator)
        return {"inputs_embeds": inputs_embeds, "attention_mask": torch.ones(2, length, dtype=torch.long)}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # linear layers
        if isinstance(module, LinformerSelfAttention):
            init_sequence_projections(module)


class LinformerSelfAttentionModel(LinformerPreTrainedModel):
    """One Linformer self-attention layer; `attentions` holds its (batch, heads, n, k) weights."""

    def __init__(self, config: LinformerConfig):
        super().__init__(config)
        self.attention = LinformerSelfAttention(
            config.hidden_size,
            config.num_attention_heads,
            config.max_sequence_length,
            config.projected_length,
            sharing=config.projection_sharing,
            dropout=config.attention_dropout,
            bias=config.qkv_bias,
            config=config,
        )
        self.post_init()

    @capture_outputs
    def forward(
        self,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        r"""
        inputs_embeds (`torch.Tensor` of shape `(batch_size, length, hidden_size)`):
            The tokens, at most `max_sequence_length` of them.
        attention_mask (`torch.Tensor` of shape `(batch_size, length)`, *optional*):
            1 for tokens to keep, 0 for padding. Padded tokens output zeros and are left out of the keys and values.
        """
        kwargs = resolve_forward_kwargs(self, kwargs)
        if inputs_embeds is None:
            raise ValueError("inputs_embeds is required: a (batch, length, hidden_size) tensor.")
        output, _ = self.attention(in_model_dtype(self, inputs_embeds), attention_mask, **kwargs)
        return BaseModelOutput(last_hidden_state=output)


__all__ = ["LinformerPreTrainedModel", "LinformerSelfAttention", "LinformerSelfAttentionModel"]
