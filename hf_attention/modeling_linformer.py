"""Linformer self-attention (Wang et al., 2020): keys and values projected along the sequence to k rows.

Data flow: tokens (batch, n, hidden) -> Q, K, V projections split into heads -> padded keys and values zeroed ->
K and V projected along the sequence by E, F (n x k; the first n rows of the max_length x k parameters) to
(batch, heads, k, head_dim) -> softmax(Q (E^T K)^T / sqrt(d)) (F^T V) through `dot_product_attention`, so every
backend applies -> heads concatenated -> output projection. Cost: O(n k) time and memory instead of O(n^2).
"""

import math

import torch
from einops import rearrange
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils.output_capturing import capture_outputs

from .attention import AttentionMask, check_attention_shape, check_probability, dot_product_attention
from .configuration_linformer import LinformerConfig, check_linformer
from .pretrained import HFAttentionPreTrainedModel


class LinformerSelfAttention(nn.Module):
    """Multi-head self-attention whose keys and values are projected from n positions to k.

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
        super().__init__()
        check_attention_shape(embed_dim, num_heads)
        check_probability("dropout", dropout)
        check_linformer(max_length, projected_length, sharing)
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.max_length = max_length
        self.projected_length = projected_length
        self.dropout = dropout
        self.attn_implementation = attn_implementation
        self.config = config
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        # (heads or 1, max_length, k): a leading 1 broadcasts one projection over every head
        projection_shape = (num_heads if sharing == "none" else 1, max_length, projected_length)
        self.key_projection = nn.Parameter(torch.empty(projection_shape))
        self.value_projection = None if sharing == "key_value" else nn.Parameter(torch.empty(projection_shape))
        init_sequence_projections(self)

    def current_implementation(self) -> str:
        return getattr(self.config, "_attn_implementation", None) or self.attn_implementation

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Self-attention over `hidden_states` (batch, n, embed_dim), n <= max_length.

        `attention_mask` (batch, n) holds 1 for tokens to keep and 0 for padding: padded tokens are left out of the
        projected keys and values and output zeros.
        """
        keep = self._check_inputs(hidden_states, attention_mask)
        length = hidden_states.shape[1]
        query, key, value = (
            rearrange(projection(hidden_states), "b n (h d) -> b h n d", h=self.num_heads)
            for projection in (self.q_proj, self.k_proj, self.v_proj)
        )
        if keep is not None:  # a zero row adds nothing to E^T K: padding never reaches the k projected keys
            key, value = (torch.where(keep[:, None, :, None], states, 0.0) for states in (key, value))
        key_projection = self.key_projection[:, :length]  # shorter sequences use the first rows of E and F
        value_projection = key_projection if self.value_projection is None else self.value_projection[:, :length]
        key, value = project_sequence(key_projection, key), project_sequence(value_projection, value)
        mask = None if keep is None else self._query_mask(keep)
        output, probs = dot_product_attention(
            self,
            query,
            key,
            value,
            mask,
            self.current_implementation(),
            scaling=self.head_dim**-0.5,
            dropout=self.dropout if self.training else 0.0,
            output_attentions=output_attentions,
            **kwargs,
        )
        output = self.out_proj(output.flatten(2))
        if keep is not None:  # padded tokens output nothing, not the projection's bias
            output = torch.where(keep[:, :, None], output, 0.0)
        return output, probs

    def _query_mask(self, keep: torch.Tensor) -> AttentionMask:
        """Every query may see all k projected keys; only padded queries are silenced."""
        batch_size, length = keep.shape
        allowed = keep.new_ones(1, 1, 1, 1).expand(batch_size, 1, length, self.projected_length)
        return AttentionMask(allowed=allowed, query_keeps=keep, backend_mask=None)

    def _check_inputs(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        width = self.q_proj.in_features
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != width:
            raise ValueError(
                f"Expected hidden_states of shape (batch, length, {width}), got {tuple(hidden_states.shape)}."
            )
        if hidden_states.shape[1] > self.max_length:
            raise ValueError(
                f"The sequence has {hidden_states.shape[1]} tokens but the Linformer projections cover at most "
                f"max_length={self.max_length}; build the layer with a larger max_length."
            )
        if attention_mask is None:
            return None
        if attention_mask.shape != hidden_states.shape[:2]:
            raise ValueError(
                f"attention_mask must have shape (batch, length) = {tuple(hidden_states.shape[:2])} with 1 for "
                f"tokens to keep and 0 for padding, got {tuple(attention_mask.shape)}."
            )
        if attention_mask.dtype != torch.bool and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (keep).")
        return attention_mask != 0


def project_sequence(projection: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """E^T X per head: (groups, n, k) projections, groups = heads or 1, on (b, heads, n, d) states -> (b, heads, k, d).

    Batch and heads of a group are stacked as columns, so E is used as it is: `torch.matmul`'s broadcasting would
    copy E for every batch element and head, b * heads * n * k numbers, many times the states themselves.
    """
    batch_size, _, _, head_dim = states.shape
    groups = projection.shape[0]
    columns = rearrange(states, "b (g h) n d -> g n (b h d)", g=groups)
    projected = torch.matmul(projection.to(states.dtype).transpose(-1, -2), columns)
    return rearrange(projected, "g k (b h d) -> b (g h) k d", b=batch_size, d=head_dim)


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
    _can_record_outputs = {"attentions": LinformerSelfAttention}

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
        self, inputs_embeds: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutput:
        r"""
        inputs_embeds (`torch.Tensor` of shape `(batch_size, length, hidden_size)`):
            The tokens, at most `max_sequence_length` of them.
        attention_mask (`torch.Tensor` of shape `(batch_size, length)`, *optional*):
            1 for tokens to keep, 0 for padding. Padded tokens output zeros and are left out of the keys and values.
        """
        if inputs_embeds is None:
            raise ValueError("inputs_embeds is required: a (batch, length, hidden_size) tensor.")
        kwargs["output_attentions"] = kwargs.get("output_attentions", self.config.output_attentions)
        output, _ = self.attention(inputs_embeds, attention_mask, **kwargs)
        return BaseModelOutput(last_hidden_state=output)


__all__ = ["LinformerPreTrainedModel", "LinformerSelfAttention", "LinformerSelfAttentionModel"]
