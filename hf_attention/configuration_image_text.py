"""Configuration of the cross-attention image-text model: a vision tower, a text tower and a fusion on top."""

import math

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .checks import check_choice, check_non_negative, check_positive, check_probability
from .configuration_base import HFAttentionConfig
from .configuration_clip_text import CLIPResidualTextConfig
from .configuration_vit import VisionTransformerConfig

FUSION_DIRECTIONS = ("text_to_image", "image_to_text")


class TextConfigSpec(SubConfigSpec):
    """Resolves our own text tower's `model_type` even where `hf_attention` is not imported (remote code)."""

    def get_config_class(self, model_type: str | None = None):
        if model_type == CLIPResidualTextConfig.model_type:
            return CLIPResidualTextConfig
        return super().get_config_class(model_type)


@strict
class VisionTextCrossAttentionConfig(HFAttentionConfig):
    r"""
    Configuration of [`VisionTextCrossAttentionModel`] and [`VisionTextCrossAttentionForImageTextRetrieval`]: a
    vision tower and a text tower, each projected to `projection_dim` for contrastive scoring (ITC), and a fusion
    of cross-attention layers whose first token an image-text matching head (ITM) reads, as in ALBEF / BLIP.

    Args:
        vision_config (`VisionTransformerConfig` or `dict`, *optional*):
            The vision tower; our ViT-B/16 by default.
        text_config (`PreTrainedConfig` or `dict`, *optional*):
            The text tower: our [`CLIPResidualTextConfig`] by default, or any transformers text-encoder config
            (e.g. BERT's), built with `AutoModel.from_config`. It must have a `hidden_size` and be an encoder.
        projection_dim (`int`, defaults to 256):
            Width of the image and text embeddings compared by ITC.
        num_fusion_layers (`int`, defaults to 2):
            Number of fusion layers (self-attention, cross-attention to the other modality, MLP; all pre-norm).
        num_fusion_heads (`int`, defaults to 8):
            Attention heads of every fusion attention; must divide the width of the querying modality.
        fusion_intermediate_size (`int`, *optional*):
            Width of the fusion MLP's hidden layer; 4x the querying modality's width by default.
        fusion_direction (`str`, defaults to `"text_to_image"`):
            `"text_to_image"`: the text tokens query the image patches (BLIP's ITM encoder); `"image_to_text"`:
            the image tokens query the text tokens.
        hidden_act (`str`, defaults to `"gelu"`):
            Activation of the fusion MLP.
        hidden_dropout_prob (`float`, defaults to 0.0):
            Dropout on the fusion's attention and MLP outputs, in [0, 1).
        attention_probs_dropout_prob (`float`, defaults to 0.0):
            Dropout on the fusion's attention probabilities, in [0, 1).
        layer_norm_eps (`float`, defaults to 1e-6):
            Epsilon of the fusion's layer norms.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of projections and fusion.
        logit_scale_init_value (`float`, defaults to log(1 / 0.07)):
            Initial log inverse temperature of ITC (temperature 0.07 as ALBEF / BLIP).
        max_logit_scale (`float`, defaults to log(100)):
            The log inverse temperature is clamped to this (temperature >= 0.01).
        itm_loss_weight (`float`, defaults to 1.0):
            Weight of the ITM loss in the retrieval head's loss (0 trains a dual encoder with ITC only).
        rerank_top_k (`int`, defaults to 16):
            How many ITC candidates `rank` re-scores with ITM by default; 0 ranks by ITC alone (a converted CLIP,
            whose ITM is untrained).

    Example:

    ```python
    >>> from hf_attention import VisionTextCrossAttentionConfig, VisionTextCrossAttentionForImageTextRetrieval
    >>> config = VisionTextCrossAttentionConfig.tiny()
    >>> model = VisionTextCrossAttentionForImageTextRetrieval(config)
    ```
    """

    model_type = "hf_attention_vision_text_cross_attention"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=VisionTransformerConfig),
        "text_config": TextConfigSpec(config_class=AutoConfig, model_type=CLIPResidualTextConfig.model_type),
    }

    vision_config: PreTrainedConfig | dict | None = None
    text_config: PreTrainedConfig | dict | None = None
    projection_dim: int = 256
    num_fusion_layers: int = 2
    num_fusion_heads: int = 8
    fusion_intermediate_size: int | None = None
    fusion_direction: str = "text_to_image"
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    logit_scale_init_value: float = math.log(1 / 0.07)
    max_logit_scale: float = math.log(100.0)
    itm_loss_weight: float | int = 1.0
    rerank_top_k: int = 16

    @classmethod
    def tiny(cls, **overrides) -> "VisionTextCrossAttentionConfig":
        """A configuration of a few tens of thousands of parameters for tests and demos."""
        settings = dict(
            vision_config=VisionTransformerConfig.tiny().to_dict(),
            text_config=CLIPResidualTextConfig.tiny().to_dict(),
            projection_dim=16,
            num_fusion_layers=1,
            num_fusion_heads=4,
            fusion_intermediate_size=64,
        )
        return cls(**{**settings, **overrides})

    @classmethod
    def from_vision_text_configs(cls, vision_config, text_config, **kwargs) -> "VisionTextCrossAttentionConfig":
        return cls(vision_config=vision_config.to_dict(), text_config=text_config.to_dict(), **kwargs)

    @property
    def fusion_hidden_size(self) -> int:
        """Width of the fusion: that of the querying modality."""
        query_config = self.text_config if self.fusion_direction == "text_to_image" else self.vision_config
        return query_config.hidden_size

    def validate_architecture(self):
        """Part of `@strict` validation: a tower or fusion the model could not build fails here, with the reason."""
        super().validate_architecture()
        check_choice("fusion_direction", self.fusion_direction, FUSION_DIRECTIONS)
        for name in ("projection_dim", "num_fusion_layers", "num_fusion_heads", "fusion_intermediate_size"):
            check_positive(name, getattr(self, name))
        check_non_negative("rerank_top_k", self.rerank_top_k)
        check_probability("hidden_dropout_prob", self.hidden_dropout_prob)
        check_probability("attention_probs_dropout_prob", self.attention_probs_dropout_prob)
        if self.itm_loss_weight < 0:
            raise ValueError(f"`itm_loss_weight` must be >= 0, got {self.itm_loss_weight}.")
        if self.logit_scale_init_value > self.max_logit_scale:  # else clamped from the first step, unseen
            raise ValueError(
                f"`logit_scale_init_value` ({self.logit_scale_init_value:g}) must not exceed `max_logit_scale` "
                f"({self.max_logit_scale:g}), the clamp of the log inverse temperature."
            )
        # by model_type, never isinstance: under trust_remote_code the config classes may come from two copies of a file
        if getattr(self.vision_config, "model_type", None) != VisionTransformerConfig.model_type:
            raise TypeError(
                "`vision_config` must be a VisionTransformerConfig "
                f"(model_type {VisionTransformerConfig.model_type!r}), "
                f"got {type(self.vision_config).__name__}."
            )
        check_text_config(self.text_config)
        query = "text" if self.fusion_direction == "text_to_image" else "vision"
        if self.fusion_hidden_size % self.num_fusion_heads:
            raise ValueError(
                f"The fusion ({self.fusion_direction}) runs at the {query} tower's width {self.fusion_hidden_size}, "
                f"which num_fusion_heads={self.num_fusion_heads} does not divide."
            )


def check_text_config(text_config: PreTrainedConfig) -> None:
    """The fusion needs a text encoder that returns token states of a known width."""
    name = type(text_config).__name__
    if getattr(text_config, "is_encoder_decoder", False) or getattr(text_config, "is_decoder", False):
        raise ValueError(
            f"text_config ({name}) is a decoder or an encoder-decoder; the fusion needs a text encoder's token "
            "states (e.g. BertConfig, or our CLIPResidualTextConfig)."
        )
    hidden_size = getattr(text_config, "hidden_size", None)
    if not isinstance(hidden_size, int) or hidden_size <= 0:
        raise ValueError(
            f"text_config ({name}) has no integer `hidden_size`, so the fusion cannot know the width of its tokens."
        )


__all__ = ["VisionTextCrossAttentionConfig"]
