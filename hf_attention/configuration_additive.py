"""Additive (Bahdanau) attention configuration."""

from huggingface_hub.dataclasses import strict

from .checks import check_probability
from .configuration_base import HFAttentionConfig


@strict
class AdditiveAttentionConfig(HFAttentionConfig):
    r"""
    Configuration of [`AdditiveAttentionModel`]: additive attention (Bahdanau et al., 2015), whose score of a query
    q and a key k is w_v^T tanh(W_q q + W_k k), a one-hidden-layer MLP on the pair. Unlike dot-product attention the
    queries and keys may have different widths.

    Args:
        query_size (`int`, defaults to 256):
            Width of the queries (`inputs_embeds`).
        key_size (`int`, defaults to 256):
            Width of the keys (`encoder_hidden_states`), which are also the values that get averaged.
        hidden_size (`int`, defaults to 256):
            Hidden units h of the scoring MLP: W_q is (h, query_size), W_k is (h, key_size), w_v has h entries.
        attention_dropout (`float`, defaults to 0.0):
            Dropout on the attention weights, applied in training only, in [0, 1).
        qkv_bias (`bool`, defaults to `False`):
            Whether W_q and W_k have a bias (the seed's formula has none); additive attention has no value projection.
            Named as in every other family; `use_bias`, its old name, still loads.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of W_q, W_k and w_v.

    Example:

    ```python
    >>> from hf_attention import AdditiveAttentionConfig, AdditiveAttentionModel
    >>> model = AdditiveAttentionModel(AdditiveAttentionConfig(query_size=20, key_size=2, hidden_size=8))
    ```
    """

    model_type = "hf_attention_additive"
    attribute_map = {"use_bias": "qkv_bias"}  # the field's name before issue 8: old config.json files still load

    query_size: int = 256
    key_size: int = 256
    hidden_size: int = 256
    attention_dropout: float | int = 0.0
    qkv_bias: bool = False
    initializer_range: float = 0.02

    @classmethod
    def tiny(cls, **overrides) -> "AdditiveAttentionConfig":
        """A configuration of a few hundred parameters for tests and demos (every REGISTRY config has one)."""
        return cls(**{"query_size": 6, "key_size": 4, "hidden_size": 8, **overrides})

    def validate_architecture(self):
        """Part of `@strict` validation: impossible settings fail at construction, with the reason (the sizes are
        checked by the base class)."""
        super().validate_architecture()
        check_probability("attention_dropout", self.attention_dropout)


__all__ = ["AdditiveAttentionConfig"]
