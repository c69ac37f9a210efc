"""Configuration of the DETR transformer: encoder over image features, decoder over learned object queries."""

from huggingface_hub.dataclasses import strict

from .checks import check_attention_shape, check_positive, check_probability
from .configuration_base import HFAttentionConfig


@strict
class DETRTransformerConfig(HFAttentionConfig):
    r"""
    Configuration of [`DETRTransformerModel`]: the encoder-decoder transformer of DETR (Carion et al., 2020). The
    encoder attends over the pixels of a backbone feature map, with 2-D sine position embeddings added to queries
    and keys (never to values); the decoder turns `num_queries` learned object queries into object embeddings by
    self-attention and cross-attention to the encoder's memory. The defaults are DETR-R50's.

    Args:
        num_channels (`int`, defaults to 2048):
            Channels of the input feature map; a 1x1 conv projects them to `hidden_size`.
        hidden_size (`int`, defaults to 256):
            Width of every layer; a multiple of 4, as the sine embedding splits it into (y, x) x (sin, cos).
        num_attention_heads (`int`, defaults to 8):
            Attention heads in every attention; must divide `hidden_size`.
        encoder_layers (`int`, defaults to 6):
            Number of encoder layers (0 feeds the projected features straight to the decoder).
        decoder_layers (`int`, defaults to 6):
            Number of decoder layers.
        intermediate_size (`int`, defaults to 2048):
            Width of the hidden layer of every feed-forward network.
        num_queries (`int`, defaults to 100):
            Number of learned object queries, i.e. of objects the model can output.
        dropout (`float`, defaults to 0.1):
            Dropout on the output of every attention and feed-forward network, in [0, 1).
        attention_dropout (`float`, defaults to 0.1):
            Dropout on the attention weights, in [0, 1).
        activation_dropout (`float`, defaults to 0.1):
            Dropout after the activation inside the feed-forward networks, in [0, 1).
        hidden_act (`str`, defaults to `"relu"`):
            Activation of the feed-forward networks, any key of `transformers.activations.ACT2FN`. Named as in every
            other family; `activation_function` (transformers' `DetrConfig` name, and ours before) still works.
        normalize_before (`bool`, defaults to `False`):
            Pre-norm layers, x + f(norm(x)), with a final norm after the encoder, instead of DETR's post-norm
            layers, norm(x + f(x)).
        return_intermediate (`bool`, defaults to `True`):
            Also return the (normalised) output of every decoder layer, for DETR's auxiliary losses.
        position_temperature (`float`, defaults to 10000.0):
            Temperature of the sine position embeddings.
        layer_norm_eps (`float`, defaults to 1e-5):
            Epsilon of the layer norms.
        is_encoder_decoder (`bool`, defaults to `True`):
            An encoder over the image and a decoder over the object queries, as transformers' `DetrConfig` declares.

    Example:

    ```python
    >>> from hf_attention import DETRTransformerConfig, DETRTransformerModel
    >>> config = DETRTransformerConfig(num_channels=64, hidden_size=32, num_attention_heads=4, encoder_layers=2,
    ...                                decoder_layers=2, intermediate_size=64, num_queries=10)
    >>> model = DETRTransformerModel(config)
    ```
    """

    model_type = "hf_attention_detr_transformer"
    attribute_map = {"activation_function": "hidden_act"}  # DetrConfig's name, and this field's before issue 8

    num_channels: int = 2048
    hidden_size: int = 256
    num_attention_heads: int = 8
    encoder_layers: int = 6
    decoder_layers: int = 6
    intermediate_size: int = 2048
    num_queries: int = 100
    dropout: float | int = 0.1
    attention_dropout: float | int = 0.1
    activation_dropout: float | int = 0.1
    hidden_act: str = "relu"
    normalize_before: bool = False
    return_intermediate: bool = True
    position_temperature: float | int = 10000.0
    layer_norm_eps: float = 1e-5
    is_encoder_decoder: bool = True

    @classmethod
    def tiny(cls, **overrides) -> "DETRTransformerConfig":
        """A configuration of about fifteen thousand parameters for tests and demos (every REGISTRY config has one)."""
        settings = dict(num_channels=8, hidden_size=16, num_attention_heads=4, encoder_layers=2, decoder_layers=2)
        return cls(**{**settings, "intermediate_size": 32, "num_queries": 5, **overrides})

    def validate_architecture(self):
        """Part of `@strict` validation: impossible settings fail at construction, with the reason."""
        super().validate_architecture()
        check_attention_shape(self.hidden_size, self.num_attention_heads)
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            check_probability(name, getattr(self, name))
        # the base checks every size and count (0 encoder layers is allowed); the decoder needs a layer
        for name in ("decoder_layers", "position_temperature"):
            check_positive(name, getattr(self, name))
        if self.hidden_size % 4:
            raise ValueError(
                f"`hidden_size` must be a multiple of 4 for the 2-D sine position embeddings, got {self.hidden_size}."
            )


__all__ = ["DETRTransformerConfig"]
