"""`create_feature_attention(name, channels, **kwargs)`: any feature-map attention block by name, as timm's
`create_attn` does. AttentionCNN builds its blocks with it; users can drop a block into their own network the same
way. Every block maps (batch, channels, height, width) to the same shape.
"""

from difflib import get_close_matches

from torch import nn

from .modeling_compressai import CompressAIAttentionBlock
from .modeling_criss_cross import CrissCrossAttention
from .modeling_dual_attention import DualAttention
from .modeling_non_local import NonLocalBlock
from .modeling_residual_attention import ResidualAttentionModule
from .modeling_spatial_transformer import SpatialTransformer
from .modeling_squeeze_excitation import SqueezeExcitation

# name -> block class; the names are AttentionCNNConfig's `attention_type` choices
FEATURE_ATTENTION_BLOCKS: dict[str, type[nn.Module]] = {
    "squeeze_excitation": SqueezeExcitation,
    "spatial_transformer": SpatialTransformer,
    "residual_attention": ResidualAttentionModule,
    "dual_attention": DualAttention,
    "non_local": NonLocalBlock,
    "criss_cross": CrissCrossAttention,
    "compressai": CompressAIAttentionBlock,
}


def create_feature_attention(name: str, channels: int, **kwargs) -> nn.Module:
    """The block called `name` for feature maps of `channels` channels; `kwargs` go to its constructor.

    `name` is one of `FEATURE_ATTENTION_BLOCKS` (e.g. "squeeze_excitation", "non_local", "criss_cross"). A keyword
    the block does not take raises `TypeError`, as the constructor itself would.

    Example:

    ```python
    >>> from hf_attention import create_feature_attention
    >>> block = create_feature_attention("criss_cross", 64, reduction=8, recurrence=2)
    ```
    """
    if name not in FEATURE_ATTENTION_BLOCKS:
        close = get_close_matches(str(name), list(FEATURE_ATTENTION_BLOCKS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"Unknown feature attention {name!r}{hint}; choose one of {', '.join(FEATURE_ATTENTION_BLOCKS)}."
        )
    return FEATURE_ATTENTION_BLOCKS[name](channels, **kwargs)


__all__ = ["FEATURE_ATTENTION_BLOCKS", "create_feature_attention"]
