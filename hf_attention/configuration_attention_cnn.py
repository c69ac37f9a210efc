"""Configuration of the attention CNN: a small ResNet whose stages end with one feature-map attention block."""

from huggingface_hub.dataclasses import strict

from .checks import check_choice, check_positive, check_probability
from .configuration_base import HFAttentionConfig
from .configuration_dual_attention import dual_attention_inner_channels
from .configuration_non_local import NON_LOCAL_PAIRWISE_FUNCTIONS

ATTENTION_CNN_TYPES = (
    "none",
    "squeeze_excitation",
    "spatial_transformer",
    "residual_attention",
    "dual_attention",
    "non_local",
    "criss_cross",
    "compressai",
)


@strict
class AttentionCNNConfig(HFAttentionConfig):
    r"""
    Configuration of [`AttentionCNNModel`] and [`AttentionCNNForImageClassification`]: a stem (3x3 convolution), then
    stages of ResNet basic blocks (the first stage at full resolution, every later one halving it), each stage
    followed by one attention block of `attention_type`, then global average pooling and a linear classifier. Built to
    compare the attention blocks on equal footing; any image size works.

    Args:
        num_channels (`int`, defaults to 3):
            Channels of the input images.
        hidden_sizes (`list[int]`, defaults to `[32, 64, 128]`):
            Width of each stage (and of the stem: the first width).
        depths (`list[int]`, defaults to `[1, 1, 1]`):
            Basic residual blocks in each stage; as many entries as `hidden_sizes`.
        attention_type (`str`, defaults to `"none"`):
            The block after each stage: `"none"`, `"squeeze_excitation"`, `"spatial_transformer"`,
            `"residual_attention"`, `"dual_attention"`, `"non_local"`, `"criss_cross"` or `"compressai"`.
        attention_stages (`list[int]`, *optional*):
            Indices of the stages followed by an attention block; all stages when unset.
        reduction (`int`, defaults to 8):
            Channel reduction of the SE bottleneck and of the DANet / criss-cross queries and keys; at most the
            channels it divides (the narrowest stage, or its DANet inner width, max(1, width // 4)).
        recurrence (`int`, defaults to 2):
            Criss-cross recurrences.
        pairwise_function (`str`, defaults to `"embedded_gaussian"`):
            Pairwise function of the non-local blocks.
        mask_depth (`int`, defaults to 2):
            Down-sampling steps of the residual attention soft mask.
        hidden_dropout_prob (`float`, defaults to 0.0):
            Dropout before the classifier, in [0, 1).
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of linear layers (convolutions use Kaiming).

    Example:

    ```python
    >>> from hf_attention import AttentionCNNConfig, AttentionCNNForImageClassification
    >>> config = AttentionCNNConfig(hidden_sizes=[16, 32], depths=[1, 1], attention_type="criss_cross", num_labels=10)
    >>> model = AttentionCNNForImageClassification(config)
    ```
    """

    model_type = "hf_attention_attention_cnn"

    num_channels: int = 3
    hidden_sizes: list[int] | tuple[int, ...] = (32, 64, 128)
    depths: list[int] | tuple[int, ...] = (1, 1, 1)
    attention_type: str = "none"
    attention_stages: list[int] | tuple[int, ...] | None = None
    reduction: int = 8
    recurrence: int = 2
    pairwise_function: str = "embedded_gaussian"
    mask_depth: int = 2
    hidden_dropout_prob: float | int = 0.0
    initializer_range: float = 0.02

    @classmethod
    def tiny(cls, **overrides) -> "AttentionCNNConfig":
        """A configuration of a few thousand parameters for tests and demos (every REGISTRY config has one)."""
        # non-local blocks: the contract tests then check real attention maps and backend switching
        settings = {"hidden_sizes": [4, 8], "depths": [1, 1], "attention_type": "non_local", "reduction": 2}
        return cls(**{**settings, "num_labels": 3, **overrides})

    def validate_architecture(self):
        """Part of `@strict` validation: impossible settings fail at construction, with the reason."""
        super().validate_architecture()
        if not self.hidden_sizes or len(self.hidden_sizes) != len(self.depths):
            raise ValueError(
                "hidden_sizes and depths need one entry per stage, "
                f"got {list(self.hidden_sizes)} and {list(self.depths)}."
            )
        for name in ("num_channels", "reduction", "recurrence", "mask_depth"):
            check_positive(name, getattr(self, name))
        if min(self.hidden_sizes) <= 0 or min(self.depths) <= 0:
            raise ValueError(f"Stage widths and depths must be positive, got {self.hidden_sizes} and {self.depths}.")
        check_choice("attention_type", self.attention_type, ATTENTION_CNN_TYPES)
        check_choice("pairwise_function", self.pairwise_function, NON_LOCAL_PAIRWISE_FUNCTIONS)
        stages = range(len(self.hidden_sizes))
        if self.attention_stages is not None and any(stage not in stages for stage in self.attention_stages):
            raise ValueError(
                f"`attention_stages` must hold stage indices in 0..{len(self.hidden_sizes) - 1}, "
                f"got {list(self.attention_stages)}."
            )
        if self.attention_type == "compressai" and min(self.hidden_sizes) < 2:
            raise ValueError("The compressai block needs stages at least 2 channels wide.")
        check_probability("hidden_dropout_prob", self.hidden_dropout_prob)
        self._check_reduction()

    def _check_reduction(self) -> None:
        """The blocks that divide channels by `reduction` need at least `reduction` channels to divide."""
        stages = [stage for stage in range(len(self.hidden_sizes)) if self.stage_has_attention(stage)]
        widths = [self.hidden_sizes[stage] for stage in stages]
        if self.attention_type == "dual_attention":
            widths = [dual_attention_inner_channels(width, None) for width in widths]
        elif self.attention_type not in ("squeeze_excitation", "criss_cross"):
            return
        if widths and self.reduction > min(widths):
            raise ValueError(
                f"`reduction` ({self.reduction}) is larger than the {min(widths)} channels the narrowest "
                f"{self.attention_type} block divides; use at most {min(widths)} or wider stages."
            )

    def stage_has_attention(self, stage: int) -> bool:
        if self.attention_type == "none":
            return False
        return self.attention_stages is None or stage in self.attention_stages


__all__ = ["ATTENTION_CNN_TYPES", "AttentionCNNConfig"]
