"""hf_attention: the attention mechanisms of the literature as Hugging Face native models.

Importing the package registers every configuration and model with transformers' Auto classes, so saved
models load with `AutoModel*.from_pretrained` and no `trust_remote_code`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, AutoModelForSeq2SeqLM

from .attention import AttentionMask, MultiHeadAttention, build_attention_mask, dot_product_attention
from .configuration_additive import AdditiveAttentionConfig
from .configuration_attention_cnn import AttentionCNNConfig
from .configuration_clip_residual import CLIPResidualTransformerConfig
from .configuration_detr_transformer import DETRTransformerConfig
from .configuration_feature_attention import (
    CompressAIAttentionConfig,
    CrissCrossAttentionConfig,
    DualAttentionConfig,
    NonLocalConfig,
    ResidualAttentionConfig,
    SpatialTransformerConfig,
    SqueezeExcitationConfig,
)
from .configuration_feature_map_cross_attention import FeatureMapCrossAttentionConfig
from .configuration_linformer import LinformerConfig
from .configuration_mha import MultiHeadAttentionConfig
from .configuration_nadaraya_watson import NadarayaWatsonConfig
from .configuration_seq2seq import RecurrentSeq2SeqConfig
from .configuration_vit import VisionTransformerConfig
from .conversion import from_transformers
from .modeling_additive import AdditiveAttention, AdditiveAttentionModel, AdditiveAttentionPreTrainedModel
from .modeling_attention_cnn import AttentionCNNForImageClassification, AttentionCNNModel, AttentionCNNPreTrainedModel
from .modeling_clip_residual import (
    CLIPResidualAttentionBlock,
    CLIPResidualTransformerModel,
    CLIPResidualTransformerPreTrainedModel,
)
from .modeling_detr_transformer import (
    DETRTransformerDecoder,
    DETRTransformerDecoderLayer,
    DETRTransformerEncoder,
    DETRTransformerEncoderLayer,
    DETRTransformerModel,
    DETRTransformerPreTrainedModel,
)
from .modeling_feature_attention import (
    BasicResidualBlock,
    BottleneckResidualBlock,
    ChannelAttention,
    CompressAIAttentionBlock,
    CompressAIAttentionModel,
    CrissCrossAttention,
    CrissCrossAttentionModel,
    DualAttention,
    DualAttentionModel,
    FeatureAttentionPreTrainedModel,
    NonLocalBlock,
    NonLocalModel,
    PositionAttention,
    ResidualAttentionModel,
    ResidualAttentionModule,
    SEBasicBlock,
    SEBottleneckBlock,
    SpatialTransformer,
    SpatialTransformerModel,
    SqueezeExcitation,
    SqueezeExcitationModel,
)
from .modeling_feature_map_cross_attention import (
    FeatureMapCrossAttention,
    FeatureMapCrossAttentionModel,
    FeatureMapCrossAttentionPreTrainedModel,
)
from .modeling_linformer import LinformerPreTrainedModel, LinformerSelfAttention, LinformerSelfAttentionModel
from .modeling_mha import MultiHeadAttentionModel, MultiHeadAttentionPreTrainedModel
from .modeling_nadaraya_watson import NadarayaWatsonAttention, NadarayaWatsonModel, NadarayaWatsonPreTrainedModel
from .modeling_seq2seq import (
    RecurrentSeq2SeqForConditionalGeneration,
    RecurrentSeq2SeqModel,
    RecurrentSeq2SeqPreTrainedModel,
)
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
    (MultiHeadAttentionConfig, MultiHeadAttentionModel, {}),
    (FeatureMapCrossAttentionConfig, FeatureMapCrossAttentionModel, {}),
    (CLIPResidualTransformerConfig, CLIPResidualTransformerModel, {}),
    (DETRTransformerConfig, DETRTransformerModel, {}),
    (AdditiveAttentionConfig, AdditiveAttentionModel, {}),
    (NadarayaWatsonConfig, NadarayaWatsonModel, {}),
    (LinformerConfig, LinformerSelfAttentionModel, {}),
    (
        RecurrentSeq2SeqConfig,
        RecurrentSeq2SeqModel,
        {AutoModelForSeq2SeqLM: RecurrentSeq2SeqForConditionalGeneration},
    ),
    (SqueezeExcitationConfig, SqueezeExcitationModel, {}),
    (SpatialTransformerConfig, SpatialTransformerModel, {}),
    (ResidualAttentionConfig, ResidualAttentionModel, {}),
    (DualAttentionConfig, DualAttentionModel, {}),
    (NonLocalConfig, NonLocalModel, {}),
    (CrissCrossAttentionConfig, CrissCrossAttentionModel, {}),
    (CompressAIAttentionConfig, CompressAIAttentionModel, {}),
    (
        AttentionCNNConfig,
        AttentionCNNModel,
        {AutoModelForImageClassification: AttentionCNNForImageClassification},
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
    "CLIPResidualAttentionBlock",
    "CLIPResidualTransformerConfig",
    "CLIPResidualTransformerModel",
    "CLIPResidualTransformerPreTrainedModel",
    "DETRTransformerConfig",
    "DETRTransformerDecoder",
    "DETRTransformerDecoderLayer",
    "DETRTransformerEncoder",
    "DETRTransformerEncoderLayer",
    "DETRTransformerModel",
    "DETRTransformerPreTrainedModel",
    "FeatureMapCrossAttention",
    "FeatureMapCrossAttentionConfig",
    "FeatureMapCrossAttentionModel",
    "FeatureMapCrossAttentionPreTrainedModel",
    "MultiHeadAttentionConfig",
    "MultiHeadAttentionModel",
    "MultiHeadAttentionPreTrainedModel",
    "AdditiveAttention",
    "AdditiveAttentionConfig",
    "AdditiveAttentionModel",
    "AdditiveAttentionPreTrainedModel",
    "LinformerConfig",
    "LinformerPreTrainedModel",
    "LinformerSelfAttention",
    "LinformerSelfAttentionModel",
    "NadarayaWatsonAttention",
    "NadarayaWatsonConfig",
    "NadarayaWatsonModel",
    "NadarayaWatsonPreTrainedModel",
    "RecurrentSeq2SeqConfig",
    "RecurrentSeq2SeqForConditionalGeneration",
    "RecurrentSeq2SeqModel",
    "RecurrentSeq2SeqPreTrainedModel",
    "AttentionCNNConfig",
    "AttentionCNNForImageClassification",
    "AttentionCNNModel",
    "AttentionCNNPreTrainedModel",
    "BasicResidualBlock",
    "BottleneckResidualBlock",
    "ChannelAttention",
    "CompressAIAttentionBlock",
    "CompressAIAttentionConfig",
    "CompressAIAttentionModel",
    "CrissCrossAttention",
    "CrissCrossAttentionConfig",
    "CrissCrossAttentionModel",
    "DualAttention",
    "DualAttentionConfig",
    "DualAttentionModel",
    "FeatureAttentionPreTrainedModel",
    "NonLocalBlock",
    "NonLocalConfig",
    "NonLocalModel",
    "PositionAttention",
    "ResidualAttentionConfig",
    "ResidualAttentionModel",
    "ResidualAttentionModule",
    "SEBasicBlock",
    "SEBottleneckBlock",
    "SpatialTransformer",
    "SpatialTransformerConfig",
    "SpatialTransformerModel",
    "SqueezeExcitation",
    "SqueezeExcitationConfig",
    "SqueezeExcitationModel",
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
