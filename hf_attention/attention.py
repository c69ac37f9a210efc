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

"sdpa" in bfloat16 on a CPU with AVX-512 bf16 but no AMX also runs eagerly, and in training at short lengths on one
with AMX, where that is faster than PyTorch's CPU flash kernel (`_eager_outruns_cpu_sdpa` says when and at what
price); "sdpa" in float16 on a CPU without oneDNN fp16 kernels runs that kernel on float32 operands, which it
computes in anyway, at twice the speed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .checks import check_attention_shape, check_float_input, check_probability
from .fused_linear import (
    RoutedLinear,
    apply_linear,
    cpu_bf16_dot_product_units,
    float32_compute_dtype,
    matmul,
    on_float32_kernels,
)

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


def current_implementation(module: nn.Module) -> str:
    """The backend a module runs on: its config's live `_attn_implementation` (so `set_attn_implementation` reaches
    it), or the module's own `attn_implementation` when no config drives it."""
    return getattr(getattr(module, "config", None), "_attn_implementation", None) or module.attn_implementation


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

    `attention_mask` is a bool mask (True keeps) or an additive float mask broadcastable to the scores.
    `query_keeps` (batch, query_length) zeroes the probabilities of queries that must output nothing before they
    meet the values, so the probabilities returned are the very tensor the output was computed from.
    """
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    # scaling the queries, not the scores: a pass over (length x head_dim), not (length x length), same roundings.
    # Keys split from a fused projection are strided: a plain copy costs a third of the transposing one matmul makes
    scores = matmul(query * scaling, key.contiguous().transpose(-1, -2))
    if is_causal and attention_mask is None:
        attention_mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        scores = scores.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min)
    elif attention_mask is not None:
        scores = scores.float() + attention_mask
    probs = _softmax_of_scores(scores, query.dtype)
    if query_keeps is not None:
        probs = torch.where(query_keeps[:, None, :, None], probs, 0.0)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    output = matmul(probs, value).transpose(1, 2).contiguous()
    return output, probs


def _softmax_of_scores(scores: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """softmax over keys, computed in float32 and returned in `dtype`.

    The CPU's bfloat16/float16 softmax kernels compute in float32, so their result is one rounding of the float32
    softmax (it differed from `softmax(dtype=float32).to(dtype)` in 1 entry of 100,000, by one rounding, no less
    accurate, by hand). On the CPU, where no gradient flows, the kernel overwrites the scores: a fresh (length x length)
    buffer per layer costs page faults that took as long as the softmax itself (timed by hand; glibc returns large
    blocks to the system). In bfloat16 training it runs forward and backward on the bf16 kernel: that skips four
    dtype copies of the scores and keeps one bf16 copy of the probabilities for the backward instead of a float32
    one too, 1.9x faster for (48, 197, 197) scores, its gradients' mean error 1.4x the float32 route's (by hand).
    """
    same_dtype_on_cpu = scores.dtype == dtype and scores.device.type == "cpu"
    if same_dtype_on_cpu and not (torch.is_grad_enabled() and scores.requires_grad):
        return torch.softmax(scores, dim=-1, out=scores)
    if same_dtype_on_cpu and dtype == torch.bfloat16:
        return torch.softmax(scores, dim=-1)
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(dtype)


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


def pool_values(probs: torch.Tensor, values: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """probs (batch, 1, queries, keys) @ values (batch, keys, width) -> (batch, queries, width).

    Values of keys no query may read are zeroed first: 0 x NaN is NaN, so NaN/inf in padding would reach every
    output. The output comes from `probs` itself, so a gradient reaches the attention map that is returned.
    """
    if keep is not None:
        readable = keep.any(dim=2)[:, 0, :, None]  # (batch, keys, 1)
        values = torch.where(readable, values, 0.0)
    return matmul(probs, values[:, None].to(probs.dtype))[:, 0]


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
    if attention_mask is not None:
        is_causal = attention_mask.is_causal
        if attention_mask.key_keeps is not None:
            keeps = attention_mask.key_keeps[:, None, :, None]
            key, value = torch.where(keeps, key, 0.0), torch.where(keeps, value, 0.0)
    eager = output_attentions or attn_implementation in (None, "eager") or query.shape[0] == 0
    if eager or _eager_outruns_cpu_sdpa(query, key, value, attn_implementation):
        mask = None if attention_mask is None else attention_mask.allowed
        keeps = None if attention_mask is None else attention_mask.query_keeps
        output, probs = eager_attention_forward(
            module, query, key, value, mask, scaling=scaling, dropout=dropout, is_causal=is_causal, query_keeps=keeps
        )
        return output, (probs if output_attentions else None)
    interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(attn_implementation, eager_attention_forward)
    mask = None if attention_mask is None else attention_mask.backend_mask
    # a materialised mask already holds the causal pattern; flash's 2-D padding mask does not
    kernel_causal = is_causal and (mask is None or attn_implementation in FLASH_IMPLEMENTATIONS)

    def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return interface(
            module, query, key, value, mask, scaling=scaling, dropout=dropout, is_causal=kernel_causal, **kwargs
        )[0]

    if attn_implementation == "sdpa" and float32_compute_dtype(query, key, value) == torch.float16:
        # PyTorch's CPU flash kernel computes in float32 anyway, and without oneDNN fp16 kernels its float16 call ran
        # at half the speed of a float32 call on the same numbers, no closer to the exact result (ViT-S/16 shapes,
        # timed by hand: 8-10 against 4-5 ms on an AVX-512 EPYC, 22 against 11 ms on AVX2)
        output = on_float32_kernels(attend, torch.float16, query, key, value)
    else:
        output = attend(query, key, value)
    if attention_mask is not None:
        output = torch.where(attention_mask.query_keeps[:, :, None, None], output, 0.0)
    return output, None


# The most scores per layer (64 MiB in bfloat16) for which sdpa may run eagerly on the CPU: flash needs no buffer
EAGER_SCORES_LIMIT = 2**25
# With AMX, eager attention wins only training, and there only where its scores are few: up to 320 keys and 2^24
# scores a layer (32 MiB in bfloat16) it ran forward + backward 1.7-4.9x faster than the flash kernel, its query
# gradients' largest error from float32 1.0-1.7x the kernel's (`benchmarks/results/cpu_attention_bf16_amx_training
# .json`). The bounds are conservative: beyond them that run won too (2.0x at 401 keys, 1.6x at 28M scores) but lost
# at 1,024 and 2,048 keys (0.61x), and earlier runs by hand lost at 401 keys and 15M scores (0.96x) and at 320 keys
# and 28M scores (0.85x).
AMX_EAGER_TRAINING_MAX_KEYS = 320
AMX_EAGER_TRAINING_MAX_SCORES = 2**24


def _eager_outruns_cpu_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_implementation) -> bool:
    """Whether "sdpa" should run as eager attention: bfloat16 on a CPU where PyTorch's flash kernel is slower.

    With AVX-512 bf16 but no AMX, that kernel computes in float32, at the float32 matmul rate (80-160 GFLOP/s on 2
    cores, against 700-900 for a bf16 matmul), while eager attention's bf16 matmuls and float32 softmax ran 1.6-2.4x
    faster from 50 to 1,024 tokens (`benchmarks/bench_cpu_attention.py`). With AMX the kernel's forward runs on the
    tiles and wins inference at every length (eager ran at 0.33-0.96x of its rate from 50 to 2,048 tokens,
    `benchmarks/results/cpu_attention_bf16_amx.json`), but its backward is slow at short lengths, so training takes
    eager attention within `AMX_EAGER_TRAINING_MAX_KEYS` and `AMX_EAGER_TRAINING_MAX_SCORES` (a reentrant
    checkpointed forward, run without gradients, keeps the kernel; its recompute runs eagerly, as `fused_linear`'s
    routes do). The price is what transformers' eager path pays: the scores are rounded to bf16 before the softmax,
    and training keeps the probabilities for the backward pass (bounded by `EAGER_SCORES_LIMIT` per layer, with AMX
    by `AMX_EAGER_TRAINING_MAX_SCORES`). The question asked is whether a backward may run: a forward that builds a
    graph (weights that need gradients, outside `torch.no_grad`) counts as training, eval mode or not.
    `sdpa_kernel` calls that leave out the math backend keep PyTorch's kernels, as does `torch.compile`.
    """
    if attn_implementation != "sdpa" or query.device.type != "cpu" or query.dtype != torch.bfloat16:
        return False
    num_scores = query.shape[:-1].numel() * key.shape[-2]
    if (
        torch.compiler.is_compiling()
        or not torch.backends.cuda.math_sdp_enabled()  # the flag sdpa_kernel sets, for every device
        or num_scores > EAGER_SCORES_LIMIT
    ):
        return False
    units = cpu_bf16_dot_product_units()
    if units == "avx512":
        return True
    return (
        units == "amx"
        and torch.is_grad_enabled()
        and any(tensor.requires_grad for tensor in (query, key, value))
        and key.shape[-2] <= AMX_EAGER_TRAINING_MAX_KEYS
        and num_scores <= AMX_EAGER_TRAINING_MAX_SCORES
    )


def split_heads(states: torch.Tensor, num_heads: int) -> torch.Tensor:
    """b n (h d) -> b h n d, as a view: einops' `rearrange` looks its pattern up on every call (9 us under cProfile),
    Python that small batches on a GPU wait for."""
    return states.unflatten(-1, (num_heads, -1)).transpose(1, 2)


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
            self.qkv_proj = RoutedLinear(embed_dim, 3 * inner_dim, bias=bias)
        else:
            self.q_proj = RoutedLinear(embed_dim, inner_dim, bias=bias)
            self.k_proj = RoutedLinear(key_dim, inner_dim, bias=bias)
            self.v_proj = RoutedLinear(value_dim, inner_dim, bias=bias)
        self.out_proj = RoutedLinear(inner_dim, output_dim or embed_dim, bias=output_bias)

    @property
    def fused_qkv(self) -> bool:
        return "qkv_proj" in self._modules  # not hasattr: nn.Module raises and catches an AttributeError for it

    def current_implementation(self) -> str:
        return current_implementation(self)

    def _project(self, hidden_states, key_value_states, value_states):
        if self.fused_qkv:
            if key_value_states is not None or value_states is not None:
                raise ValueError("This attention fuses its Q/K/V projection, so it is self-attention only.")
            qkv = apply_linear(hidden_states, self.qkv_proj)
            # b n (three h d) -> three b h n d
            return qkv.unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)
        keys = hidden_states if key_value_states is None else key_value_states
        values = keys if value_states is None else value_states
        query = split_heads(apply_linear(hidden_states, self.q_proj), self.num_heads)
        key = split_heads(apply_linear(keys, self.k_proj), self.num_heads)
        value = split_heads(apply_linear(values, self.v_proj), self.num_heads)
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
        implementation = self.current_implementation()
        if isinstance(attention_mask, AttentionMask):
            mask = attention_mask
        else:
            is_self = key_value_states is None and value_states is None
            mask = build_attention_mask(
                implementation,
                hidden_states,
                hidden_states if key_value_states is None else key_value_states,
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
        output = apply_linear(output.flatten(2), self.out_proj)
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
        expected = self.qkv_proj.in_features if self.fused_qkv else self.q_proj.in_features
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != expected:
            raise ValueError(
                f"Expected hidden_states of shape (batch, length, {expected}), got {tuple(hidden_states.shape)}."
            )
        for name, states in (("hidden_states", hidden_states), ("key_value_states", key_value_states)):
            if states is None:
                continue
            check_float_input(name, states, "(batch, length, width)")
            if states.shape[1] == 0:
                raise ValueError(f"`{name}` is an empty sequence (length 0); attention needs at least one token.")
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
