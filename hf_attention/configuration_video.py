"""Configurations of the X-CLIP video encoder (cross-frame + intra-frame attention) and of the video-text model."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .checks import check_attention_shape, check_choice, check_positive, check_probability
from .configuration_base import HFAttentionConfig
from .configuration_clip_text import CLIPResidualTextConfig

TEMPORAL_MODELING_TYPES = ("cross_frame", "none")
VIDEO_POOLING_TYPES = ("mit", "mean")


@strict
class VideoTransformerConfig(HFAttentionConfig):
    r"""
    Configuration of [`VideoTransformerModel`] and [`VideoTransformerForVideoClassification`]: X-CLIP's video encoder
    (Ni et al., 2022). Every frame is a CLIP ViT token sequence; in each layer one message token per frame (a linear
    map of the frame's class token) attends to the message tokens of the other frames of its clip (cross-frame
    attention, CFA), then joins its frame's tokens in the layer's self-attention (intra-frame fusion, IFA). The
    per-frame class tokens are projected and fused over time by the multi-frame integration transformer (MIT).
    The defaults build X-CLIP B/32 at 8 frames of 224x224.

    Args:
        image_size (`int`, defaults to 224):
            Height and width of every frame. Other sizes run with `interpolate_pos_encoding=True`.
        patch_size (`int`, defaults to 32):
            Height and width of each patch; must divide `image_size`.
        num_channels (`int`, defaults to 3):
            Channels of every frame.
        num_frames (`int`, defaults to 8):
            Frames per clip. Clips of another length run only with `interpolate_pos_encoding=True` (the MIT's
            temporal position embeddings are then interpolated); a batch is never split into shorter clips.
        hidden_size (`int`, defaults to 768):
            Width of the frame tokens and of every encoder layer.
        num_hidden_layers (`int`, defaults to 12):
            Number of encoder layers (each a `CrossFrameAttentionLayer`).
        num_attention_heads (`int`, defaults to 12):
            Heads of both the intra-frame and the cross-frame attention; must divide `hidden_size`.
        intermediate_size (`int`, defaults to 3072):
            Width of the hidden layer of each encoder MLP.
        hidden_act (`str`, defaults to `"quick_gelu"`):
            Activation of every MLP (encoder and MIT), a key of `transformers.activations.ACT2FN`.
        layer_norm_eps (`float`, defaults to 1e-5):
            Epsilon of every layer norm.
        attention_dropout (`float`, defaults to 0.0):
            Dropout on the attention probabilities, in [0, 1).
        drop_path_rate (`float`, defaults to 0.0):
            Stochastic depth on the cross-frame attention branch, the same rate in every layer (as in
            transformers' X-CLIP), in [0, 1).
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the patch and position embeddings at initialisation (of the positions only when
            `position_embedding_std` is `None`).
        initializer_factor (`float`, defaults to 1.0):
            Scale of every initialisation standard deviation (CLIP's convention; 1.0 for training).
        position_embedding_std (`float` or `None`, defaults to `None`):
            Standard deviation of the spatial position embeddings at initialisation; `None` keeps X-CLIP's
            (`initializer_range * initializer_factor`). Trained from scratch, a frame's class token can only say
            where things are once the positions stand out from the patch contents (measured by
            `benchmarks/video_probes.py`: on the moving-glyph clips 0.5 lets CFA + MIT learn the sign of the
            motion, X-CLIP's 0.02 only its axis).
        temporal_modeling (`str`, defaults to `"cross_frame"`):
            `"cross_frame"` gives every layer its message tokens and cross-frame attention; `"none"` is the same
            encoder without them, every frame encoded on its own (the ablation of the video page of the documentation).
        projection_dim (`int` or `None`, defaults to 512):
            Width of the frame and video embeddings: the class tokens are projected to it (no bias). `None` keeps
            them `hidden_size` wide with no projection (what a converted `XCLIPVisionModel` has).
        video_pooling (`str`, defaults to `"mit"`):
            How frame embeddings become the video embedding: `"mit"` runs the multi-frame integration transformer,
            `"mean"` takes their plain (order-free) mean.
        mit_intermediate_size (`int`, defaults to 2048):
            Width of the MLP of the MIT's layers.
        mit_num_hidden_layers (`int`, defaults to 1):
            Number of MIT layers (CLIP residual attention blocks over the frames).
        mit_num_attention_heads (`int`, defaults to 8):
            Heads of the MIT's attention; must divide the embedding width.

    Example:

    ```python
    >>> from hf_attention import VideoTransformerConfig, VideoTransformerForVideoClassification
    >>> config = VideoTransformerConfig(image_size=32, patch_size=8, num_frames=8, hidden_size=64, num_hidden_layers=2,
    ...                                 num_attention_heads=4, intermediate_size=128, projection_dim=32,
    ...                                 mit_intermediate_size=64, mit_num_attention_heads=4, num_labels=8)
    >>> model = VideoTransformerForVideoClassification(config)
    ```
    """

    model_type = "hf_attention_video"
    # a VideoTextTransformerModel folder loads as a video classifier: its video config is read from this key
    base_config_key = "video_config"

    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    num_frames: int = 8
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float | int = 0.0
    drop_path_rate: float | int = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    position_embedding_std: float | None = None
    temporal_modeling: str = "cross_frame"
    projection_dim: int | None = 512
    video_pooling: str = "mit"
    mit_intermediate_size: int = 2048
    mit_num_hidden_layers: int = 1
    mit_num_attention_heads: int = 8

    @property
    def embed_dim(self) -> int:
        """Width of the frame embeddings, the MIT and the video embedding."""
        return self.hidden_size if self.projection_dim is None else self.projection_dim

    @classmethod
    def tiny(cls, **overrides) -> "VideoTransformerConfig":
        """A configuration of a few thousand parameters for tests and demos (every REGISTRY config has one)."""
        settings = dict(image_size=16, patch_size=8, num_frames=3, hidden_size=16, num_hidden_layers=2)
        settings |= dict(num_attention_heads=2, intermediate_size=32, projection_dim=8, mit_intermediate_size=16)
        return cls(**{**settings, "mit_num_attention_heads": 2, "num_labels": 3, **overrides})

    def validate_architecture(self):
        """Part of `@strict` validation: impossible settings fail at construction, with the reason."""
        super().validate_architecture()
        check_attention_shape(self.hidden_size, self.num_attention_heads)
        if self.video_pooling == "mit":
            check_attention_shape(self.embed_dim, self.mit_num_attention_heads)
        for name in ("attention_dropout", "drop_path_rate"):
            check_probability(name, getattr(self, name))
        for name in ("num_channels", "num_frames", "num_hidden_layers", "intermediate_size", "mit_intermediate_size"):
            check_positive(name, getattr(self, name))
        check_positive("projection_dim", self.projection_dim)
        check_positive("initializer_factor", self.initializer_factor)
        if self.position_embedding_std is not None:
            check_positive("position_embedding_std", self.position_embedding_std)
        if self.mit_num_hidden_layers < 0:
            raise ValueError(f"`mit_num_hidden_layers` must be >= 0, got {self.mit_num_hidden_layers}.")
        check_choice("temporal_modeling", self.temporal_modeling, TEMPORAL_MODELING_TYPES)
        check_choice("video_pooling", self.video_pooling, VIDEO_POOLING_TYPES)
        if min(self.image_size, self.patch_size) <= 0 or self.image_size % self.patch_size:
            raise ValueError(
                f"`image_size` ({self.image_size}) must be a positive multiple of `patch_size` ({self.patch_size})."
            )


# X-CLIP's text model (transformers' `XCLIPTextConfig`): causal, read out at its end-of-text token, CLIP's token ids
XCLIP_TEXT_DEFAULTS = dict(is_causal=True, pooling="end_of_text", pad_token_id=1, bos_token_id=0, eos_token_id=2)
# Before the CLIP text model was shared, `text_config` was a bare transformer (this model type) and the video-text
# config itself held the text model's vocabulary, length and token ids
LEGACY_TEXT_MODEL_TYPE = "hf_attention_clip_residual"
LEGACY_TEXT_FIELDS = ("vocab_size", "max_position_embeddings", "pad_token_id", "bos_token_id", "eos_token_id")


@strict
class VideoTextTransformerConfig(HFAttentionConfig):
    r"""
    Configuration of [`VideoTextTransformerModel`]: the whole X-CLIP video-text model. A video encoder
    ([`VideoTransformerConfig`], whose `projection_dim` is the shared embedding width), CLIP's text model
    ([`CLIPResidualTextConfig`]) with a projection, and the video-specific prompt generator: the class texts attend to
    the video's patch tokens and are shifted by `alpha` times the result. The defaults build X-CLIP B/32.

    Args:
        video_config (`dict` or [`VideoTransformerConfig`], *optional*):
            The video encoder; defaults to X-CLIP B/32's. Its `projection_dim` must be set.
        text_config (`dict` or [`CLIPResidualTextConfig`], *optional*):
            The text model, which holds the vocabulary size, the longest text and the token ids (as transformers'
            `XCLIPTextConfig`). Defaults to CLIP's 12-layer 512-wide one; a dict gets X-CLIP's settings where it
            does not set them: causal, `pooling="end_of_text"` (the text is read out at its highest token id,
            CLIP's end-of-text token, as X-CLIP does), `pad_token_id=1`, `bos_token_id=0`, `eos_token_id=2`. Always
            causal. A configuration saved before the text model was shared (a `text_config` of model type
            `"hf_attention_clip_residual"` and top-level `vocab_size`, `max_position_embeddings` and token ids)
            is read into this layout.
        prompt_layers (`int`, defaults to 2):
            Layers of the prompt generator.
        prompt_alpha (`float`, defaults to 0.1):
            Initial value of the learned per-channel scale of the prompt.
        prompt_hidden_act (`str`, defaults to `"quick_gelu"`):
            Activation of the prompt generator's MLP.
        prompt_num_attention_heads (`int`, defaults to 8):
            Heads of the prompt generator's cross-attention; must divide `projection_dim`.
        prompt_attention_dropout (`float`, defaults to 0.0):
            Dropout on the prompt generator's attention probabilities and inside its MLP, in [0, 1).
        prompt_projection_dropout (`float`, defaults to 0.0):
            Dropout after the prompt generator's attention output projection, in [0, 1).
        logit_scale_init_value (`float`, defaults to 2.6592):
            Initial log of the temperature that scales the cosine similarities (log(1 / 0.07)).
        initializer_factor (`float`, defaults to 1.0):
            Scale of every initialisation standard deviation.

    Example:

    ```python
    >>> from hf_attention import VideoTextTransformerConfig, VideoTextTransformerModel
    >>> model = VideoTextTransformerModel(VideoTextTransformerConfig.tiny())
    ```
    """

    model_type = "hf_attention_video_text"
    sub_configs = {"video_config": VideoTransformerConfig, "text_config": CLIPResidualTextConfig}

    video_config: dict | VideoTransformerConfig | None = None
    # any config: an old transformer config is read into the text model's (model types decide, see validation)
    text_config: dict | PreTrainedConfig | None = None
    prompt_layers: int = 2
    prompt_alpha: float = 0.1
    prompt_hidden_act: str = "quick_gelu"
    prompt_num_attention_heads: int = 8
    prompt_attention_dropout: float | int = 0.0
    prompt_projection_dropout: float | int = 0.0
    logit_scale_init_value: float = 2.6592
    initializer_factor: float = 1.0

    def __post_init__(self, **kwargs):
        if self.video_config is None:
            self.video_config = VideoTransformerConfig()
        elif isinstance(self.video_config, dict):
            self.video_config = VideoTransformerConfig(**self.video_config)
        text_config = x_clip_text_config(self.text_config, kwargs)
        if isinstance(text_config, dict):
            text_config = CLIPResidualTextConfig(**text_config)
        self.text_config = text_config
        super().__post_init__(**kwargs)

    @property
    def initializer_range(self) -> float:
        """The video encoder's, for the linear layers of the text side and the prompt generator too."""
        return self.video_config.initializer_range

    @property
    def projection_dim(self) -> int:
        """Width of the shared video-text embedding space (the video encoder's `projection_dim`)."""
        return self.video_config.projection_dim

    @classmethod
    def tiny(cls, **overrides) -> "VideoTextTransformerConfig":
        """A configuration of a few thousand parameters for tests and demos (every REGISTRY config has one)."""
        video = VideoTransformerConfig.tiny(num_labels=2)
        text = dict(vocab_size=50, max_position_embeddings=8, hidden_size=12, num_hidden_layers=2)
        text |= dict(num_attention_heads=2, intermediate_size=32)
        settings = dict(video_config=video, text_config=text, prompt_layers=1, prompt_num_attention_heads=2)
        return cls(**{**settings, **overrides})

    def validate_architecture(self):
        """Part of `@strict` validation: impossible settings fail at construction, with the reason."""
        super().validate_architecture()
        if self.video_config.projection_dim is None:
            raise ValueError(
                "The video-text model needs `video_config.projection_dim` set: it is the width video and text "
                "embeddings share."
            )
        # by model_type, not isinstance: under trust_remote_code the config class may come from another copy of the file
        if self.text_config.model_type != CLIPResidualTextConfig.model_type:
            raise ValueError(
                f"`text_config` must be a CLIPResidualTextConfig (model type {CLIPResidualTextConfig.model_type!r}), "
                f"got model type {self.text_config.model_type!r}."
            )
        if not self.text_config.is_causal:
            raise ValueError("X-CLIP's text model is causal: `text_config.is_causal` must be True.")
        check_attention_shape(self.projection_dim, self.prompt_num_attention_heads)
        for name in ("prompt_attention_dropout", "prompt_projection_dropout"):
            check_probability(name, getattr(self, name))
        for name in ("prompt_layers", "initializer_factor"):
            check_positive(name, getattr(self, name))


def x_clip_text_config(text_config, kwargs: dict):
    """`text_config` as a dict with X-CLIP's defaults where it sets nothing, or as the config object it is.

    A configuration saved before the text model was shared is read into the current layout: its transformer config
    (model type `LEGACY_TEXT_MODEL_TYPE`) becomes the text model's, and the top-level `LEGACY_TEXT_FIELDS` are taken
    out of `kwargs` into it. Where the text config sets such a field itself, the top-level key stays an extra attribute.
    """
    if text_config is None:
        text_config = {}
    elif not isinstance(text_config, dict):
        if text_config.model_type != LEGACY_TEXT_MODEL_TYPE:
            return text_config
        text_config = text_config.to_dict()
    text_config = dict(text_config)
    if text_config.get("model_type") == LEGACY_TEXT_MODEL_TYPE:
        del text_config["model_type"]
    for name in LEGACY_TEXT_FIELDS:
        if name in kwargs and name not in text_config:
            text_config[name] = kwargs.pop(name)
    return {**XCLIP_TEXT_DEFAULTS, **text_config}


__all__ = ["VideoTextTransformerConfig", "VideoTransformerConfig"]
