"""Linformer self-attention configuration."""

from huggingface_hub.dataclasses import strict

from .checks import check_attention_shape, check_probability, check_sizes
from .configuration_base import HFAttentionConfig

PROJECTION_SHARING = ("none", "headwise", "key_value")


def check_linformer(
    max_sequence_length: int, projected_length: int, sharing: str, length_name: str = "max_sequence_length"
) -> None:
    """Raise unless the Linformer projection settings are usable; `length_name` is what the caller calls the
    maximum sequence length (the module's `max_length`)."""
    check_sizes(**{length_name: max_sequence_length, "projected_length": projected_length})
    if sharing not in PROJECTION_SHARING:
        raise ValueError(f"The projection sharing must be one of {PROJECTION_SHARING}, got {sharing!r}.")


@strict
class LinformerConfig(HFAttentionConfig):
    r"""
    Configuration of [`LinformerSelfAttentionModel`]: one Linformer self-attention layer (Wang et al., 2020). Keys
    and values are projected along the sequence, from n tokens to k, before the softmax, so attention costs
    O(n k) instead of O(n^2).

    Args:
        hidden_size (`int`, defaults to 512):
            Width of the tokens and of the output.
        num_attention_heads (`int`, defaults to 8):
            Attention heads; must divide `hidden_size`.
        max_sequence_length (`int`, defaults to 4097):
            Longest sequence n the projections cover (shorter sequences use their first rows).
        projected_length (`int`, defaults to 256):
            k, the number of rows keys and values are projected to.
        projection_sharing (`str`, defaults to `"headwise"`):
            `"none"`: every head has its own key and value projections; `"headwise"`: one key projection and one
            value projection shared by all heads; `"key_value"`: one projection for keys and values of all heads.
        attention_dropout (`float`, defaults to 0.0):
            Dropout on the attention weights, applied in training only, in [0, 1).
        qkv_bias (`bool`, defaults to `False`):
            Whether the query/key/value projections have a bias.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of the linear layers (the sequence projections are
            uniform in +-1/sqrt(k), as in the `linformer` package).

    Example:

    ```python
    >>> from hf_attention import LinformerConfig, LinformerSelfAttentionModel
    >>> model = LinformerSelfAttentionModel(LinformerConfig(hidden_size=64, num_attention_heads=4,
    ...                                                     max_sequence_length=1024, projected_length=64))
    ```
    """

    model_type = "hf_attention_linformer"

    hidden_size: int = 512
    num_attention_heads: int = 8
    max_sequence_length: int = 4097
    projected_length: int = 256
    projection_sharing: str = "headwise"
    attention_dropout: float | int = 0.0
    qkv_bias: bool = False
    initializer_range: float = 0.02

    @classmethod
    def tiny(cls, **overrides) -> "LinformerConfig":
        """A configuration of a few hundred parameters for tests and demos (every REGISTRY config has one)."""
        return cls(
            **{
                "hidden_size": 16,
                "num_attention_heads": 2,
                "max_sequence_length": 12,
                "projected_length": 4,
                **overrides,
            }
        )

    def validate_architecture(self):
        """Part of `@strict` validation: impossible settings fail at construction, with the reason."""
        super().validate_architecture()
        check_attention_shape(self.hidden_size, self.num_attention_heads)
        check_probability("attention_dropout", self.attention_dropout)
        check_linformer(self.max_sequence_length, self.projected_length, self.projection_sharing)


__all__ = ["LinformerConfig"]
