"""Attention CNN: a small ResNet whose stages each end with one feature-map attention block (or none).

Data flow: pixels -> stem (conv3x3, BN, ReLU) -> stages (basic residual blocks, then the attention block) ->
global average pooling -> dropout -> linear classifier. Swapping `attention_type` changes nothing else, so the
blocks of `create_feature_attention` can be compared on equal footing.

Outputs: `hidden_states` are the stem output then each stage's output (num_stages + 1 maps). `attentions` are the
maps of the blocks that compute them, in the order they ran: non-local (batch, 1, h * w, keys), DANet position
(batch, 1, h * w, h * w), criss-cross (batch, 1, h * w, h + w) per pass; DANet's channel maps come as
`channel_attentions` (batch, 1, c, c). SE, STN, residual attention and CompressAI blocks return no maps.
"""

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from .checks import check_pixel_values
from .configuration_attention_cnn import AttentionCNNConfig
from .feature_attention import create_feature_attention
from .feature_map_pretrained import drop_recording_flags, init_feature_map_weights, recorded_with_attentions
from .layers import AttentionMap
from .modeling_dual_attention import ChannelAttentionMap
from .pretrained import HFAttentionPreTrainedModel, resolve_forward_kwargs
from .residual_blocks import BasicResidualBlock, conv_bn_relu


def attention_block_options(config: AttentionCNNConfig) -> dict:
    """The constructor arguments `config` sets for its `attention_type` block."""
    return {
        "squeeze_excitation": {"reduction": config.reduction},
        "spatial_transformer": {},
        "residual_attention": {"mask_depth": config.mask_depth},
        "dual_attention": {"reduction": config.reduction, "config": config},
        "non_local": {"pairwise_function": config.pairwise_function, "config": config},
        "criss_cross": {"reduction": config.reduction, "recurrence": config.recurrence},
        "compressai": {},
    }[config.attention_type]


class AttentionCNNStage(nn.Module):
    """Basic residual blocks (the first one strided when the stage halves the resolution), then the attention block."""

    def __init__(self, config: AttentionCNNConfig, stage: int, in_channels: int):
        super().__init__()
        channels, stride = config.hidden_sizes[stage], 1 if stage == 0 else 2
        blocks = [BasicResidualBlock(in_channels, channels, stride)]
        blocks += [BasicResidualBlock(channels, channels) for _ in range(config.depths[stage] - 1)]
        self.blocks = nn.Sequential(*blocks)
        if config.stage_has_attention(stage):
            options = attention_block_options(config)
            self.attention = create_feature_attention(config.attention_type, channels, **options)
        else:
            self.attention = nn.Identity()
        # blocks that compute attention maps need to know whether to materialise them (sdpa does not)
        self.attention_takes_flag = "output_attentions" in inspect.signature(self.attention.forward).parameters

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False) -> torch.Tensor:
        hidden_states = self.blocks(hidden_states)
        if self.attention_takes_flag:
            return self.attention(hidden_states, output_attentions)
        return self.attention(hidden_states)


@dataclass
class AttentionCNNModelOutput(BaseModelOutputWithPooling):
    r"""
    channel_attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
        DANet's channel attention per block, (batch_size, 1, channels, channels).
    """

    channel_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class AttentionCNNImageClassifierOutput(ImageClassifierOutput):
    r"""
    channel_attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
        DANet's channel attention per block, (batch_size, 1, channels, channels).
    """

    channel_attentions: tuple[torch.FloatTensor, ...] | None = None


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
    _can_record_outputs = {
        "hidden_states": AttentionCNNStage,
        "attentions": AttentionMap,
        "channel_attentions": ChannelAttentionMap,
    }

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """A deterministic batch of two 8x8 images (transformers' convention for example inputs)."""
        generator = torch.Generator().manual_seed(0)
        return {"pixel_values": torch.randn(2, self.config.num_channels, 8, 8, generator=generator)}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        init_feature_map_weights(module, self.config.initializer_range)


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

    @recorded_with_attentions("channel_attentions")
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self, pixel_values: torch.Tensor | None = None, **kwargs: Unpack[TransformersKwargs]
    ) -> AttentionCNNModelOutput:
        r"""
        pixel_values (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            Images of any size, e.g. from `ViTImageProcessor`.
        """
        kwargs = resolve_forward_kwargs(self, drop_recording_flags(self, kwargs))
        check_pixel_values(
            pixel_values, self.config.num_channels, f"(batch, {self.config.num_channels}, height, width)"
        )
        hidden_states = self.stem(pixel_values.to(self.stem[0].weight.dtype))
        for stage in self.stages:
            hidden_states = stage(hidden_states, bool(kwargs["output_attentions"]))
        return AttentionCNNModelOutput(last_hidden_state=hidden_states, pooler_output=hidden_states.mean(dim=(2, 3)))


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
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> AttentionCNNImageClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, or float `(batch_size, num_labels)`, *optional*):
            Class indices (single-label), multi-hot targets (multi-label) or values (regression).
        """
        outputs = self.cnn(pixel_values, **kwargs)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return AttentionCNNImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            channel_attentions=outputs.channel_attentions,
        )


__all__ = [
    "AttentionCNNForImageClassification",
    "AttentionCNNImageClassifierOutput",
    "AttentionCNNModel",
    "AttentionCNNModelOutput",
    "AttentionCNNPreTrainedModel",
]
