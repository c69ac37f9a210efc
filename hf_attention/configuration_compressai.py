"""Configuration of CompressAI's attention block (Cheng et al., 2020). Torch-free."""

from huggingface_hub.dataclasses import strict

from .configuration_base import HFAttentionConfig


@strict
class CompressAIAttentionConfig(HFAttentionConfig):
    r"""
    Configuration of [`CompressAIAttentionModel`]: the attention block of CompressAI (Cheng et al., 2020),
    x + a(x) * sigmoid(b(x)) with a three residual units and b three residual units and a 1x1 convolution.
    Its weight names match `compressai.layers.AttentionBlock`, so that block's state dict loads as is.

    Args:
        num_channels (`int`, defaults to 64):
            Channels N of the input feature map; the residual units squeeze to N // 2, so N is at least 2.
        initializer_range (`float`, defaults to 0.02):
            Kept for transformers' initialisation conventions (convolutions use Kaiming initialisation).
    """

    model_type = "hf_attention_compressai_attention"

    num_channels: int = 64
    initializer_range: float = 0.02

    @classmethod
    def tiny(cls, **overrides) -> "CompressAIAttentionConfig":
        """A configuration of a few hundred parameters for tests and demos (every REGISTRY config has one)."""
        return cls(**{"num_channels": 8, **overrides})

    def validate_architecture(self):
        super().validate_architecture()
        if self.num_channels < 2:
            raise ValueError(
                f"`num_channels` must be at least 2 (the residual units use N // 2), got {self.num_channels}."
            )


__all__ = ["CompressAIAttentionConfig"]
