"""Nadaraya-Watson kernel regression as attention pooling, with a learnable Gaussian kernel width.

Data flow: queries x (batch, queries[, dim]), keys x_i (batch, keys[, dim]), values y_i (batch, keys[, value_dim])
-> scores -(||x - x_i|| w)^2 / 2 for every query/key pair -> softmax over the keys that are not masked -> weighted
average of the y_i. The score is the log of a Gaussian kernel, so the softmax is exactly the normalised kernel.
"""

from typing import Unpack

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import TransformersKwargs
from transformers.utils.output_capturing import capture_outputs

from .attention import ATTENTION_KWARGS, pool_values
from .checks import check_float_input, check_keywords, check_positive
from .configuration_nadaraya_watson import NadarayaWatsonConfig
from .masks import masked_softmax, score_keep_mask
from .pretrained import HFAttentionPreTrainedModel, resolve_forward_kwargs


class NadarayaWatsonAttention(nn.Module):
    """Gaussian-kernel attention pooling: f(x) = sum_i softmax_i(-((x - x_i) w)^2 / 2) y_i.

    Args:
        initial_bandwidth: starting value of w, the inverse kernel width.
        learnable_bandwidth: whether w is trained; a fixed w gets no gradient even where a loader or optimizer sets
            `requires_grad` on every parameter.

    Points are scalars (tensors of shape (batch, n)) or vectors ((batch, n, dim)); values are scalars or vectors
    likewise. Forward returns (predictions, attention weights (batch, 1, queries, keys) or None). The distances and
    the softmax run in float32 whatever the input dtype.
    """

    def __init__(self, initial_bandwidth: float = 1.0, learnable_bandwidth: bool = True):
        super().__init__()
        check_positive("initial_bandwidth", initial_bandwidth)
        self.learnable_bandwidth = learnable_bandwidth
        self.bandwidth = nn.Parameter(torch.tensor([float(initial_bandwidth)]), requires_grad=learnable_bandwidth)

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`attention_mask`: (batch, keys), or (batch, queries, keys) per query, 1/True for pairs to use. Other
        keywords: transformers' `TransformersKwargs` only (a model passes them down); anything else is refused."""
        check_keywords(self, kwargs, ATTENTION_KWARGS)
        queries, keys, scalar_values = self._as_vectors(queries, keys, values)
        keep = score_keep_mask(attention_mask, queries.shape[0], queries.shape[1], keys.shape[1])
        # explicit differences, not cdist: exact (no |a|^2 - 2ab + |b|^2 cancellation) and smooth at distance 0
        bandwidth = self.bandwidth if self.learnable_bandwidth else self.bandwidth.detach()
        differences = (queries.float()[:, :, None, :] - keys.float()[:, None, :, :]) * bandwidth.float()
        probs = masked_softmax(-differences.pow(2).sum(-1)[:, None] / 2, keep).to(values.dtype)
        output = pool_values(probs, values[..., None] if scalar_values else values, keep)
        return (output[..., 0] if scalar_values else output), (probs if output_attentions else None)

    @staticmethod
    def _as_vectors(queries, keys, values) -> tuple[torch.Tensor, torch.Tensor, bool]:
        if queries.dim() != keys.dim() or queries.dim() not in (2, 3) or queries.shape[0] != keys.shape[0]:
            raise ValueError(
                "queries and keys must both be (batch, n) scalars or both (batch, n, dim) vectors with the same "
                f"batch size, got {tuple(queries.shape)} and {tuple(keys.shape)}."
            )
        if queries.dim() == 3 and queries.shape[-1] != keys.shape[-1]:
            raise ValueError(f"queries and keys must have the same dim, got {queries.shape[-1]} and {keys.shape[-1]}.")
        if values.dim() not in (2, 3) or values.shape[:2] != keys.shape[:2]:
            raise ValueError(
                f"values must be (batch, keys) or (batch, keys, value_dim) with (batch, keys) = {tuple(keys.shape[:2])}"
                f", got {tuple(values.shape)}."
            )
        for name, tensor in (("queries", queries), ("keys", keys), ("values", values)):
            check_float_input(name, tensor, "(batch, n) or (batch, n, dim)")
        if keys.shape[1] == 0:
            raise ValueError("There are no key-value pairs (keys of length 0); the regression needs at least one.")
        if queries.dim() == 2:
            queries, keys = queries[..., None], keys[..., None]
        return queries, keys, values.dim() == 2


class NadarayaWatsonPreTrainedModel(HFAttentionPreTrainedModel):
    config: NadarayaWatsonConfig
    config_class = NadarayaWatsonConfig
    base_model_prefix = "nadaraya_watson"
    main_input_name = "query_points"
    supports_gradient_checkpointing = False  # one parameter, nothing to checkpoint
    _no_split_modules = ["NadarayaWatsonAttention"]
    # a Gaussian kernel, not a dot product: no attention kernel computes it
    _supports_sdpa = False
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False
    _can_compile_fullgraph = True
    # one layer: hidden states are the query points and the predictions; attentions (batch, 1, queries, keys)
    _can_record_outputs = {"hidden_states": NadarayaWatsonAttention, "attentions": NadarayaWatsonAttention}

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """A deterministic small batch that fits the config (transformers' convention for example inputs)."""
        generator = torch.Generator().manual_seed(0)
        key_points = torch.rand(2, 8, generator=generator) * 5
        return {
            "query_points": torch.linspace(0, 5, 6).expand(2, -1),
            "key_points": key_points,
            "key_values": torch.sin(key_points),
            "attention_mask": torch.tensor([[1] * 8, [1] * 6 + [0] * 2]),  # the second sample's last keys are padding
        }

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, NadarayaWatsonAttention):
            init.constant_(module.bandwidth, self.config.initial_bandwidth)


class NadarayaWatsonModel(NadarayaWatsonPreTrainedModel):
    """Kernel regression over key-value pairs given at call time; `last_hidden_state` holds the predictions."""

    def __init__(self, config: NadarayaWatsonConfig):
        super().__init__(config)
        self.attention = NadarayaWatsonAttention(config.initial_bandwidth, config.learnable_bandwidth)
        self.post_init()

    @capture_outputs
    def forward(
        self,
        query_points: torch.Tensor | None = None,
        key_points: torch.Tensor | None = None,
        key_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        r"""
        query_points (`torch.Tensor` of shape `(batch_size, num_queries)` or `(batch_size, num_queries, dim)`):
            Where to predict.
        key_points (`torch.Tensor` of shape `(batch_size, num_keys)` or `(batch_size, num_keys, dim)`):
            The observed inputs x_i.
        key_values (`torch.Tensor` of shape `(batch_size, num_keys)` or `(batch_size, num_keys, value_dim)`):
            The observed outputs y_i.
        attention_mask (`torch.Tensor` of shape `(batch_size, num_keys)` or `(batch_size, num_queries, num_keys)`):
            1 for pairs to use, 0 to leave out (padding, or the query's own point in leave-one-out training).
        """
        kwargs = resolve_forward_kwargs(self, kwargs)
        if query_points is None or key_points is None or key_values is None:
            raise ValueError("query_points, key_points and key_values are all required.")
        predictions, _ = self.attention(query_points, key_points, key_values, attention_mask, **kwargs)
        return BaseModelOutput(last_hidden_state=predictions)


__all__ = ["NadarayaWatsonAttention", "NadarayaWatsonModel", "NadarayaWatsonPreTrainedModel"]
