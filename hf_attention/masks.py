"""The one home of attention masks: padding masks validated once, and the per-call mask every backend reads.

Masks follow transformers' convention: a key padding mask of shape (batch, key_length) holds 1/True for a key to keep
and 0/False for padding (the opposite of `torch.nn.MultiheadAttention`'s `key_padding_mask`). Two guarantees hold on
every backend: a query with no key to attend to gives zeros, never NaN; masks stay exact in float16 and bfloat16
(masked scores are replaced, never offset by a large constant).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

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
        key_keeps: bool (batch, key_length), False for keys no query may read (padding), or None when no key is
            masked. Those keys and values are zeroed before any kernel sees them, so NaN/inf in padding never
            reaches a real token (0 x NaN is NaN in `probs @ V`, masked or not).
        is_causal: whether the mask is causal, so kernels with a causal fast path may use it.
    """

    allowed: torch.Tensor
    query_keeps: torch.Tensor
    backend_mask: torch.Tensor | BlockMask | None
    key_keeps: torch.Tensor | None = None
    is_causal: bool = False


def validate_padding_mask(mask: torch.Tensor, batch_size: int, length: int, name: str) -> torch.Tensor:
    """The one check of every padding mask: bool, or numbers that are exactly 0/1, of shape (batch, length).

    Returns the mask as bool (True keeps). Additive masks (0 / -inf), fractions, 2s, 1-D and batch-1 masks are
    refused with the reason, never broadcast or thresholded into a silent wrong answer.
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"`{name}` must be a tensor of shape (batch_size, length), got {type(mask).__name__}.")
    if mask.dim() != 2 or mask.shape[0] != batch_size or mask.shape[1] != length:
        raise ValueError(
            f"`{name}` must have shape (batch_size, length) = ({batch_size}, {length}) with 1 for tokens to keep "
            f"and 0 for padding, got shape {tuple(mask.shape)}."
        )
    return as_keep_mask(mask, name)


def as_keep_mask(mask: torch.Tensor, name: str) -> torch.Tensor:
    """`mask` as bool (True keeps), refusing anything but bools and numbers that are exactly 0 or 1."""
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex():
        raise TypeError(f"`{name}` must be a bool, integer or float tensor of 0/1, got dtype {mask.dtype}.")
    if not torch.compiler.is_compiling() and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(
            f"`{name}` must hold only 0 (padding) and 1 (keep); got other values. Additive masks "
            "(0 / -inf) are not accepted here: pass which tokens to keep instead."
        )
    return mask != 0


def build_attention_mask(
    attn_implementation: str | None,
    queries: torch.Tensor,
    keys: torch.Tensor | None = None,
    *,
    key_padding_mask: torch.Tensor | None = None,
    query_padding_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    pattern: torch.Tensor | None = None,
) -> AttentionMask | None:
    """Prepare the mask for one attention call (or a stack of them); None when nothing is masked.

    `queries` and `keys` are the (batch, length, ...) inputs the mask is for (`keys` defaults to `queries`): the
    batch size, both lengths and the device are read from them. `key_padding_mask` (batch, key_length) and
    `query_padding_mask` (batch, query_length) use 1/True to keep; in self-attention pass the same mask for both
    so padded positions neither give nor take attention. `pattern` is a structural bool mask, (query_length,
    key_length) or (batch, 1, query_length, key_length), True where a query may attend to a key (e.g. a local
    window); it is combined with the others.
    """
    if key_padding_mask is None and query_padding_mask is None and not is_causal and pattern is None:
        return None
    keys = queries if keys is None else keys
    batch_size, query_length, key_length, device = queries.shape[0], queries.shape[1], keys.shape[1], queries.device
    allowed = torch.ones(1, 1, query_length, key_length, dtype=torch.bool, device=device)
    if pattern is not None:
        allowed = allowed & _as_pattern(pattern, batch_size, query_length, key_length).to(device)
    if is_causal:
        if query_length != key_length:
            raise ValueError(f"A causal mask needs as many queries as keys, got {query_length} and {key_length}.")
        allowed = allowed.tril()
    key_keeps = None
    if key_padding_mask is not None:
        key_keeps = validate_padding_mask(key_padding_mask, batch_size, key_length, "key_padding_mask").to(device)
        allowed = allowed & key_keeps[:, None, None, :]
    allowed = allowed.expand(batch_size, 1, query_length, key_length)
    query_keeps = allowed.any(dim=-1)[:, 0]
    if query_padding_mask is not None:
        queries_kept = validate_padding_mask(query_padding_mask, batch_size, query_length, "query_padding_mask")
        query_keeps = query_keeps & queries_kept.to(device)
    allowed = allowed | ~allowed.any(dim=-1, keepdim=True)
    backend_mask = _backend_mask(attn_implementation, allowed, key_keeps, is_causal, pattern is not None)
    return AttentionMask(
        allowed=allowed, query_keeps=query_keeps, backend_mask=backend_mask, key_keeps=key_keeps, is_causal=is_causal
    )


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
    if batch_size == 0:  # an empty batch: nothing to mask, and `dot_product_attention` runs it eagerly
        return allowed
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
        keep_mask = as_keep_mask(keep_mask, "attention_mask")
        scores = scores.float().masked_fill(~keep_mask, torch.finfo(torch.float32).min)
    probs = torch.softmax(scores, dim=dim, dtype=torch.float32)
    if keep_mask is not None:  # a row with nothing kept came out uniform: give it no attention at all
        probs = torch.where(keep_mask, probs, 0.0)
    return probs.to(dtype)


def score_keep_mask(attention_mask: torch.Tensor | None, batch_size: int, num_queries: int, num_keys: int):
    """The mask of attention that is not a dot product (additive, kernel), as (batch, 1, queries or 1, keys) bool.

    Takes a key padding mask (batch, keys) or a per-query mask (batch, queries, keys), both 1/True to keep;
    anything else (1-D, batch-1, additive 0/-inf, fractions) is refused. Pair with `masked_softmax` and
    `pool_values`.
    """
    if attention_mask is None:
        return None
    if attention_mask.dim() == 3:
        if tuple(attention_mask.shape) != (batch_size, num_queries, num_keys):
            raise ValueError(
                f"A per-query `attention_mask` must have shape (batch, queries, keys) = "
                f"{(batch_size, num_queries, num_keys)}, got {tuple(attention_mask.shape)}."
            )
        return as_keep_mask(attention_mask, "attention_mask")[:, None]
    return validate_padding_mask(attention_mask, batch_size, num_keys, "attention_mask")[:, None, None, :]


__all__ = [
    "FLASH_IMPLEMENTATIONS",
    "AttentionMask",
    "as_keep_mask",
    "build_attention_mask",
    "masked_softmax",
    "score_keep_mask",
    "validate_padding_mask",
]
