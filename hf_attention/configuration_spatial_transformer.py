"""Configuration of the Spatial Transformer Network (Jaderberg et al., 2015). Torch-free."""

from huggingface_hub.dataclasses import strict

from .configuration_base import HFAttentionConfig


@strict
class SpatialTransformerConfig(HFAttentionConfig):
    r"""
    Configuration of [`SpatialTransformerModel`]: a Spatial Transformer Network (Jaderberg et al., 2015) that
    predicts an affine transform from the feature map and resamples the map with it. It starts as the identity.

    Args:
        num_channels (`int`, defaults to 3):
            Channels of the input feature map (or image).
        localisation_channels (`int`, defaults to 16):
            Channels of the two 3x3 convolutions of the localisation network.
        pooled_size (`int`, defaults to 4):
            The localisation features are average-pooled to pooled_size x pooled_size, whatever the input size.
        hidden_size (`int`, defaults to 32):
            Hidden units of the MLP that regresses the six affine parameters.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of the first linear layer.
    """

    model_type = "hf_attention_spatial_transformer"

    num_channels: int = 3
    localisation_channels: int = 16
    pooled_size: int = 4
    hidden_size: int = 32
    initializer_range: float = 0.02

    @classmethod
    def tiny(cls, **overrides) -> "SpatialTransformerConfig":
        """A configuration of a few hundred parameters for tests and demos (every REGISTRY config has one)."""
        return cls(**{"localisation_channels": 4, "pooled_size": 2, "hidden_size": 8, **overrides})


__all__ = ["SpatialTransformerConfig"]
