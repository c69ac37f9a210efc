"""Multi-head (and single-head) scaled dot-product attention configuration."""

from huggingface_hub.dataclasses import strict

from .checks import check_attention_shape, check_probability
from .configuration_base import HFAttentionConfig


@strict
class MultiHeadAttentionConfig(HFAttentionConfig):
    r"""
    Configuration of [`MultiHeadAttentionModel`]: one multi-head scaled dot-product attention layer (Vaswani et al.,
    2017) with query/key/value projections and an output projection. `num_attention_heads=1` is single-head
    self-attention, softmax(Q K^T / sqrt(d)) V.

    Args:
        hidden_size (`int`, defaults to 512):
            Width of the input tokens (the queries) and of the output.
        num_attention_heads (`int`, defaults to 8):
            Attention heads; must divide `hidden_size`. 1 gives single-head attention.
        encoder_hidden_size (`int`, *optional*):
            Width of the `encoder_hidden_states` that cross-attention attends to; defaults to `hidden_size`.
        attention_dropout (`float`, defaults to 0.0):
            Dropout on the attention weights (not on the output), applied in training only, in [0, 1).
        qkv_bias (`bool`, defaults to `False`):
            Whether the query/key/value projections have a bias (the seed's projections have none).
        output_bias (`bool`, defaults to `True`):
            Whether the output projection has a bias.
        is_causal (`bool`, defaults to `False`):
            Hide later positions from each query (self-attention only).
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of the projections.

    Example:

    ```python
    >>> from hf_attention import MultiHeadAttentionConfig, MultiHeadAttentionModel
    >>> model = MultiHeadAttentionModel(MultiHeadAttentionConfig(hidden_size=64, num_attention_heads=4))
    ```
    """

    model_type = "hf_attention_mha"

    hidden_size: int = 512
    num_attention_heads: int = 8
    encoder_hidden_size: int | None = None
    attention_dropout: float | int = 0.0
    qkv_bias: bool = False
    output_bias: bool = True
    is_causal: bool = False
    initializer_range: float = 0.02

    @classmethod
    def tiny(cls, **overrides) -> "MultiHeadAttentionConfig":
        """A configuration of a few hundred parameters for tests and demos (every REGISTRY config has one)."""
        return cls(**{"hidden_size": 16, "num_attention_heads": 4, **overrides})

    def validate_architecture(self):
        """Part of `@strict` validation: impossible settings fail at construction, with the reason."""
        super().validate_architecture()
        check_attention_shape(self.hidden_size, self.num_attention_heads)
        check_probability("attention_dropout", self.attention_dropout)


__all__ = ["MultiHeadAttentionConfig"]
