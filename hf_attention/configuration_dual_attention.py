"""Configuration of DANet's dual attention head (Fu et al., 2019). Torch-free."""

from huggingface_hub.dataclasses import strict

from .configuration_base import HFAttentionConfig


def dual_attention_inner_channels(num_channels: int, inner_channels: int | None) -> int:
    """Channels inside each DANet branch: `inner_channels`, or max(1, num_channels // 4) as in DANet's head."""
    return inner_channels or max(1, num_channels // 4)


@strict
class DualAttentionConfig(HFAttentionConfig):
    r"""
    Configuration of [`DualAttentionModel`]: DANet's dual attention head (Fu et al., 2019), the sum of a position
    attention branch and a channel attention branch.

    Args:
        num_channels (`int`, defaults to 64):
            Channels of the input and of the output feature map.
        inner_channels (`int`, *optional*):
            Channels inside each branch (3x3 conv in, attention, 3x3 conv out); defaults to max(1, num_channels // 4)
            as in DANet's head.
        reduction (`int`, defaults to 8):
            Position attention projects queries and keys to max(1, inner_channels // reduction) channels;
            1 <= reduction <= inner channels.
        initializer_range (`float`, defaults to 0.02):
            Kept for transformers' initialisation conventions (convolutions use Kaiming initialisation).
    """

    model_type = "hf_attention_dual_attention"

    num_channels: int = 64
    inner_channels: int | None = None
    reduction: int = 8
    initializer_range: float = 0.02

    @classmethod
    def tiny(cls, **overrides) -> "DualAttentionConfig":
        """A configuration of a few hundred parameters for tests and demos (every REGISTRY config has one)."""
        return cls(**{"num_channels": 8, "reduction": 2, **overrides})

    def validate_architecture(self):
        super().validate_architecture()
        inner = dual_attention_inner_channels(self.num_channels, self.inner_channels)
        if self.reduction > inner:
            raise ValueError(
                f"`reduction` ({self.reduction}) is larger than the {inner} inner channels of the position attention "
                f"it divides; use at most {inner}."
            )


__all__ = ["DualAttentionConfig"]
