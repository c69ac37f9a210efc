"""Configuration of cross-attention from an image feature map to a token context."""

from huggingface_hub.dataclasses import strict

from .checks import check_attention_shape, check_probability
from .configuration_base import HFAttentionConfig


@strict
class FeatureMapCrossAttentionConfig(HFAttentionConfig):
    r"""
    Configuration of [`FeatureMapCrossAttentionModel`]: every pixel of a (batch, channels, height, width) feature
    map becomes a query (1x1 conv to `hidden_size`), the tokens of a context (e.g. a caption's embeddings) give the
    keys and values, and a 1x1 conv maps the attended result back to `num_channels`. This is the text-conditioning
    cross-attention of latent diffusion U-Nets.

    Args:
        num_channels (`int`, defaults to 3):
            Channels of the input feature map, and of the output.
        hidden_size (`int`, defaults to 512):
            Width the pixels are projected to before attention (the seed's `emb_dim`).
        num_attention_heads (`int`, defaults to 8):
            Attention heads; must divide `hidden_size`. 1 gives single-head cross-attention.
        encoder_hidden_size (`int`, *optional*):
            Width of the context tokens; defaults to `hidden_size`.
        attention_dropout (`float`, defaults to 0.0):
            Dropout on the attention weights, applied in training only, in [0, 1).
        qkv_bias (`bool`, defaults to `True`):
            Whether the query/key/value projections have a bias.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of the projections.

    Example:

    ```python
    >>> from hf_attention import FeatureMapCrossAttentionConfig, FeatureMapCrossAttentionModel
    >>> config = FeatureMapCrossAttentionConfig(num_channels=4, hidden_size=64, num_attention_heads=4,
    ...                                         encoder_hidden_size=32)
    >>> model = FeatureMapCrossAttentionModel(config)
    ```
    """

    model_type = "hf_attention_feature_map_cross_attention"

    num_channels: int = 3
    hidden_size: int = 512
    num_attention_heads: int = 8
    encoder_hidden_size: int | None = None
    attention_dropout: float | int = 0.0
    qkv_bias: bool = True
    initializer_range: float = 0.02

    @classmethod
    def tiny(cls, **overrides) -> "FeatureMapCrossAttentionConfig":
        """A configuration of about a thousand parameters for tests and demos (every REGISTRY config has one)."""
        return cls(
            **{"num_channels": 3, "hidden_size": 16, "num_attention_heads": 4, "encoder_hidden_size": 8, **overrides}
        )

    def validate_architecture(self):
        """Part of `@strict` validation: impossible settings fail at construction, with the reason."""
        super().validate_architecture()
        check_attention_shape(self.hidden_size, self.num_attention_heads)
        check_probability("attention_dropout", self.attention_dropout)


__all__ = ["FeatureMapCrossAttentionConfig"]
