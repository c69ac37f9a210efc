"""Configuration of CLIP's text model, the one text encoder of the image-text and the video-text families."""

from huggingface_hub.dataclasses import strict

from .checks import check_attention_shape, check_choice, check_positive, check_probability
from .configuration_base import HFAttentionConfig

TEXT_POOLING_TYPES = ("end_of_text", "last_token", "first_token")


@strict
class CLIPResidualTextConfig(HFAttentionConfig):
    r"""
    Configuration of [`CLIPResidualTextModel`]: CLIP's text model (Radford et al., 2021), token + position
    embeddings, a stack of CLIP residual attention blocks, a final layer norm, and the token it is read out at. The
    defaults are CLIP ViT-B's.

    Args:
        vocab_size (`int`, defaults to 49408):
            Number of token ids; `input_ids` must lie in [0, vocab_size).
        max_position_embeddings (`int`, defaults to 77):
            Longest text the position embeddings cover.
        hidden_size (`int`, defaults to 512):
            Width of the token embeddings and of every block.
        num_hidden_layers (`int`, defaults to 12):
            Number of residual attention blocks.
        num_attention_heads (`int`, defaults to 8):
            Attention heads per block; must divide `hidden_size`.
        intermediate_size (`int`, defaults to 2048):
            Width of the hidden layer of each MLP.
        hidden_act (`str`, defaults to `"quick_gelu"`):
            Activation of the MLP, any key of `transformers.activations.ACT2FN`.
        layer_norm_eps (`float`, defaults to 1e-5):
            Epsilon of the layer norms.
        attention_dropout (`float`, defaults to 0.0):
            Dropout on the attention weights, in [0, 1).
        is_causal (`bool`, defaults to `True`):
            Causal self-attention, as CLIP's text model.
        pooling (`str`, *optional*):
            The token whose state is `pooler_output` (a text with no real token pools to zeros):
            - `"end_of_text"`: the real token with the highest id, which is CLIP's end-of-text token (the last id of its
              vocabulary); how OpenAI's CLIP and X-CLIP read a text out;
            - `"last_token"`: the last real token, which in a causal model is the one that has seen them all (for a
              tokenizer whose end-of-text token is not its highest id);
            - `"first_token"`: the first real token, for a model that is not causal (BERT's `[CLS]`).
            `None` picks by `is_causal`: `"last_token"` when causal, `"first_token"` otherwise, as every
            configuration saved before this field existed pooled; the choice is then stored in the config.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation.
        pad_token_id (`int`, defaults to 0):
            Id of the padding token.
        bos_token_id, eos_token_id (`int`, *optional*):
            Ids of the start- and end-of-text tokens, kept for the tokenizer; `"end_of_text"` pooling finds the
            end-of-text token by its id being the highest, as CLIP does, not through `eos_token_id`.

    Example:

    ```python
    >>> from hf_attention import CLIPResidualTextConfig, CLIPResidualTextModel
    >>> model = CLIPResidualTextModel(CLIPResidualTextConfig.tiny(pooling="end_of_text"))
    ```
    """

    model_type = "hf_attention_clip_residual_text"

    vocab_size: int = 49408
    max_position_embeddings: int = 77
    hidden_size: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    intermediate_size: int = 2048
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float | int = 0.0
    is_causal: bool = True
    pooling: str | None = None
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self, **kwargs):
        if self.pooling is None:
            self.pooling = "last_token" if self.is_causal else "first_token"
        super().__post_init__(**kwargs)

    @classmethod
    def tiny(cls, **overrides) -> "CLIPResidualTextConfig":
        """A configuration of a few tens of thousands of parameters for tests and demos."""
        settings = dict(vocab_size=64, max_position_embeddings=64, hidden_size=32, num_hidden_layers=2)
        return cls(**{**settings, "num_attention_heads": 4, "intermediate_size": 64, **overrides})

    def validate_architecture(self):
        """Part of `@strict` validation: impossible settings fail at construction, with the reason."""
        super().validate_architecture()
        check_attention_shape(self.hidden_size, self.num_attention_heads)
        check_probability("attention_dropout", self.attention_dropout)
        check_choice("pooling", self.pooling, TEXT_POOLING_TYPES)
        for name in ("vocab_size", "max_position_embeddings", "num_hidden_layers", "intermediate_size"):
            check_positive(name, getattr(self, name))


__all__ = ["CLIPResidualTextConfig"]
