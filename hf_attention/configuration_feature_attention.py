"""Configurations of the feature-map attention blocks (one config per block, each its own `model_type`).

Every block takes and returns (batch, num_channels, height, width) feature maps of any height and width, so no
config holds a spatial size.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

SQUEEZE_EXCITATION_BLOCK_TYPES = ("layer", "basic", "bottleneck")
NON_LOCAL_PAIRWISE_FUNCTIONS = ("embedded_gaussian", "dot_product", "concatenation", "gaussian")
BOTTLENECK_EXPANSION = 4


def check_positive(config: PreTrainedConfig, *names: str) -> None:
    """Raise for the first of `names` whose value is set (not None) and not a positive integer."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise ValueError(f"`{name}` must be a positive integer, got {value}.")


def check_choice(config: PreTrainedConfig, name: str, choices: tuple[str, ...]) -> None:
    if getattr(config, name) not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {getattr(config, name)!r}.")


@strict
class SqueezeExcitationConfig(PreTrainedConfig):
    r"""
    Configuration of [`SqueezeExcitationModel`]: Squeeze-and-Excitation channel attention (Hu et al., 2018), alone
    or inside a residual block.

    Args:
        num_channels (`int`, defaults to 64):
            Channels of the input feature map.
        reduction (`int`, defaults to 16):
            Reduction ratio r of the bottleneck: the excitation MLP has max(1, channels // r) hidden units.
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
        """A configuration of a few hundred parameters for tests and demos (every REGISTRY config has one)."""
        return cls(**{"num_channels": 8, "reduction": 2, **overrides})

    def validate_architecture(self):
        """Part of `@strict` validation: impossible settings fail at construction, with the reason."""
        check_positive(self, "num_channels", "reduction", "out_channels", "stride")
        check_choice(self, "block_type", SQUEEZE_EXCITATION_BLOCK_TYPES)
        out_channels = self.out_channels or self.num_channels
        if self.block_type == "layer" and (out_channels != self.num_channels or self.stride != 1):
            raise ValueError("block_type='layer' keeps the input's shape: it takes neither out_channels nor stride.")
        if self.block_type == "bottleneck" and out_channels % BOTTLENECK_EXPANSION:
            raise ValueError(
                f"A bottleneck block expands its width by {BOTTLENECK_EXPANSION}: out_channels must be a multiple of "
                f"{BOTTLENECK_EXPANSION}, got {out_channels}."
            )


@strict
class SpatialTransformerConfig(PreTrainedConfig):
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

    def validate_architecture(self):
        check_positive(self, "num_channels", "localisation_channels", "pooled_size", "hidden_size")


@strict
class ResidualAttentionConfig(PreTrainedConfig):
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
        check_positive(self, "num_channels", "num_trunk_units", "num_mask_units", "mask_depth")
        if self.num_pre_post_units < 0:
            raise ValueError(f"`num_pre_post_units` must be 0 or more, got {self.num_pre_post_units}.")


@strict
class DualAttentionConfig(PreTrainedConfig):
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
            Position attention projects queries and keys to max(1, inner_channels // reduction) channels.
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
        check_positive(self, "num_channels", "inner_channels", "reduction")


@strict
class NonLocalConfig(PreTrainedConfig):
    r"""
    Configuration of [`NonLocalModel`]: a non-local block (Wang et al., 2018), z = W y + x with
    y_i = sum_j f(x_i, x_j) g(x_j) / C(x).

    Args:
        num_channels (`int`, defaults to 64):
            Channels of the input feature map.
        inner_channels (`int`, *optional*):
            Channels of the embeddings theta, phi and g; defaults to max(1, num_channels // 2) as in the paper.
        pairwise_function (`str`, defaults to `"embedded_gaussian"`):
            f: `"embedded_gaussian"` softmax(theta(x_i) . phi(x_j)), `"gaussian"` softmax(x_i . x_j),
            `"dot_product"` theta(x_i) . phi(x_j) / N, `"concatenation"` ReLU(w . [theta(x_i), phi(x_j)]) / N,
            with N the number of key positions.
        sub_sample (`bool`, defaults to `False`):
            Max-pool (2x2) the keys and values, dividing the pairwise cost by about 4.
        batch_norm (`bool`, defaults to `True`):
            Follow W with a batch norm; the batch norm's scale (or, without it, W itself) starts at zero so the block
            starts as the identity.
        initializer_range (`float`, defaults to 0.02):
            Kept for transformers' initialisation conventions (convolutions use Kaiming initialisation).
    """

    model_type = "hf_attention_non_local"

    num_channels: int = 64
    inner_channels: int | None = None
    pairwise_function: str = "embedded_gaussian"
    sub_sample: bool = False
    batch_norm: bool = True
    initializer_range: float = 0.02

    @classmethod
    def tiny(cls, **overrides) -> "NonLocalConfig":
        """A configuration of a few hundred parameters for tests and demos (every REGISTRY config has one)."""
        return cls(**{"num_channels": 8, **overrides})

    def validate_architecture(self):
        check_positive(self, "num_channels", "inner_channels")
        check_choice(self, "pairwise_function", NON_LOCAL_PAIRWISE_FUNCTIONS)


@strict
class CrissCrossAttentionConfig(PreTrainedConfig):
    r"""
    Configuration of [`CrissCrossAttentionModel`]: CCNet's recurrent criss-cross attention (Huang et al., 2019).
    Each position attends to the H + W - 1 positions of its row and column; applying the same module
    `recurrence` times lets information reach every position.

    Args:
        num_channels (`int`, defaults to 64):
            Channels of the input feature map.
        reduction (`int`, defaults to 8):
            Queries and keys are projected to max(1, num_channels // reduction) channels.
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
        check_positive(self, "num_channels", "reduction", "recurrence")


@strict
class CompressAIAttentionConfig(PreTrainedConfig):
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
        if self.num_channels < 2:
            raise ValueError(
                f"`num_channels` must be at least 2 (the residual units use N // 2), got {self.num_channels}."
            )


__all__ = [
    "CompressAIAttentionConfig",
    "CrissCrossAttentionConfig",
    "DualAttentionConfig",
    "NonLocalConfig",
    "ResidualAttentionConfig",
    "SpatialTransformerConfig",
    "SqueezeExcitationConfig",
]
