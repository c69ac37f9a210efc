"""hf_attention: the attention mechanisms of the literature as Hugging Face native models.

Importing the package registers every configuration and model with transformers' Auto classes, so saved
models load with `AutoModel*.from_pretrained` and no `trust_remote_code`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .attention import AttentionMask, MultiHeadAttention, build_attention_mask, dot_product_attention
from .configuration_vit import VisionTransformerConfig
from .conversion import from_transformers
from .modeling_vit import (
    VisionTransformerForImageClassification,
    VisionTransformerModel,
    VisionTransformerPreTrainedModel,
)

__version__ = "0.1.0"

# (config class, base model, {task Auto class: head model})
REGISTRY = [
    (
        VisionTransformerConfig,
        VisionTransformerModel,
        {AutoModelForImageClassification: VisionTransformerForImageClassification},
    ),
]


def _register() -> None:
    for config_class, base_model, heads in REGISTRY:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, base_model, exist_ok=True)
        for auto_class, head in heads.items():
            auto_class.register(config_class, head, exist_ok=True)


_register()

__all__ = [
    "AttentionMask",
    "MultiHeadAttention",
    "REGISTRY",
    "VisionTransformerConfig",
    "VisionTransformerForImageClassification",
    "VisionTransformerModel",
    "VisionTransformerPreTrainedModel",
    "build_attention_mask",
    "dot_product_attention",
    "from_transformers",
]
