"""Configuration of one Residual Attention Network module (Wang et al., 2017). Torch-free."""

from huggingface_hub.dataclasses import strict

from .checks import check_positive
from .configuration_base import HFAttentionConfig


@strict
class ResidualAttentionConfig(HFAttentionConfig):
    r"""
    Configuration of [`ResidualAttentionModel`]: one attention module of the Residual Attention Network (Wang et al.,
    2017): a trunk branch T and a soft mask branch M (bottom-up down-sampling, top-down up-sampling with skip
    connections, sigmoid), combined as (1 + M) * T.

    Args:
        num_channels (`int`, defaults to 64):
            Channels of the input feature map, kept throughout the module.
        num_pre_post_units (`int`, defaults to 1):
            The paper's p: pre-activation residual units before the split into branches, and again after the merge.
        num_trunk_units (`int`, defaults to 2):
            The paper's t: residual units of the trunk branch.
        num_mask_units (`int`, defaults to 1):
            The paper's r: residual units between adjacent pooling (or up-sampling) steps of the mask branch.
        mask_depth (`int`, defaults to 2):
            Down-sampling steps of the mask branch (the paper uses 3, 2 and 1 in its three stages); each is a
            3x3 max-pool of stride 2, so any input size works down to 1x1.
        initializer_range (`float`, defaults to 0.02):
            Kept for transformers' initialisation conventions (convolutions use Kaiming initialisation).
    """

    model_type = "hf_attention_residual_attention"

    num_channels: int = 64
    num_pre_post_units: int = 1
    num_trunk_units: int = 2
    num_mask_units: int = 1
    mask_depth: int = 2
    initializer_range: float = 0.02

    @classmethod
    def tiny(cls, **overrides) -> "ResidualAttentionConfig":
        """A configuration of a few hundred parameters for tests and demos (every REGISTRY config has one)."""
        return cls(**{"num_channels": 8, **overrides})

    def validate_architecture(self):
        super().validate_architecture()
        # the base checks every size and count; the trunk and the mask branch need at least one unit each
        for name in ("num_trunk_units", "num_mask_units"):
            check_positive(name, getattr(self, name))


__all__ = ["ResidualAttentionConfig"]
