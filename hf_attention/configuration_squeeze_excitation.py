"""Configuration of the Squeeze-and-Excitation block (Hu et al., 2018). Torch-free, like every configuration."""

from huggingface_hub.dataclasses import strict

from .checks import check_choice
from .configuration_base import HFAttentionConfig

SQUEEZE_EXCITATION_BLOCK_TYPES = ("layer", "basic", "bottleneck")
BOTTLENECK_EXPANSION = 4  # a ResNet bottleneck block is 4x wider at its ends than in its 3x3 convolution


@strict
class SqueezeExcitationConfig(HFAttentionConfig):
    r"""
    Configuration of [`SqueezeExcitationModel`]: Squeeze-and-Excitation channel attention (Hu et al., 2018), alone
    or inside a residual block. Takes and returns (batch, num_channels, height, width) feature maps of any size.

    Args:
        num_channels (`int`, defaults to 64):
            Channels of the input feature map.
        reduction (`int`, defaults to 16):
            Reduction ratio r of the bottleneck, 1 <= r <= the gated channels: the excitation MLP has
            max(1, channels // r) hidden units.
        block_type (`str`, defaults to `"layer"`):
            `"layer"`: the SE layer alone, x * sigmoid(MLP(mean(x))). `"basic"`: a ResNet basic block (two 3x3
            convolutions) whose residual branch is gated by SE. `"bottleneck"`: a ResNet bottleneck block (1x1, 3x3,
            1x1 convolutions, expansion 4) gated by SE.
        out_channels (`int`, *optional*):
            Output channels of the residual blocks (defaults to `num_channels`); a multiple of 4 for `"bottleneck"`.
            The SE layer alone keeps `num_channels`.
        stride (`int`, defaults to 1):
            Stride of the residual blocks (2 halves height and width); the SE layer alone has no stride.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of the linear layers.
    """

    model_type = "hf_attention_squeeze_excitation"

    num_channels: int = 64
    reduction: int = 16
    block_type: str = "layer"
    out_channels: int | None = None
    stride: int = 1
    initializer_range: float = 0.02

    @classmethod
    def tiny(cls, **overrides) -> "SqueezeExcitationConfig":
        """A configuration of a few dozen parameters for tests and demos (every REGISTRY config has one)."""
        return cls(**{"num_channels": 8, "reduction": 2, **overrides})

    def validate_architecture(self):
        """Part of `@strict` validation: impossible settings fail at construction, with the reason."""
        super().validate_architecture()
        check_choice("block_type", self.block_type, SQUEEZE_EXCITATION_BLOCK_TYPES)
        out_channels = self.out_channels or self.num_channels
        if self.block_type == "layer" and (out_channels != self.num_channels or self.stride != 1):
            raise ValueError("block_type='layer' keeps the input's shape: it takes neither out_channels nor stride.")
        if self.block_type == "bottleneck" and out_channels % BOTTLENECK_EXPANSION:
            raise ValueError(
                f"A bottleneck block expands its width by {BOTTLENECK_EXPANSION}: out_channels must be a multiple of "
                f"{BOTTLENECK_EXPANSION}, got {out_channels}."
            )
        if self.reduction > out_channels:
            raise ValueError(
                f"`reduction` ({self.reduction}) is larger than the {out_channels} channels SE gates; use at most "
                f"{out_channels}."
            )


__all__ = ["SqueezeExcitationConfig"]
