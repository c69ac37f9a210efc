"""Additive (Bahdanau) attention: score(q, k) = w_v^T tanh(W_q q + W_k k), softmax over the valid keys.

Data flow: queries (batch, queries, query_size) and keys (batch, keys, key_size) -> W_q q and W_k k, both of width
h -> every query/key pair summed and squashed by tanh (batch, queries, keys, h) -> w_v gives one score per pair ->
masked softmax over the keys that are not padding -> dropout -> weighted average of the values.
"""

from typing import Unpack

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import TransformersKwargs
from transformers.utils.output_capturing import capture_outputs

from .attention import ATTENTION_KWARGS, pool_values
from .checks import check_dtype_matches, check_float_input, check_keywords, check_probability, check_sizes
from .configuration_additive import AdditiveAttentionConfig
from .masks import masked_softmax, score_keep_mask, validate_padding_mask
from .pretrained import HFAttentionPreTrainedModel, in_model_dtype, resolve_forward_kwargs


class AdditiveAttention(nn.Module):
    """Additive attention from queries of one width to keys of another.

    Args:
        query_dim: width of the queries.
        key_dim: width of the keys.
        hidden_dim: hidden units h of the scoring MLP.
        dropout: dropout probability on the attention weights, in [0, 1).
        bias: whether W_q and W_k have a bias.

    Forward returns (output, attention weights (batch, 1, queries, keys) or None); the output has the values'
    width. The softmax runs in float32 whatever the input dtype; the weights come back in the values' dtype.
    """

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int, *, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        check_sizes(query_dim=query_dim, key_dim=key_dim, hidden_dim=hidden_dim)
        check_probability("dropout", dropout)
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=bias)  # W_q
        self.key_proj = nn.Linear(key_dim, hidden_dim, bias=bias)  # W_k
        self.score_proj = nn.Linear(hidden_dim, 1, bias=False)  # w_v
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from `queries` (batch, q_len, query_dim) to `keys` (batch, k_len, key_dim).

        `values` (batch, k_len, value_dim) default to the keys. `attention_mask` is a key padding mask
        (batch, k_len), or (batch, q_len, k_len) per query, with 1/True for keys to keep; a query with no key
        to keep outputs zeros. Weights are (batch, 1, q_len, k_len): one head. Other keywords: transformers'
        `TransformersKwargs` only (a model passes them down); anything else is refused.
        """
        check_keywords(self, kwargs, ATTENTION_KWARGS)
        values = keys if values is None else values
        self._check_inputs(queries, keys, values)
        keep = score_keep_mask(attention_mask, queries.shape[0], queries.shape[1], keys.shape[1])
        # (b, q, 1, h) + (b, 1, k, h): the MLP sees every query/key pair without materialising the concatenation.
        # The sum and the tanh run in float32, so that large float16 projections cannot overflow before the tanh;
        # the scores are bounded by |w_v|, so w_v may then run in the inputs' dtype.
        features = torch.tanh(self.query_proj(queries)[:, :, None].float() + self.key_proj(keys)[:, None].float())
        scores = self.score_proj(features.to(queries.dtype))[..., 0][:, None].float()
        probs = masked_softmax(scores, keep).to(values.dtype)
        output = pool_values(self.dropout(probs), values, keep)
        return output, (probs if output_attentions else None)

    def _check_inputs(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        query_dim, key_dim = self.query_proj.in_features, self.key_proj.in_features
        if queries.dim() != 3 or queries.shape[-1] != query_dim:
            raise ValueError(f"Expected queries of shape (batch, length, {query_dim}), got {tuple(queries.shape)}.")
        if keys.dim() != 3 or keys.shape[0] != queries.shape[0] or keys.shape[-1] != key_dim:
            raise ValueError(
                f"Expected keys of shape (batch={queries.shape[0]}, length, {key_dim}), got {tuple(keys.shape)}."
            )
        if values.dim() != 3 or values.shape[:2] != keys.shape[:2]:
            raise ValueError(
                f"Expected values of shape (batch, key_length) = {tuple(keys.shape[:2])} + (width,), "
                f"got {tuple(values.shape)}."
            )
        for name, tensor in (("queries", queries), ("keys", keys), ("values", values)):
            check_float_input(name, tensor, "(batch, length, width)")
            if name != "values":  # the values are only averaged, in float32 (`pool_values`)
                check_dtype_matches(name, tensor, self)
            if tensor.shape[1] == 0:
                raise ValueError(f"`{name}` is an empty sequence (length 0); attention needs at least one.")


class AdditiveAttentionPreTrainedModel(HFAttentionPreTrainedModel):
    config: AdditiveAttentionConfig
    config_class = AdditiveAttentionConfig
    base_model_prefix = "additive"
    main_input_name = "inputs_embeds"
    supports_gradient_checkpointing = False  # a single layer: there is nothing to checkpoint between
    _no_split_modules = ["AdditiveAttention"]
    # not a dot product: no sdpa/flash/flex kernel computes it, so the backend flags stay False
    _supports_sdpa = False
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False
    _can_compile_fullgraph = True
    # one layer: hidden states are the queries and the output; attentions (batch, 1, queries, keys)
    _can_record_outputs = {"hidden_states": AdditiveAttention, "attentions": AdditiveAttention}

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """A deterministic small batch that fits the config (transformers' convention for example inputs)."""
        generator = torch.Generator().manual_seed(0)
        return {
            "inputs_embeds": torch.randn(2, 3, self.config.query_size, generator=generator),
            "encoder_hidden_states": torch.randn(2, 5, self.config.key_size, generator=generator),
            "encoder_attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
        }


class AdditiveAttentionModel(AdditiveAttentionPreTrainedModel):
    """One additive attention layer; `attentions` holds its (batch, 1, query_length, key_length) weights."""

    def __init__(self, config: AdditiveAttentionConfig):
        super().__init__(config)
        self.attention = AdditiveAttention(
            config.query_size,
            config.key_size,
            config.hidden_size,
            dropout=config.attention_dropout,
            bias=config.qkv_bias,
        )
        self.post_init()

    @capture_outputs
    def forward(
        self,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        r"""
        inputs_embeds (`torch.Tensor` of shape `(batch_size, query_length, query_size)`):
            The queries.
        encoder_hidden_states (`torch.Tensor` of shape `(batch_size, key_length, key_size)`):
            The keys, which are also the values that are averaged.
        encoder_attention_mask (`torch.Tensor` of shape `(batch_size, key_length)`, *optional*):
            1 for keys to keep, 0 for padding (the "valid lengths"). A query with no key to keep outputs zeros.
        """
        kwargs = resolve_forward_kwargs(self, kwargs)
        if inputs_embeds is None or encoder_hidden_states is None:
            raise ValueError(
                "inputs_embeds (the queries) and encoder_hidden_states (the keys and values) are both required."
            )
        inputs_embeds, encoder_hidden_states = (
            in_model_dtype(self, inputs_embeds),
            in_model_dtype(self, encoder_hidden_states),
        )
        if encoder_attention_mask is not None and encoder_hidden_states.dim() == 3:
            encoder_attention_mask = validate_padding_mask(
                encoder_attention_mask, *encoder_hidden_states.shape[:2], "encoder_attention_mask"
            )
        output, _ = self.attention(inputs_embeds, encoder_hidden_states, None, encoder_attention_mask, **kwargs)
        return BaseModelOutput(last_hidden_state=output)


__all__ = ["AdditiveAttention", "AdditiveAttentionModel", "AdditiveAttentionPreTrainedModel"]
