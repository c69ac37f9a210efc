"""hf_attention: the attention mechanisms of the literature as Hugging Face native models.

Importing the package registers every configuration and model with transformers' Auto classes, so saved
models load with `AutoModel*.from_pretrained` and no `trust_remote_code`.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSeq2SeqLM,
    AutoModelForVideoClassification,
    AutoModelForZeroShotImageClassification,
)

from .attention import MultiHeadAttention, dot_product_attention
from .configuration_additive import AdditiveAttentionConfig
from .configuration_attention_cnn import AttentionCNNConfig
from .configuration_clip_residual import CLIPResidualTransformerConfig
from .configuration_clip_text import CLIPResidualTextConfig
from .configuration_compressai import CompressAIAttentionConfig
from .configuration_criss_cross import CrissCrossAttentionConfig
from .configuration_detr_transformer import DETRTransformerConfig
from .configuration_dual_attention import DualAttentionConfig
from .configuration_feature_map_cross_attention import FeatureMapCrossAttentionConfig
from .configuration_glimpse import RecurrentAttentionConfig
from .configuration_image_text import VisionTextCrossAttentionConfig
from .configuration_linformer import LinformerConfig
from .configuration_mha import MultiHeadAttentionConfig
from .configuration_nadaraya_watson import NadarayaWatsonConfig
from .configuration_non_local import NonLocalConfig
from .configuration_residual_attention import ResidualAttentionConfig
from .configuration_seq2seq import RecurrentSeq2SeqConfig
from .configuration_spatial_transformer import SpatialTransformerConfig
from .configuration_squeeze_excitation import SqueezeExcitationConfig
from .configuration_video import VideoTextTransformerConfig, VideoTransformerConfig
from .configuration_vit import VisionTransformerConfig
from .conversion import from_transformers, register_legacy_checkpoint_formats
from .cpu_optimization import optimize_for_cpu
from .feature_attention import create_feature_attention
from .feature_map_pretrained import FeatureAttentionPreTrainedModel
from .image_processing_grey import GreyImageProcessor
from .masks import AttentionMask, build_attention_mask
from .modeling_additive import AdditiveAttention, AdditiveAttentionModel, AdditiveAttentionPreTrainedModel
from .modeling_attention_cnn import AttentionCNNForImageClassification, AttentionCNNModel, AttentionCNNPreTrainedModel
from .modeling_clip_residual import (
    CLIPResidualAttentionBlock,
    CLIPResidualTransformerModel,
    CLIPResidualTransformerPreTrainedModel,
)
from .modeling_clip_text import CLIPResidualTextModel
from .modeling_compressai import CompressAIAttentionBlock, CompressAIAttentionModel
from .modeling_criss_cross import CrissCrossAttention, CrissCrossAttentionModel
from .modeling_detr_transformer import (
    DETRTransformerDecoder,
    DETRTransformerDecoderLayer,
    DETRTransformerEncoder,
    DETRTransformerEncoderLayer,
    DETRTransformerModel,
    DETRTransformerPreTrainedModel,
)
from .modeling_dual_attention import ChannelAttention, DualAttention, DualAttentionModel, PositionAttention
from .modeling_feature_map_cross_attention import (
    FeatureMapCrossAttention,
    FeatureMapCrossAttentionModel,
    FeatureMapCrossAttentionPreTrainedModel,
)
from .modeling_glimpse import (
    GlimpseNetwork,
    GlimpseSensor,
    LocationPolicy,
    RecurrentAttentionForImageClassification,
    RecurrentAttentionModel,
    RecurrentAttentionPreTrainedModel,
)
from .modeling_image_text import (
    ImageTextFusion,
    ImageTextFusionLayer,
    ImageTextRanking,
    VisionTextCrossAttentionForImageTextRetrieval,
    VisionTextCrossAttentionModel,
    VisionTextCrossAttentionOutput,
    VisionTextCrossAttentionPreTrainedModel,
)
from .modeling_linformer import LinformerPreTrainedModel, LinformerSelfAttention, LinformerSelfAttentionModel
from .modeling_mha import MultiHeadAttentionModel, MultiHeadAttentionPreTrainedModel
from .modeling_nadaraya_watson import NadarayaWatsonAttention, NadarayaWatsonModel, NadarayaWatsonPreTrainedModel
from .modeling_non_local import NonLocalBlock, NonLocalModel
from .modeling_residual_attention import ResidualAttentionModel, ResidualAttentionModule
from .modeling_seq2seq import (
    RecurrentSeq2SeqForConditionalGeneration,
    RecurrentSeq2SeqModel,
    RecurrentSeq2SeqPreTrainedModel,
)
from .modeling_spatial_transformer import SpatialTransformer, SpatialTransformerModel
from .modeling_squeeze_excitation import SEBasicBlock, SEBottleneckBlock, SqueezeExcitation, SqueezeExcitationModel
from .modeling_video import (
    CrossFrameAttentionLayer,
    MultiFrameIntegrationTransformer,
    VideoSpecificPromptGenerator,
    VideoTextTransformerModel,
    VideoTextTransformerPreTrainedModel,
    VideoTransformerForVideoClassification,
    VideoTransformerModel,
    VideoTransformerPreTrainedModel,
)
from .modeling_vit import (
    VisionTransformerForImageClassification,
    VisionTransformerModel,
    VisionTransformerPreTrainedModel,
)
from .residual_blocks import BasicResidualBlock, BottleneckResidualBlock
from .video_processing_video import VideoTransformerVideoProcessor, register_video_processor

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
    (CLIPResidualTextConfig, CLIPResidualTextModel, {}),
    (
        VisionTextCrossAttentionConfig,
        VisionTextCrossAttentionModel,
        {AutoModelForZeroShotImageClassification: VisionTextCrossAttentionForImageTextRetrieval},
    ),
    (
        RecurrentAttentionConfig,
        RecurrentAttentionModel,
        {AutoModelForImageClassification: RecurrentAttentionForImageClassification},
    ),
    (
        VideoTransformerConfig,
        VideoTransformerModel,
        {AutoModelForVideoClassification: VideoTransformerForVideoClassification},
    ),
    (VideoTextTransformerConfig, VideoTextTransformerModel, {}),
]


def _register() -> None:
    for config_class, base_model, heads in REGISTRY:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, base_model, exist_ok=True)
        for auto_class, head in heads.items():
            auto_class.register(config_class, head, exist_ok=True)
    register_legacy_checkpoint_formats(config_class.model_type for config_class, _, _ in REGISTRY)
    register_video_processor((VideoTransformerConfig, VideoTextTransformerConfig))
    # a folder names its processor class; registering makes the name resolvable without trust_remote_code
    AutoImageProcessor.register(
        RecurrentAttentionConfig, image_processor_classes={"pil": GreyImageProcessor}, exist_ok=True
    )


_register()

__all__ = [
    "CrossFrameAttentionLayer",
    "MultiFrameIntegrationTransformer",
    "VideoSpecificPromptGenerator",
    "VideoTextTransformerConfig",
    "VideoTextTransformerModel",
    "VideoTextTransformerPreTrainedModel",
    "VideoTransformerConfig",
    "VideoTransformerForVideoClassification",
    "VideoTransformerModel",
    "VideoTransformerVideoProcessor",
    "GreyImageProcessor",
    "VideoTransformerPreTrainedModel",
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
    "CLIPResidualTextConfig",
    "CLIPResidualTextModel",
    "ImageTextFusion",
    "ImageTextFusionLayer",
    "ImageTextRanking",
    "VisionTextCrossAttentionConfig",
    "VisionTextCrossAttentionForImageTextRetrieval",
    "VisionTextCrossAttentionModel",
    "VisionTextCrossAttentionOutput",
    "VisionTextCrossAttentionPreTrainedModel",
    "GlimpseNetwork",
    "GlimpseSensor",
    "LocationPolicy",
    "RecurrentAttentionConfig",
    "RecurrentAttentionForImageClassification",
    "RecurrentAttentionModel",
    "RecurrentAttentionPreTrainedModel",
    "VisionTransformerConfig",
    "VisionTransformerForImageClassification",
    "VisionTransformerModel",
    "VisionTransformerPreTrainedModel",
    "build_attention_mask",
    "create_feature_attention",
    "dot_product_attention",
    "from_transformers",
    "optimize_for_cpu",
]
