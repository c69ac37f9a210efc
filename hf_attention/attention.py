"""The one home of softmax(Q K^T * scale + mask) V, of attention masks, and of multi-head attention.

Every dot-product attention in hf_attention calls `dot_product_attention`, which dispatches through
transformers' `ALL_ATTENTION_FUNCTIONS` on the implementation name (`eager`, `sdpa`, `flash_attention_2`,
`flex_attention`, or anything registered with `transformers.AttentionInterface.register`).

Masks follow transformers' convention: a key padding mask of shape (batch, key_length) holds 1/True for a
key to keep and 0/False for padding (the opposite of `torch.nn.MultiheadAttention`'s `key_padding_mask`).

Two guarantees hold on every backend:
- a query with no key to attend to (all its keys padded, or causally hidden) gives zeros, never NaN;
- masks stay exact in float16 and bfloat16: masked scores are replaced, never offset by a large constant.

`output_attentions=True` returns the real attention probabilities on every backend: kernels that do not
produce them (sdpa, flash, flex) are bypassed for that call, which is computed eagerly instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

try:  # flex attention exists on every torch transformers 5 supports, but keep import failures readable
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask
except ImportError:  # pragma: no cover
    BlockMask, create_block_mask = None, None

FLASH_IMPLEMENTATIONS = ("flash_attention_2", "flash_attention_3", "flash_attention_4")


@dataclass
class AttentionMask:
    """Which keys each query may attend to, prepared once and shared by every layer of a stack.

    Attributes:
        allowed: bool (batch, 1, query_length, key_length), True where a query may attend to a key. Rows of
            queries with no key at all are opened (all True) so no kernel ever sees an empty softmax row.
        query_keeps: bool (batch, query_length), False for queries whose output must be zero: queries
            with no key, and padded queries in self-attention.
        backend_mask: `allowed` in the form the attention implementation expects (bool tensor for sdpa,
            `BlockMask` for flex, the 2-D padding mask for flash), or None when nothing is masked.
        is_causal: whether the mask is causal, so kernels with a causal fast path may use it.
    """

    allowed: torch.Tensor
    query_keeps: torch.Tensor
    backend_mask: torch.Tensor | BlockMask | None
    is_causal: bool = False


def _as_bool_padding_mask(mask: torch.Tensor, batch_size: int, length: int, name: str) -> torch.Tensor:
    if mask.dim() != 2 or mask.shape[0] != batch_size or mask.shape[1] != length:
        raise ValueError(
            f"`{name}` must have shape (batch_size, length) = ({batch_size}, {length}) with 1 for tokens to keep "
            f"and 0 for padding, got shape {tuple(mask.shape)}."
        )
    if mask.dtype == torch.bool:
        return mask
    if mask.is_floating_point() or mask.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        if not torch.compiler.is_compiling() and not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(
                f"`{name}` must hold only 0 (padding) and 1 (keep); got other values. Additive masks "
                "(0 / -inf) are not accepted here: pass which tokens to keep instead."
            )
        return mask != 0
    raise TypeError(f"`{name}` must be a bool, integer or float tensor of 0/1, got dtype {mask.dtype}.")


def build_attention_mask(
    attn_implementation: str | None,
    *,
    batch_size: int,
    query_length: int,
    key_length: int,
    key_padding_mask: torch.Tensor | None = None,
    query_padding_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    pattern: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> AttentionMask | None:
    """Prepare the mask for one attention call (or a stack of them); None when nothing is masked.

    `key_padding_mask` (batch, key_length) and `query_padding_mask` (batch, query_length) use 1/True to keep;
    in self-attention pass the same mask for both so padded positions neither give nor take attention.
    `pattern` is a structural bool mask, (query_length, key_length) or (batch, 1, query_length, key_length),
    True where a query may attend to a key (e.g. a local window); it is combined with the others.
    """
    if key_padding_mask is None and query_padding_mask is None and not is_causal and pattern is None:
        return None
    allowed = torch.ones(1, 1, query_length, key_length, dtype=torch.bool, device=device)
    if pattern is not None:
        allowed = allowed & _as_pattern(pattern, batch_size, query_length, key_length).to(device)
    if is_causal:
        if query_length != key_length:
            raise ValueError(f"A causal mask needs as many queries as keys, got {query_length} and {key_length}.")
        allowed = allowed.tril()
    keys = None
    if key_padding_mask is not None:
        keys = _as_bool_padding_mask(key_padding_mask, batch_size, key_length, "key_padding_mask").to(device)
        allowed = allowed & keys[:, None, None, :]
    allowed = allowed.expand(batch_size, 1, query_length, key_length)
    query_keeps = allowed.any(dim=-1)[:, 0]
    if query_padding_mask is not None:
        queries = _as_bool_padding_mask(query_padding_mask, batch_size, query_length, "query_padding_mask")
        query_keeps = query_keeps & queries.to(device)
    allowed = allowed | ~allowed.any(dim=-1, keepdim=True)
    backend_mask = _backend_mask(attn_implementation, allowed, keys, is_causal, pattern is not None)
    return AttentionMask(allowed=allowed, query_keeps=query_keeps, backend_mask=backend_mask, is_causal=is_causal)


def _as_pattern(pattern: torch.Tensor, batch_size: int, query_length: int, key_length: int) -> torch.Tensor:
    if pattern.dtype != torch.bool:
        raise TypeError(f"`pattern` must be a bool tensor (True where attention is allowed), got {pattern.dtype}.")
    if pattern.dim() == 2:
        pattern = pattern[None, None]
    if pattern.dim() != 4 or pattern.shape[1] != 1 or pattern.shape[0] not in (1, batch_size):
        raise ValueError(
            f"`pattern` must have shape ({query_length}, {key_length}) or ({batch_size}, 1, {query_length}, "
            f"{key_length}), got {tuple(pattern.shape)}."
        )
    if pattern.shape[-2:] != (query_length, key_length):
        raise ValueError(
            f"`pattern` covers {tuple(pattern.shape[-2:])} query/key positions, "
            f"expected ({query_length}, {key_length})."
        )
    return pattern


def _backend_mask(
    attn_implementation: str | None,
    allowed: torch.Tensor,
    keys: torch.Tensor | None,
    is_causal: bool,
    has_pattern: bool,
) -> torch.Tensor | BlockMask | None:
    batch_size, _, query_length, key_length = allowed.shape
    if keys is None and is_causal and not has_pattern and attn_implementation != "flex_attention":
        return None  # the kernels' own causal path is faster than any materialised mask
    if attn_implementation in FLASH_IMPLEMENTATIONS:
        if has_pattern:
            raise ValueError(f"{attn_implementation} supports padding and causal masks only, not a `pattern`.")
        if query_length != key_length:
            raise ValueError(
                f"{attn_implementation} cannot mask padded keys in cross-attention (queries and keys of different "
                "lengths): its unpadding assumes they share one padding mask. Use attn_implementation='sdpa'."
            )
        if keys is None:  # only queries are masked: nothing for flash to unpad, their outputs are zeroed afterwards
            return None
        return keys | ~keys.any(dim=-1, keepdim=True)
    if attn_implementation == "flex_attention":
        return create_block_mask(
            lambda b, h, q, k: allowed[b, 0, q, k],
            B=batch_size,
            H=None,
            Q_LEN=query_length,
            KV_LEN=key_length,
            device=allowed.device,
        )
    if attn_implementation in ("eager", "sdpa", None) or attn_implementation not in ALL_MASK_ATTENTION_FUNCTIONS:
        return allowed  # user-registered kernels without a registered mask format get sdpa's bool mask
    return ALL_MASK_ATTENTION_FUNCTIONS[attn_implementation](
        batch_size=batch_size,
        q_length=query_length,
        kv_length=key_length,
        mask_function=lambda b, h, q, k: allowed[b, 0, q, k],
        attention_mask=None,
        allow_is_causal_skip=False,
        device=allowed.device,
    )


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    is_causal: bool = False,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention on (batch, heads, length, head_dim) tensors; returns (batch, q_len, heads, dim), probs.

    `attention_mask` is a bool mask (True keeps) or an additive float mask broadcastable to the scores.
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
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return output, probs


def masked_softmax(scores: torch.Tensor, keep_mask: torch.Tensor | None, dim: int = -1) -> torch.Tensor:
    """softmax over `dim` of the scores that `keep_mask` keeps, for attention that is not a dot product.

    `keep_mask` (bool, or 0/1 numbers) must broadcast to `scores` and holds True/1 for a score to keep. Masked
    entries get probability 0 and a row with nothing kept is all zeros, never NaN. The softmax runs in float32
    and masked scores are replaced, never offset by a large constant, so float16/bfloat16 scores stay exact.
    """
    dtype = scores.dtype
    if keep_mask is not None:
        try:
            broadcasts = torch.broadcast_shapes(keep_mask.shape, scores.shape) == scores.shape
        except RuntimeError:
            broadcasts = False
        if not broadcasts:
            raise ValueError(
                f"The mask of shape {tuple(keep_mask.shape)} does not broadcast to the scores of shape "
                f"{tuple(scores.shape)}; pass a key padding mask (batch, key_length) with 1 for keys to keep."
            )
        keep_mask = keep_mask != 0
        scores = scores.float().masked_fill(~keep_mask, torch.finfo(torch.float32).min)
    probs = torch.softmax(scores, dim=dim, dtype=torch.float32)
    if keep_mask is not None:  # a row with nothing kept came out uniform: give it no attention at all
        probs = torch.where(keep_mask, probs, 0.0)
    return probs.to(dtype)


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
    `output_attentions` is set (None otherwise).
    """
    if output_attentions or attn_implementation in (None, "eager"):
        interface, mask = eager_attention_forward, None if attention_mask is None else attention_mask.allowed
    else:
        interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(attn_implementation, eager_attention_forward)
        mask = None if attention_mask is None else attention_mask.backend_mask
    if attention_mask is not None:
        is_causal = attention_mask.is_causal
    # a materialised mask already holds the causal pattern; flash's 2-D padding mask does not
    kernel_causal = is_causal and (mask is None or attn_implementation in FLASH_IMPLEMENTATIONS)
    output, probs = interface(
        module, query, key, value, mask, scaling=scaling, dropout=dropout, is_causal=kernel_causal, **kwargs
    )
    if attention_mask is not None:
        keeps = attention_mask.query_keeps
        output = torch.where(keeps[:, :, None, None], output, 0.0)
        if probs is not None:
            probs = torch.where(keeps[:, None, :, None], probs, 0.0)
    return output, (probs if output_attentions else None)


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention, for self-attention and cross-attention.

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
        fused_qkv: one (embed_dim -> 3 * heads * head_dim) projection instead of three, for self-attention.
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
        fused_qkv: bool = False,
        is_causal: bool = False,
        attn_implementation: str = "sdpa",
        config=None,
    ):
        super().__init__()
        check_attention_shape(embed_dim, num_heads, head_dim)
        check_probability("dropout", dropout)
        key_dim = embed_dim if key_dim is None else key_dim
        value_dim = key_dim if value_dim is None else value_dim
        if fused_qkv and not key_dim == value_dim == embed_dim:
            raise ValueError(
                f"fused_qkv=True needs queries, keys and values of one width, got {embed_dim}, {key_dim}, {value_dim}."
            )
        self.num_heads = num_heads
        self.head_dim = head_dim or embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = dropout
        self.is_causal = is_causal
        self.attn_implementation = attn_implementation
        self.config = config
        inner_dim = num_heads * self.head_dim
        if fused_qkv:
            self.qkv_proj = nn.Linear(embed_dim, 3 * inner_dim, bias=bias)
        else:
            self.q_proj = nn.Linear(embed_dim, inner_dim, bias=bias)
            self.k_proj = nn.Linear(key_dim, inner_dim, bias=bias)
            self.v_proj = nn.Linear(value_dim, inner_dim, bias=bias)
        self.out_proj = nn.Linear(inner_dim, output_dim or embed_dim, bias=output_bias)

    @property
    def fused_qkv(self) -> bool:
        return hasattr(self, "qkv_proj")

    def current_implementation(self) -> str:
        config_implementation = getattr(self.config, "_attn_implementation", None)
        return config_implementation or self.attn_implementation

    def _project(self, hidden_states, key_value_states, value_states):
        if self.fused_qkv:
            if key_value_states is not None or value_states is not None:
                raise ValueError("This attention fuses its Q/K/V projection, so it is self-attention only.")
            qkv = self.qkv_proj(hidden_states)
            return rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.num_heads).unbind(0)
        keys = hidden_states if key_value_states is None else key_value_states
        values = keys if value_states is None else value_states
        query = rearrange(self.q_proj(hidden_states), "b n (h d) -> b h n d", h=self.num_heads)
        key = rearrange(self.k_proj(keys), "b n (h d) -> b h n d", h=self.num_heads)
        value = rearrange(self.v_proj(values), "b n (h d) -> b h n d", h=self.num_heads)
        return query, key, value

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
        differ from the keys' input (DETR adds position embeddings to keys but not to values).
        """
        self._check_inputs(hidden_states, key_value_states, value_states)
        query, key, value = self._project(hidden_states, key_value_states, value_states)
        if isinstance(attention_mask, AttentionMask):
            mask = attention_mask
        else:
            is_self = key_value_states is None and value_states is None
            mask = build_attention_mask(
                self.current_implementation(),
                batch_size=query.shape[0],
                query_length=query.shape[2],
                key_length=key.shape[2],
                key_padding_mask=attention_mask,
                query_padding_mask=attention_mask if is_self else None,
                is_causal=self.is_causal,
                device=query.device,
            )
        output, probs = dot_product_attention(
            self,
            query,
            key,
            value,
            mask,
            self.current_implementation(),
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

    def _check_inputs(self, hidden_states, key_value_states, value_states) -> None:
        expected = self.qkv_proj.in_features if self.fused_qkv else self.q_proj.in_features
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != expected:
            raise ValueError(
                f"Expected hidden_states of shape (batch, length, {expected}), got {tuple(hidden_states.shape)}."
            )
        if self.fused_qkv:
            return
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


def check_attention_shape(hidden_size: int, num_heads: int, head_dim: int | None = None) -> None:
    """Raise when `hidden_size` cannot be split into `num_heads` heads (unless `head_dim` is explicit)."""
    if hidden_size <= 0 or num_heads <= 0:
        raise ValueError(f"hidden size and number of heads must be positive, got {hidden_size} and {num_heads}.")
    if head_dim is None and hidden_size % num_heads != 0:
        raise ValueError(
            f"The hidden size ({hidden_size}) is not a multiple of the number of attention heads ({num_heads})."
        )


def check_probability(name: str, value: float) -> None:
    """Raise unless `value` is a probability that dropout can use: 0 <= value < 1."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1), got {value}.")
