"""Vision Transformer configuration."""

from huggingface_hub.dataclasses import strict

from .checks import check_attention_shape, check_probability
from .configuration_base import HFAttentionConfig
from .configuration_linformer import check_linformer

POOLING_TYPES = ("cls", "mean")
ATTENTION_TYPES = ("softmax", "linformer")


def as_pair(value: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    """(height, width) from an int or a two-element sequence."""
    if isinstance(value, int):
        return value, value
    if len(value) != 2:
        raise ValueError(f"Expected an int or a (height, width) pair, got {value!r}.")
    return int(value[0]), int(value[1])


@strict
class VisionTransformerConfig(HFAttentionConfig):
    r"""
    Configuration of [`VisionTransformerModel`] and [`VisionTransformerForImageClassification`]: a pre-norm
    Vision Transformer (Dosovitskiy et al., 2020). The defaults build ViT-B/16 at 224x224.

    Args:
        image_size (`int` or `(int, int)`, defaults to 224):
            Height and width of the input images. Other sizes run with `interpolate_pos_encoding=True`.
        patch_size (`int` or `(int, int)`, defaults to 16):
            Height and width of each patch; must divide `image_size`.
        num_channels (`int`, defaults to 3):
            Channels of the input images (1 for greyscale).
        hidden_size (`int`, defaults to 768):
            Width of the patch embeddings and of every encoder layer.
        num_hidden_layers (`int`, defaults to 12):
            Number of encoder layers.
        num_attention_heads (`int`, defaults to 12):
            Attention heads per layer; must divide `hidden_size`.
        intermediate_size (`int`, defaults to 3072):
            Width of the hidden layer of each MLP.
        hidden_act (`str`, defaults to `"gelu"`):
            Activation of the MLP, any key of `transformers.activations.ACT2FN`.
        hidden_dropout_prob (`float`, defaults to 0.0):
            Dropout on the embeddings and on the output of every attention and MLP, in [0, 1).
        attention_probs_dropout_prob (`float`, defaults to 0.0):
            Dropout on the attention probabilities, in [0, 1).
        drop_path_rate (`float`, defaults to 0.0):
            Stochastic depth: the probability of dropping a residual branch grows linearly from 0 in the
            first layer to this value in the last, in [0, 1).
        layer_norm_eps (`float`, defaults to 1e-6):
            Epsilon of the layer norms.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the (truncated) normal initialisation of weights and embeddings.
        qkv_bias (`bool`, defaults to `True`):
            Whether the query/key/value projection has a bias.
        pre_layernorm (`bool`, defaults to `False`):
            A layer norm on the embeddings before the first layer (`pre_layernorm`), as CLIP's vision tower has
            (its `pre_layrnorm`); a converted CLIP vision tower needs it.
        pooling (`str`, defaults to `"cls"`):
            How the image representation is read off the last layer: `"cls"` takes the class token,
            `"mean"` averages the patch tokens.
        attention_type (`str`, defaults to `"softmax"`):
            The attention mechanism of every layer. `"softmax"` is full multi-head dot-product attention;
            `"linformer"` projects keys and values along the sequence to `linformer_k` rows (Wang et al., 2020),
            so attention costs O(n k) instead of O(n^2) for n tokens (n = patches + 1; larger images need
            `image_size` set to the largest size the model will see, since the projections cover n rows).
        linformer_k (`int`, defaults to 256):
            The projected length k of Linformer attention (used with `attention_type="linformer"`).
        linformer_sharing (`str`, defaults to `"headwise"`):
            Linformer projection sharing: `"none"` (per head), `"headwise"` (one key and one value projection
            for all heads, as the `linformer` package does) or `"key_value"` (one projection for both).

    Example:

    ```python
    >>> from hf_attention import VisionTransformerConfig, VisionTransformerForImageClassification
    >>> config = VisionTransformerConfig(image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=2,
    ...                                  num_attention_heads=4, intermediate_size=128, num_labels=10)
    >>> model = VisionTransformerForImageClassification(config)
    ```
    """

    model_type = "hf_attention_vit"

    image_size: int | list[int] | tuple[int, int] = 224
    patch_size: int | list[int] | tuple[int, int] = 16
    num_channels: int = 3
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    drop_path_rate: float | int = 0.0
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    qkv_bias: bool = True
    pre_layernorm: bool = False
    pooling: str = "cls"
    attention_type: str = "softmax"
    linformer_k: int = 256
    linformer_sharing: str = "headwise"

    @classmethod
    def tiny(cls, **overrides) -> "VisionTransformerConfig":
        """A configuration of a few thousand parameters for tests and demos (every REGISTRY config has one)."""
        settings = dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
        return cls(**{**settings, "intermediate_size": 64, "num_labels": 3, **overrides})

    def validate_architecture(self):
        """Part of `@strict` validation: impossible settings fail at construction, with the reason."""
        super().validate_architecture()
        check_attention_shape(self.hidden_size, self.num_attention_heads)
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            check_probability(name, getattr(self, name))
        for name in ("num_channels", "num_hidden_layers", "intermediate_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)}.")
        if self.pooling not in POOLING_TYPES:
            raise ValueError(f"`pooling` must be one of {POOLING_TYPES}, got {self.pooling!r}.")
        if self.attention_type not in ATTENTION_TYPES:
            raise ValueError(f"`attention_type` must be one of {ATTENTION_TYPES}, got {self.attention_type!r}.")
        (height, width), (patch_height, patch_width) = as_pair(self.image_size), as_pair(self.patch_size)
        if min(height, width, patch_height, patch_width) <= 0 or height % patch_height or width % patch_width:
            raise ValueError(
                f"image_size {height}x{width} must be positive multiples of patch_size {patch_height}x{patch_width}."
            )
        if self.attention_type == "linformer":
            num_tokens = (height // patch_height) * (width // patch_width) + 1
            check_linformer(num_tokens, self.linformer_k, self.linformer_sharing)


__all__ = ["VisionTransformerConfig"]
