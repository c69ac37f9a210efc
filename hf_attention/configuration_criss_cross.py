"""Configuration of CCNet's recurrent criss-cross attention (Huang et al., 2019). Torch-free."""

from huggingface_hub.dataclasses import strict

from .configuration_base import HFAttentionConfig


@strict
class CrissCrossAttentionConfig(HFAttentionConfig):
    r"""
    Configuration of [`CrissCrossAttentionModel`]: CCNet's recurrent criss-cross attention (Huang et al., 2019).
    Each position attends to the H + W - 1 positions of its row and column; applying the same module
    `recurrence` times lets information reach every position.

    Args:
        num_channels (`int`, defaults to 64):
            Channels of the input feature map.
        reduction (`int`, defaults to 8):
            Queries and keys are projected to max(1, num_channels // reduction) channels; 1 <= reduction <=
            num_channels.
        recurrence (`int`, defaults to 2):
            How many times the (shared) criss-cross attention is applied; 2 connects every pair of positions.
        initializer_range (`float`, defaults to 0.02):
            Kept for transformers' initialisation conventions (convolutions use Kaiming initialisation).
    """

    model_type = "hf_attention_criss_cross"

    num_channels: int = 64
    reduction: int = 8
    recurrence: int = 2
    initializer_range: float = 0.02

    @classmethod
    def tiny(cls, **overrides) -> "CrissCrossAttentionConfig":
        """A configuration of a few hundred parameters for tests and demos (every REGISTRY config has one)."""
        return cls(**{"num_channels": 8, "reduction": 2, **overrides})

    def validate_architecture(self):
        super().validate_architecture()
        if self.reduction > self.num_channels:
            raise ValueError(
                f"`reduction` ({self.reduction}) is larger than the {self.num_channels} channels it divides; use at "
                f"most {self.num_channels}."
            )


__all__ = ["CrissCrossAttentionConfig"]
