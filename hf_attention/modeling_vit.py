"""Vision Transformer (Dosovitskiy et al., 2020): patch embeddings, a pre-norm encoder and a classifier head.

Data flow: pixels -> patch embeddings + class token + position embeddings -> (norm, CLIP's only) -> encoder layers
(x + attention(norm(x)), then x + mlp(norm(x))) -> final norm -> pooled token -> classifier.
"""

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from .attention import MultiHeadAttention
from .checks import check_pixel_values
from .configuration_vit import VisionTransformerConfig, as_pair
from .layers import FeedForward, drop_path
from .modeling_linformer import LinformerSelfAttention, init_sequence_projections
from .pretrained import HFAttentionPreTrainedModel, resolve_forward_kwargs


class VisionTransformerPatchEmbeddings(nn.Module):
    """Cut (batch, channels, height, width) images into patches and project each to `hidden_size`."""

    def __init__(self, config: VisionTransformerConfig):
        super().__init__()
        self.image_size = as_pair(config.image_size)
        self.patch_size = as_pair(config.patch_size)
        self.grid_size = (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])
        self.num_channels = config.num_channels
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=self.patch_size, stride=self.patch_size
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        check_pixel_values(pixel_values, self.num_channels, f"(batch, {self.num_channels}, height, width)")
        height, width = pixel_values.shape[-2:]
        if height % self.patch_size[0] or width % self.patch_size[1]:
            raise ValueError(
                f"Image size {height}x{width} is not a multiple of the patch size "
                f"{self.patch_size[0]}x{self.patch_size[1]}; resize or pad the images."
            )
        return self.projection(pixel_values.to(self.projection.weight.dtype)).flatten(2).transpose(1, 2)


class VisionTransformerEmbeddings(nn.Module):
    """Patch embeddings, a learned class token in front, and learned position embeddings added to all."""

    def __init__(self, config: VisionTransformerConfig):
        super().__init__()
        self.patch_embeddings = VisionTransformerPatchEmbeddings(config)
        num_patches = self.patch_embeddings.grid_size[0] * self.patch_embeddings.grid_size[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, num_patches + 1, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def interpolate_pos_encoding(self, grid_height: int, grid_width: int) -> torch.Tensor:
        """Position embeddings resized (bicubic) from the training grid to a grid of another size."""
        if (grid_height, grid_width) == self.patch_embeddings.grid_size:
            return self.position_embeddings
        class_position, patch_positions = self.position_embeddings[:, :1], self.position_embeddings[:, 1:]
        trained_height, trained_width = self.patch_embeddings.grid_size
        patch_positions = patch_positions.reshape(1, trained_height, trained_width, -1).permute(0, 3, 1, 2)
        patch_positions = nn.functional.interpolate(
            patch_positions.float(), size=(grid_height, grid_width), mode="bicubic", align_corners=False
        ).to(self.position_embeddings.dtype)
        return torch.cat((class_position, patch_positions.flatten(2).transpose(1, 2)), dim=1)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        embeddings = self.patch_embeddings(pixel_values)
        height, width = pixel_values.shape[-2:]
        patch_height, patch_width = self.patch_embeddings.patch_size
        grid = (height // patch_height, width // patch_width)
        if grid != self.patch_embeddings.grid_size and not interpolate_pos_encoding:
            expected_height, expected_width = self.patch_embeddings.image_size
            raise ValueError(
                f"Input image size {height}x{width} doesn't match the model's {expected_height}x{expected_width}. "
                "Resize the images, or pass interpolate_pos_encoding=True to resize the position embeddings."
            )
        cls_tokens = self.cls_token.expand(embeddings.shape[0], -1, -1)
        embeddings = torch.cat((cls_tokens, embeddings), dim=1)
        position_embeddings = self.interpolate_pos_encoding(*grid) if interpolate_pos_encoding else None
        embeddings = embeddings + (self.position_embeddings if position_embeddings is None else position_embeddings)
        return self.dropout(embeddings)


class VisionTransformerLayer(GradientCheckpointingLayer):
    """Pre-norm encoder layer: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: VisionTransformerConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = self.make_attention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = FeedForward(config.hidden_size, config.intermediate_size, config.hidden_act)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.drop_path_rate = drop_path_rate

    @staticmethod
    def make_attention(config: VisionTransformerConfig) -> nn.Module:
        if config.attention_type == "linformer":
            (height, width), (patch_height, patch_width) = as_pair(config.image_size), as_pair(config.patch_size)
            return LinformerSelfAttention(
                config.hidden_size,
                config.num_attention_heads,
                max_length=(height // patch_height) * (width // patch_width) + 1,  # the patches and the class token
                projected_length=config.linformer_k,
                sharing=config.linformer_sharing,
                dropout=config.attention_probs_dropout_prob,
                bias=config.qkv_bias,
                config=config,
            )
        return MultiHeadAttention(
            config.hidden_size,
            config.num_attention_heads,
            dropout=config.attention_probs_dropout_prob,
            bias=config.qkv_bias,
            config=config,
        )

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        attention_output, _ = self.attention(self.layernorm_before(hidden_states), **kwargs)
        hidden_states = hidden_states + drop_path(self.dropout(attention_output), self.drop_path_rate, self.training)
        mlp_output = self.mlp(self.layernorm_after(hidden_states))
        return hidden_states + drop_path(self.dropout(mlp_output), self.drop_path_rate, self.training)


class VisionTransformerPreTrainedModel(HFAttentionPreTrainedModel):
    config: VisionTransformerConfig
    config_class = VisionTransformerConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["VisionTransformerEmbeddings", "VisionTransformerLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {
        "hidden_states": VisionTransformerLayer,
        "attentions": MultiHeadAttention,  # LinformerSelfAttention is one too: listing both records it twice
    }

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """A deterministic batch of two images that fits the config (transformers' convention for example inputs)."""
        height, width = as_pair(self.config.image_size)
        generator = torch.Generator().manual_seed(0)
        return {"pixel_values": torch.randn(2, self.config.num_channels, height, width, generator=generator)}

    def hub_tags(self) -> list[str]:
        return ["vision-transformer", f"{self.config.attention_type}-attention"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # linear, conv and layer norm
        if isinstance(module, VisionTransformerEmbeddings):
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=self.config.initializer_range)
            init.trunc_normal_(module.cls_token, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, LinformerSelfAttention):
            init_sequence_projections(module)


class VisionTransformerModel(VisionTransformerPreTrainedModel):
    """The encoder without a head; `pooler_output` is the class token or the mean patch token (`config.pooling`)."""

    def __init__(self, config: VisionTransformerConfig):
        super().__init__(config)
        self.embeddings = VisionTransformerEmbeddings(config)
        self.pre_layernorm = None
        if config.pre_layernorm:
            self.pre_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        # plain floats, not torch.linspace(...).tolist(): that fails on the meta device big-model loading builds on
        last = max(config.num_hidden_layers - 1, 1)
        drop_path_rates = [config.drop_path_rate * index / last for index in range(config.num_hidden_layers)]
        self.layers = nn.ModuleList(VisionTransformerLayer(config, rate) for rate in drop_path_rates)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        r"""
        pixel_values (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            Images, e.g. from `ViTImageProcessor`.
        interpolate_pos_encoding (`bool`, *optional*):
            Resize the position embeddings to run on images of another size than `config.image_size`.
        """
        kwargs = resolve_forward_kwargs(self, kwargs)
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=bool(interpolate_pos_encoding))
        if self.pre_layernorm is not None:
            hidden_states = self.pre_layernorm(hidden_states)
        for layer in self.layers:
            hidden_states = layer(hidden_states, **kwargs)
        sequence_output = self.layernorm(hidden_states)
        if self.config.pooling == "mean":
            pooled_output = sequence_output[:, 1:].mean(dim=1)
        else:
            pooled_output = sequence_output[:, 0]
        return BaseModelOutputWithPooling(last_hidden_state=sequence_output, pooler_output=pooled_output)


class VisionTransformerForImageClassification(VisionTransformerPreTrainedModel):
    """A linear classifier on the pooled representation; the loss follows `config.problem_type`."""

    def __init__(self, config: VisionTransformerConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = VisionTransformerModel(config)
        num_labels = config.num_labels
        self.classifier = nn.Linear(config.hidden_size, num_labels) if num_labels > 0 else nn.Identity()
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ImageClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, or float `(batch_size, num_labels)`, *optional*):
            Class indices (single-label), multi-hot targets (multi-label) or values (regression).
        """
        outputs = self.vit(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = [
    "VisionTransformerForImageClassification",
    "VisionTransformerModel",
    "VisionTransformerPreTrainedModel",
]
