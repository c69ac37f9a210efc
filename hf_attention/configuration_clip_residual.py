"""Configuration of a stack of CLIP residual attention blocks."""

from huggingface_hub.dataclasses import strict

from .checks import check_attention_shape, check_probability
from .configuration_base import HFAttentionConfig


@strict
class CLIPResidualTransformerConfig(HFAttentionConfig):
    r"""
    Configuration of [`CLIPResidualTransformerModel`]: the transformer of CLIP (Radford et al., 2021), a stack of
    pre-norm residual attention blocks x + attn(ln_1(x)), then x + mlp(ln_2(x)) with a QuickGELU MLP. CLIP's text
    tower runs it with `is_causal=True`, its image tower without. The defaults are CLIP ViT-B's text transformer.

    Args:
        hidden_size (`int`, defaults to 512):
            Width of the tokens and of every block.
        num_hidden_layers (`int`, defaults to 12):
            Number of residual attention blocks.
        num_attention_heads (`int`, defaults to 8):
            Attention heads per block; must divide `hidden_size`.
        intermediate_size (`int`, defaults to 2048):
            Width of the hidden layer of each MLP (CLIP uses 4 * `hidden_size`).
        hidden_act (`str`, defaults to `"quick_gelu"`):
            Activation of the MLP, any key of `transformers.activations.ACT2FN`; CLIP's is x * sigmoid(1.702 x).
        layer_norm_eps (`float`, defaults to 1e-5):
            Epsilon of the layer norms.
        attention_dropout (`float`, defaults to 0.0):
            Dropout on the attention weights, applied in training only, in [0, 1).
        is_causal (`bool`, defaults to `False`):
            Hide later tokens from each token, as CLIP's text transformer does.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of the projections.

    Example:

    ```python
    >>> from hf_attention import CLIPResidualTransformerConfig, CLIPResidualTransformerModel
    >>> config = CLIPResidualTransformerConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
    ...                                        intermediate_size=256, is_causal=True)
    >>> model = CLIPResidualTransformerModel(config)
    ```
    """

    model_type = "hf_attention_clip_residual"

    hidden_size: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    intermediate_size: int = 2048
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float | int = 0.0
    is_causal: bool = False
    initializer_range: float = 0.02

    @classmethod
    def tiny(cls, **overrides) -> "CLIPResidualTransformerConfig":
        """A configuration of a few thousand parameters for tests and demos (every REGISTRY config has one)."""
        settings = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32)
        return cls(**{**settings, **overrides})

    def validate_architecture(self):
        """Part of `@strict` validation: impossible settings fail at construction, with the reason."""
        super().validate_architecture()
        check_attention_shape(self.hidden_size, self.num_attention_heads)
        check_probability("attention_dropout", self.attention_dropout)
        for name in ("num_hidden_layers", "intermediate_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)}.")


__all__ = ["CLIPResidualTransformerConfig"]
