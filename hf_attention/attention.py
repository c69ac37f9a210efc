"""The one home of softmax(Q K^T * scale + mask) V and of multi-head attention.

Every dot-product attention in hf_attention calls `dot_product_attention`, which dispatches through transformers'
`ALL_ATTENTION_FUNCTIONS` on the implementation name (`eager`, `sdpa`, `flash_attention_2`, `flex_attention`, or
anything registered with `transformers.AttentionInterface.register`): `sdpa` is PyTorch's
`scaled_dot_product_attention`, `eager` the plain math below. Masks come from `masks.py`.

`output_attentions=True` returns the real attention probabilities on every backend: kernels that do not produce them
(sdpa, flash, flex) are bypassed for that call, which is computed eagerly instead.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .checks import (
    check_attention_shape,
    check_dtype_matches,
    check_float_input,
    check_keywords,
    check_probability,
    check_sizes,
)
from .masks import FLASH_IMPLEMENTATIONS, AttentionMask, build_attention_mask
from .pretrained import FORWARD_KWARGS

# the keywords a module's `**kwargs` may pass on to the attention function: transformers' `TransformersKwargs` (what
# a model's `forward` accepts and hands down) and `return_dict`; any other keyword is refused by `check_keywords`
ATTENTION_KWARGS = FORWARD_KWARGS


def current_implementation(module: nn.Module) -> str:
    """The backend a module runs on: its config's live `_attn_implementation` (so `set_attn_implementation` reaches
    it), or the module's own `attn_implementation` when no config drives it."""
    return getattr(getattr(module, "config", None), "_attn_implementation", None) or module.attn_implementation


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    is_causal: bool = False,
    query_keeps: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention on (batch, heads, length, head_dim) tensors; returns (batch, q_len, heads, dim), probs.

    `attention_mask` is a bool mask (True keeps) or an additive float mask broadcastable to the scores. The softmax
    runs in float32. `query_keeps` (batch, query_length) zeroes the probabilities of queries that must output nothing
    before they meet the values, so the probabilities returned are the very tensor the output was computed from.
    """
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if is_causal and attention_mask is None:
        attention_mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    elif attention_mask is not None:
        scores = scores.float() + attention_mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if query_keeps is not None:
        probs = torch.where(query_keeps[:, None, :, None], probs, 0.0)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return output, probs


def dot_product_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: AttentionMask | None,
    attn_implementation: str | None,
    *,
    scaling: float,
    dropout: float = 0.0,
    is_causal: bool = False,
    output_attentions: bool = False,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(Q K^T * scaling + mask) V on the chosen backend.

    Takes (batch, heads, length, head_dim) tensors and returns the output as (batch, query_length, heads,
    head_dim) and the attention probabilities (batch, heads, query_length, key_length) when
    `output_attentions` is set (None otherwise). Padded keys and values are zeroed before any kernel sees them
    (0 x NaN is NaN in `probs @ V`, masked or not), and queries with no key output zeros.
    """
    if attention_mask is not None:
        is_causal = attention_mask.is_causal
        if attention_mask.key_keeps is not None:
            keeps = attention_mask.key_keeps[:, None, :, None]
            key, value = torch.where(keeps, key, 0.0), torch.where(keeps, value, 0.0)
    if output_attentions or attn_implementation in (None, "eager") or query.shape[0] == 0:
        mask = None if attention_mask is None else attention_mask.allowed
        keeps = None if attention_mask is None else attention_mask.query_keeps
        output, probs = eager_attention_forward(
            module, query, key, value, mask, scaling=scaling, dropout=dropout, is_causal=is_causal, query_keeps=keeps
        )
        return output, (probs if output_attentions else None)
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attn_implementation, eager_attention_forward)
    mask = None if attention_mask is None else attention_mask.backend_mask
    # a materialised mask already holds the causal pattern; flash's 2-D padding mask does not
    kernel_causal = is_causal and (mask is None or attn_implementation in FLASH_IMPLEMENTATIONS)
    output = interface(
        module, query, key, value, mask, scaling=scaling, dropout=dropout, is_causal=kernel_causal, **kwargs
    )[0]
    if attention_mask is not None:
        output = torch.where(attention_mask.query_keeps[:, :, None, None], output, 0.0)
    return output, None


def pool_values(probs: torch.Tensor, values: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """probs (batch, 1, queries, keys) @ values (batch, keys, width) -> (batch, queries, width), for attention that is
    not a dot product (additive, kernel regression).

    Values of keys no query may read are zeroed first: 0 x NaN is NaN, so NaN/inf in padding would reach every
    output. The output comes from `probs` itself, so a gradient reaches the attention map that is returned.
    """
    if keep is not None:
        readable = keep.any(dim=2)[:, 0, :, None]  # (batch, keys, 1)
        values = torch.where(readable, values, 0.0)
    return torch.matmul(probs, values[:, None].to(probs.dtype))[:, 0]


def attend_over_positions(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_implementation: str | None,
    output_attentions: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(Q K^T) V between all positions of two feature maps, through `dot_product_attention`.

    query (b, c, h, w), key (b, c, h', w'), value (b, c_v, h', w') -> (b, c_v, h, w), and with `output_attentions`
    the probabilities (b, 1, h * w, h' * w'). Unscaled, as in the non-local and DANet papers; one head. The scores
    are computed in float32 on every backend: unscaled products of float16 features overflow long before the
    features do. The output comes back in the inputs' dtype.
    """
    dtype, (height, width) = value.dtype, query.shape[-2:]
    query, key, value = (rearrange(t, "b c h w -> b 1 (h w) c").float() for t in (query, key, value))
    output, probabilities = dot_product_attention(
        module, query, key, value, None, attn_implementation, scaling=1.0, output_attentions=output_attentions
    )
    output = rearrange(output, "b (h w) 1 c -> b c h w", h=height, w=width).to(dtype)
    return output, probabilities


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention, for self-attention and cross-attention.

    Holds plain `nn.Linear` projections named as transformers' CLIP and BART name them (`q_proj`, `k_proj`, `v_proj`,
    `out_proj`), so quantizers, PEFT recipes and tensor-parallel plans find them. The number of heads is read from
    the projections' width (`head_dim` is fixed), so a column-sharded projection runs its local heads.

    Args:
        embed_dim: width of the query input (and of the output unless `output_dim` is set).
        num_heads: number of attention heads; `num_heads=1` is single-head attention.
        key_dim: width of the key input, for cross-attention to a context of another width.
        value_dim: width of the value input; defaults to `key_dim`.
        head_dim: width of each head; defaults to `embed_dim // num_heads` (which must then divide exactly).
        output_dim: width of the output; defaults to `embed_dim`.
        dropout: dropout probability on the attention weights, in [0, 1).
        bias: whether the query/key/value projections have a bias.
        output_bias: whether the output projection has a bias.
        is_causal: hide later positions from each query (self-attention only).
        attn_implementation: backend used when the module is not driven by a config: "eager", "sdpa",
            "flash_attention_2", "flex_attention", or any name registered with `AttentionInterface`.
        config: a `PreTrainedConfig` whose live `_attn_implementation` overrides `attn_implementation`, so
            `model.set_attn_implementation(...)` reaches this module.

    Forward returns (output, attention probabilities or None).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        key_dim: int | None = None,
        value_dim: int | None = None,
        head_dim: int | None = None,
        output_dim: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        output_bias: bool = True,
        is_causal: bool = False,
        attn_implementation: str = "sdpa",
        config=None,
    ):
        super().__init__()
        check_sizes(
            embed_dim=embed_dim,
            num_heads=num_heads,
            key_dim=key_dim,
            value_dim=value_dim,
            head_dim=head_dim,
            output_dim=output_dim,
        )
        check_attention_shape(embed_dim, num_heads, head_dim)
        check_probability("dropout", dropout)
        key_dim = embed_dim if key_dim is None else key_dim
        value_dim = key_dim if value_dim is None else value_dim
        self.num_heads = num_heads
        self.head_dim = head_dim or embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = dropout
        self.is_causal = is_causal
        self.attn_implementation = attn_implementation
        self.config = config
        inner_dim = num_heads * self.head_dim
        self.q_proj = nn.Linear(embed_dim, inner_dim, bias=bias)
        self.k_proj = nn.Linear(key_dim, inner_dim, bias=bias)
        self.v_proj = nn.Linear(value_dim, inner_dim, bias=bias)
        self.out_proj = nn.Linear(inner_dim, output_dim or embed_dim, bias=output_bias)

    def current_implementation(self) -> str:
        return current_implementation(self)

    def split_heads(self, states: torch.Tensor) -> torch.Tensor:
        """b n (h d) -> b h n d, as a view.

        `view` with the sizes read from `states`, not `unflatten`: the legacy ONNX exporter gives unflatten's output a
        shape fixed at the traced batch, which transformers' sdpa then reads back as a constant (`attn_output.shape[0]`)
        and bakes into its reshape, so an export with a dynamic batch fails at any other batch size."""
        # the number of heads is spelt out: `-1` cannot be inferred from an empty batch
        return states.view(*states.shape[:-1], states.shape[-1] // self.head_dim, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | AttentionMask | None = None,
        output_attentions: bool = False,
        value_states: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from `hidden_states` (batch, query_length, embed_dim) to itself or to `key_value_states`.

        `attention_mask` is a key padding mask (batch, key_length), 1/True to keep, or an `AttentionMask` from
        `build_attention_mask` (which a stack of layers builds once). `value_states` gives the values when they
        differ from the keys' input (DETR adds position embeddings to keys but not to values). Other keywords go
        on to the attention function: transformers' `TransformersKwargs` only, anything else is refused.
        """
        check_keywords(self, kwargs, ATTENTION_KWARGS)
        if "is_causal" in kwargs:  # one of transformers' keywords, but causality is part of what was built
            raise TypeError(
                f"`is_causal` is fixed when {type(self).__name__} is built (is_causal={self.is_causal}, from its "
                "arguments or the model's config), not per call."
            )
        self._check_inputs(hidden_states, key_value_states, value_states)
        keys = hidden_states if key_value_states is None else key_value_states
        values = keys if value_states is None else value_states
        query = self.split_heads(self.q_proj(hidden_states))
        key = self.split_heads(self.k_proj(keys))
        value = self.split_heads(self.v_proj(values))
        implementation = self.current_implementation()
        if isinstance(attention_mask, AttentionMask):
            mask = attention_mask
        else:
            is_self = key_value_states is None and value_states is None
            mask = build_attention_mask(
                implementation,
                hidden_states,
                keys,
                key_padding_mask=attention_mask,
                query_padding_mask=attention_mask if is_self else None,
                is_causal=self.is_causal,
            )
        key, value, mask = self.transform_keys_values(key, value, mask)
        output, probs = dot_product_attention(
            self,
            query,
            key,
            value,
            mask,
            implementation,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
            is_causal=self.is_causal,
            output_attentions=output_attentions,
            **kwargs,
        )
        output = self.out_proj(output.flatten(2))
        if mask is not None:  # a query that attends to nothing outputs nothing, not the projection's bias
            output = torch.where(mask.query_keeps[:, :, None], output, 0.0)
        return output, probs

    def transform_keys_values(
        self, key: torch.Tensor, value: torch.Tensor, mask: AttentionMask | None
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMask | None]:
        """Hook between the head split and the attention kernel: (batch, heads, key_length, head_dim) keys and
        values and their mask in, the ones to attend to out. Identity here; Linformer projects them along the
        sequence to k rows."""
        return key, value, mask

    def _check_inputs(self, hidden_states, key_value_states, value_states) -> None:
        expected = self.q_proj.in_features
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != expected:
            raise ValueError(
                f"Expected hidden_states of shape (batch, length, {expected}), got {tuple(hidden_states.shape)}."
            )
        inputs = (
            ("hidden_states", hidden_states),
            ("key_value_states", key_value_states),
            ("value_states", value_states),
        )
        for name, states in inputs:
            if states is None:
                continue
            check_float_input(name, states, "(batch, length, width)")
            check_dtype_matches(name, states, self)
            if states.shape[1] == 0:
                raise ValueError(f"`{name}` is an empty sequence (length 0); attention needs at least one token.")
        keys = hidden_states if key_value_states is None else key_value_states
        inputs = (
            ("key_value_states", key_value_states, "key_dim", self.k_proj.in_features),
            ("value_states", value_states, "value_dim", self.v_proj.in_features),
        )
        for name, states, width_name, width in inputs:
            if states is None:
                continue
            if states.dim() != 3 or states.shape[0] != hidden_states.shape[0] or states.shape[1] != keys.shape[1]:
                raise ValueError(
                    f"Expected {name} of shape (batch={hidden_states.shape[0]}, length={keys.shape[1]}, {width}), "
                    f"got {tuple(states.shape)}."
                )
            if states.shape[-1] != width:
                raise ValueError(f"{name} have width {states.shape[-1]}, expected {width_name}={width}.")


__all__ = [
    "ATTENTION_KWARGS",
    "MultiHeadAttention",
    "attend_over_positions",
    "current_implementation",
    "dot_product_attention",
    "eager_attention_forward",
    "pool_values",
]
