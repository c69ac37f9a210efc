"""Attention CNN: a small ResNet whose stages each end with one feature-map attention block (or none).

Data flow: pixels -> stem (conv3x3, BN, ReLU) -> stages (basic residual blocks, then the attention block) ->
global average pooling -> dropout -> linear classifier. Swapping `attention_type` changes nothing else, so the
blocks of `modeling_feature_attention` can be compared on equal footing.
"""

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutputWithNoAttention
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from .configuration_attention_cnn import AttentionCNNConfig
from .modeling_feature_attention import (
    BasicResidualBlock,
    CompressAIAttentionBlock,
    CrissCrossAttention,
    DualAttention,
    NonLocalBlock,
    ResidualAttentionModule,
    SpatialTransformer,
    SqueezeExcitation,
    conv_bn_relu,
    init_feature_attention_weights,
)
from .pretrained import HFAttentionPreTrainedModel


def build_attention_block(config: AttentionCNNConfig, channels: int) -> nn.Module:
    """The `config.attention_type` block for a feature map of `channels` channels."""
    builders = {
        "squeeze_excitation": lambda: SqueezeExcitation(channels, config.reduction),
        "spatial_transformer": lambda: SpatialTransformer(channels),
        "residual_attention": lambda: ResidualAttentionModule(channels, mask_depth=config.mask_depth),
        "dual_attention": lambda: DualAttention(channels, reduction=config.reduction, config=config),
        "non_local": lambda: NonLocalBlock(channels, pairwise_function=config.pairwise_function, config=config),
        "criss_cross": lambda: CrissCrossAttention(channels, config.reduction, config.recurrence),
        "compressai": lambda: CompressAIAttentionBlock(channels),
    }
    return builders[config.attention_type]()


class AttentionCNNStage(nn.Module):
    """Basic residual blocks (the first one strided when the stage halves the resolution), then the attention block."""

    def __init__(self, config: AttentionCNNConfig, stage: int, in_channels: int):
        super().__init__()
        channels, stride = config.hidden_sizes[stage], 1 if stage == 0 else 2
        blocks = [BasicResidualBlock(in_channels, channels, stride)]
        blocks += [BasicResidualBlock(channels, channels) for _ in range(config.depths[stage] - 1)]
        self.blocks = nn.Sequential(*blocks)
        self.attention = build_attention_block(config, channels) if config.stage_has_attention(stage) else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.attention(self.blocks(hidden_states))


class AttentionCNNPreTrainedModel(HFAttentionPreTrainedModel):
    config: AttentionCNNConfig
    config_class = AttentionCNNConfig
    base_model_prefix = "cnn"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # batch norms would update their running statistics twice per step under recomputation
    supports_gradient_checkpointing = False
    _no_split_modules = ["AttentionCNNStage"]
    # the non-local and DANet blocks run their dense attention through attention.py's dispatcher
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {"hidden_states": AttentionCNNStage}

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """A deterministic batch of two 8x8 images (transformers' convention for example inputs)."""
        generator = torch.Generator().manual_seed(0)
        return {"pixel_values": torch.randn(2, self.config.num_channels, 8, 8, generator=generator)}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        init_feature_attention_weights(module, self.config.initializer_range)


class AttentionCNNModel(AttentionCNNPreTrainedModel):
    """The network without its classifier; `pooler_output` is the globally averaged last feature map."""

    def __init__(self, config: AttentionCNNConfig):
        super().__init__(config)
        self.stem = conv_bn_relu(config.num_channels, config.hidden_sizes[0])
        widths = [config.hidden_sizes[0], *config.hidden_sizes]
        self.stages = nn.ModuleList(
            AttentionCNNStage(config, stage, widths[stage]) for stage in range(len(config.hidden_sizes))
        )
        self.post_init()

    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, pixel_values: torch.Tensor | None = None, **kwargs) -> BaseModelOutputWithPoolingAndNoAttention:
        r"""
        pixel_values (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            Images of any size, e.g. from `ViTImageProcessor`.
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required: a (batch, channels, height, width) tensor.")
        expected = self.config.num_channels
        if pixel_values.dim() != 4 or pixel_values.shape[1] != expected:
            raise ValueError(
                f"pixel_values must have shape (batch, {expected}, height, width), got {tuple(pixel_values.shape)}."
            )
        hidden_states = self.stem(pixel_values.to(self.stem[0].weight.dtype))
        for stage in self.stages:
            hidden_states = stage(hidden_states)
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=hidden_states, pooler_output=hidden_states.mean(dim=(2, 3))
        )


class AttentionCNNForImageClassification(AttentionCNNPreTrainedModel):
    """A linear classifier on the pooled features; the loss follows `config.problem_type`."""

    def __init__(self, config: AttentionCNNConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.cnn = AttentionCNNModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        width = config.hidden_sizes[-1]
        self.classifier = nn.Linear(width, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    @can_return_tuple
    def forward(
        self, pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kwargs
    ) -> ImageClassifierOutputWithNoAttention:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, or float `(batch_size, num_labels)`, *optional*):
            Class indices (single-label), multi-hot targets (multi-label) or values (regression).
        """
        outputs = self.cnn(pixel_values, **kwargs)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


__all__ = ["AttentionCNNForImageClassification", "AttentionCNNModel", "AttentionCNNPreTrainedModel"]
