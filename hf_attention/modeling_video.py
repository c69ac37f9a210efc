"""X-CLIP (Ni et al., 2022): cross-frame attention, intra-frame fusion, the multi-frame integration transformer and the
video-specific prompt generator, as a video classifier and as a video-text model.

Data flow of the video encoder, for a clip of F frames of T tokens each (a class token and the patches):
frames -> patch embeddings + class token + positions -> pre-norm -> layers, each:
    message_f = W class_token_f                                 one message token per frame
    message  += drop_path(attention over the clip's F messages) cross-frame attention (CFA)
    [tokens_f; message_f] += attention(norm([tokens_f; message_f]))  intra-frame fusion (IFA), message dropped after
    tokens_f += mlp(norm(tokens_f))
-> post-norm of every frame's class token -> projection -> MIT (frame embeddings + temporal positions -> transformer
-> + residual -> mean over frames) -> the video embedding.

Data flow of the video-text model: texts -> CLIP's text model (modeling_clip_text), read out at the token
`text_config.pooling` names (X-CLIP's end-of-text token) -> projection -> + alpha * prompt generator(texts attending
to the video's patch tokens) -> cosine similarity with the video embedding, scaled by exp(logit_scale).
"""

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .attention import MultiHeadAttention
from .checks import check_pixel_values
from .configuration_video import VideoTextTransformerConfig, VideoTransformerConfig
from .layers import FeedForward, contrastive_loss, drop_path
from .modeling_clip_residual import CLIPResidualAttentionBlock
from .modeling_clip_text import CLIPResidualTextModel
from .pretrained import HFAttentionPreTrainedModel, resolve_forward_kwargs

VIDEO_LAYOUT = "(batch, frames, channels, height, width)"


class IntraFrameAttention(MultiHeadAttention):
    """Self-attention inside every frame, all frames of a clip in one call.

    Frames join the batch, so attention never crosses frames. Forward takes and returns (batch, frames, tokens,
    width); the maps come out as the attention call made them, frames folded into the batch, (batch * frames, heads,
    tokens, tokens), clip-major (as transformers' X-CLIP vision model returns them): the output was computed from
    these very tensors, so a loss on the output gives them a gradient.
    """

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False, **kwargs):
        num_frames = hidden_states.shape[1]  # not the batch size, which may be 0
        output, probs = super().forward(hidden_states.flatten(0, 1), output_attentions=output_attentions, **kwargs)
        return output.unflatten(0, (-1, num_frames)), probs


class CrossFrameAttentionLayer(GradientCheckpointingLayer):
    """One X-CLIP vision layer: cross-frame attention between message tokens, then intra-frame fusion.

    Args:
        hidden_size: width of the frame tokens.
        num_heads: heads of both attentions; must divide `hidden_size`.
        intermediate_size: width of the MLP's hidden layer.
        hidden_act: MLP activation, a key of `transformers.activations.ACT2FN`.
        layer_norm_eps: epsilon of the three layer norms.
        attention_dropout: dropout on the attention probabilities, in [0, 1).
        drop_path_rate: stochastic depth on the cross-frame branch, in [0, 1).
        cross_frame: False builds the same layer without message tokens (every frame on its own).
        attn_implementation: backend when no `config` drives the module ("eager", "sdpa", "flex_attention", ...).
        config: a `PreTrainedConfig` whose live `_attn_implementation` overrides `attn_implementation`.

    Forward takes (batch, frames, tokens, hidden_size), the class token first in every frame, and returns the same
    shape. Any frame count works: the message tokens attend over the frames they are given.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        *,
        hidden_act: str = "quick_gelu",
        layer_norm_eps: float = 1e-5,
        attention_dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        cross_frame: bool = True,
        attn_implementation: str = "sdpa",
        config=None,
    ):
        super().__init__()
        attention = dict(dropout=attention_dropout, attn_implementation=attn_implementation)
        if cross_frame:
            self.message_fc = nn.Linear(hidden_size, hidden_size)
            self.message_ln = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
            self.message_attn = MultiHeadAttention(hidden_size, num_heads, **attention, config=config)
        self.layer_norm1 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.self_attn = IntraFrameAttention(hidden_size, num_heads, **attention, config=config)
        self.layer_norm2 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.mlp = FeedForward(hidden_size, intermediate_size, hidden_act)
        self.drop_path_rate = drop_path_rate

    @property
    def cross_frame(self) -> bool:
        return hasattr(self, "message_attn")

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        if hidden_states.dim() != 4:
            raise ValueError(
                f"CrossFrameAttentionLayer takes (batch, frames, tokens, hidden), got {tuple(hidden_states.shape)}."
            )
        num_tokens = hidden_states.shape[2]
        if self.cross_frame:
            messages = self.message_fc(hidden_states[:, :, 0])
            attended, _ = self.message_attn(self.message_ln(messages), **kwargs)
            messages = messages + drop_path(attended, self.drop_path_rate, self.training)
            hidden_states = torch.cat([hidden_states, messages[:, :, None]], dim=2)
        attended, _ = self.self_attn(self.layer_norm1(hidden_states), **kwargs)
        hidden_states = (hidden_states + attended)[:, :, :num_tokens]  # the message token has done its job
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class MultiFrameIntegrationTransformer(nn.Module):
    """X-CLIP's MIT: frame embeddings + temporal position embeddings -> CLIP blocks -> + residual -> mean over frames.

    Args:
        embed_dim: width of the frame embeddings.
        num_heads: attention heads; must divide `embed_dim`.
        intermediate_size: width of the MLP of each block.
        num_layers: number of blocks.
        num_frames: frames the temporal position embeddings cover; other counts need `interpolate_pos_encoding`.
        hidden_act, layer_norm_eps, attention_dropout, attn_implementation, config: as for the blocks.

    Forward takes (batch, frames, embed_dim) and returns (frames after the MIT, their mean) of shapes
    (batch, frames, embed_dim) and (batch, embed_dim).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        intermediate_size: int,
        num_layers: int,
        num_frames: int,
        *,
        hidden_act: str = "quick_gelu",
        layer_norm_eps: float = 1e-5,
        attention_dropout: float = 0.0,
        attn_implementation: str = "sdpa",
        config=None,
    ):
        super().__init__()
        self.position_embedding = nn.Parameter(torch.empty(1, num_frames, embed_dim))
        block = dict(hidden_act=hidden_act, layer_norm_eps=layer_norm_eps, attention_dropout=attention_dropout)
        self.layers = nn.ModuleList(
            CLIPResidualAttentionBlock(
                embed_dim, num_heads, intermediate_size, **block, attn_implementation=attn_implementation, config=config
            )
            for _ in range(num_layers)
        )

    def temporal_positions(self, num_frames: int, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        trained_frames = self.position_embedding.shape[1]
        if num_frames == trained_frames:
            return self.position_embedding
        if not interpolate_pos_encoding:
            raise ValueError(
                f"The clips have {num_frames} frames but the model was built for num_frames={trained_frames}. "
                "Sample that many frames, or pass interpolate_pos_encoding=True to interpolate the temporal position "
                "embeddings."
            )
        positions = rearrange(self.position_embedding.float(), "1 f d -> 1 d f")
        positions = nn.functional.interpolate(positions, size=num_frames, mode="linear", align_corners=True)
        return rearrange(positions, "1 d f -> 1 f d").to(self.position_embedding.dtype)

    def forward(
        self, frame_embeds: torch.Tensor, interpolate_pos_encoding: bool = False, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_states = frame_embeds + self.temporal_positions(frame_embeds.shape[1], interpolate_pos_encoding)
        for layer in self.layers:
            hidden_states = layer(hidden_states, **kwargs)
        hidden_states = hidden_states + frame_embeds
        return hidden_states, hidden_states.mean(dim=1)


class VideoSpecificPromptGeneratorLayer(nn.Module):
    """Texts attend to the video's patch tokens (x + cross_attn(norm(x), visual)), then x + mlp(norm(x))."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        hidden_act: str = "quick_gelu",
        layer_norm_eps: float = 1e-5,
        attention_dropout: float = 0.0,
        projection_dropout: float = 0.0,
        attn_implementation: str = "sdpa",
        config=None,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.cross_attn = MultiHeadAttention(
            embed_dim,
            num_heads,
            dropout=attention_dropout,
            bias=False,
            attn_implementation=attn_implementation,
            config=config,
        )
        self.projection_dropout = nn.Dropout(projection_dropout)
        self.norm3 = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.mlp = FeedForward(embed_dim, 4 * embed_dim, hidden_act, dropout=attention_dropout)

    def forward(self, texts: torch.Tensor, visual: torch.Tensor, **kwargs) -> torch.Tensor:
        attended, _ = self.cross_attn(self.norm1(texts), key_value_states=visual, **kwargs)
        texts = texts + self.projection_dropout(attended)
        return texts + self.mlp(self.norm3(texts))


class VideoSpecificPromptGenerator(nn.Module):
    """X-CLIP's video-specific prompt: alpha * layers(texts, norm(visual)), alpha a learned per-channel scale.

    Args:
        embed_dim: width of the text embeddings and of the projected visual tokens.
        num_heads: heads of the cross-attention; must divide `embed_dim`.
        num_layers: number of layers.
        alpha: initial value of the scale.
        visual_layer_norm_eps: epsilon of the norm on the visual tokens; `layer_norm_eps` is the layers'.
        hidden_act, attention_dropout, projection_dropout, attn_implementation, config: as for the layers.

    Forward takes texts (batch, num_texts, embed_dim) and visual tokens (batch, num_tokens, embed_dim) and returns
    the prompt to add to the texts, (batch, num_texts, embed_dim).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_layers: int,
        alpha: float = 0.1,
        *,
        hidden_act: str = "quick_gelu",
        layer_norm_eps: float = 1e-5,
        visual_layer_norm_eps: float = 1e-5,
        attention_dropout: float = 0.0,
        projection_dropout: float = 0.0,
        attn_implementation: str = "sdpa",
        config=None,
    ):
        super().__init__()
        self.initial_alpha = alpha
        self.layernorm = nn.LayerNorm(embed_dim, eps=visual_layer_norm_eps)
        layer = dict(hidden_act=hidden_act, layer_norm_eps=layer_norm_eps, attention_dropout=attention_dropout)
        layer |= dict(projection_dropout=projection_dropout, attn_implementation=attn_implementation, config=config)
        self.layers = nn.ModuleList(
            VideoSpecificPromptGeneratorLayer(embed_dim, num_heads, **layer) for _ in range(num_layers)
        )
        self.alpha = nn.Parameter(torch.empty(embed_dim))

    def forward(self, texts: torch.Tensor, visual: torch.Tensor, **kwargs) -> torch.Tensor:
        visual = self.layernorm(visual)
        for layer in self.layers:
            texts = layer(texts, visual, **kwargs)
        return self.alpha * texts


class VideoTransformerEmbeddings(nn.Module):
    """Patch embeddings of every frame (no bias, as CLIP), a class token in front, learned positions added."""

    def __init__(self, config: VideoTransformerConfig):
        super().__init__()
        self.image_size, self.patch_size = config.image_size, config.patch_size
        self.grid_size = config.image_size // config.patch_size
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size, bias=False
        )
        self.class_embedding = nn.Parameter(torch.empty(config.hidden_size))
        self.position_embedding = nn.Parameter(torch.empty(self.grid_size**2 + 1, config.hidden_size))

    def positions(self, grid_height: int, grid_width: int) -> torch.Tensor:
        """Position embeddings for a grid of patches, resized (bicubic) when it is not the training grid."""
        if (grid_height, grid_width) == (self.grid_size, self.grid_size):
            return self.position_embedding
        class_position, patch_positions = self.position_embedding[:1], self.position_embedding[1:]
        grid = rearrange(patch_positions.float(), "(h w) d -> 1 d h w", h=self.grid_size)
        grid = nn.functional.interpolate(grid, size=(grid_height, grid_width), mode="bicubic", align_corners=False)
        patch_positions = rearrange(grid, "1 d h w -> (h w) d").to(self.position_embedding.dtype)
        return torch.cat([class_position, patch_positions])

    def forward(self, frames: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        height, width = frames.shape[-2:]
        if (height, width) != (self.image_size, self.image_size) and not interpolate_pos_encoding:
            raise ValueError(
                f"Frames of {height}x{width} don't match the model's {self.image_size}x{self.image_size}. Resize "
                "them (the image processor does), or pass interpolate_pos_encoding=True to resize the position "
                "embeddings."
            )
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"Frame size {height}x{width} is not a multiple of the patch size {self.patch_size}.")
        patches = rearrange(self.patch_embedding(frames), "n d h w -> n (h w) d")
        class_tokens = self.class_embedding.expand(patches.shape[0], 1, -1)
        tokens = torch.cat([class_tokens, patches], dim=1)
        return tokens + self.positions(height // self.patch_size, width // self.patch_size)


@dataclass
class VideoTransformerModelOutput(ModelOutput):
    r"""
    last_hidden_state (`torch.Tensor` of shape `(batch_size, num_frames, num_tokens, hidden_size)`):
        Every frame's tokens after the last layer (the class token first), before the post-norm, as X-CLIP returns.
    pooler_output (`torch.Tensor` of shape `(batch_size, embed_dim)`):
        The video embedding: the MIT's mean over frames (or the plain mean with `video_pooling="mean"`).
    frame_embeds (`torch.Tensor` of shape `(batch_size, num_frames, embed_dim)`):
        Every frame's pooled output: its post-normed class token, projected when `projection_dim` is set.
    hidden_states (`tuple(torch.Tensor)`, returned with `output_hidden_states=True`):
        The input of the first layer and the output of every layer, each (batch, frames, tokens, hidden).
    attentions (`tuple(torch.Tensor)`, returned with `output_attentions=True`):
        Intra-frame attention maps, one per layer, `(batch_size * num_frames, heads, tokens + 1, tokens + 1)`:
        frames folded into the batch, clip-major (`unflatten(0, (batch_size, num_frames))` separates them), as
        transformers' X-CLIP vision model returns them. The last key/query is the frame's message token (`tokens`
        without one when `temporal_modeling="none"`). They are the tensors the layer's output came from, so they carry
        gradient.
    cross_frame_attentions (`tuple(torch.Tensor)`, returned with `output_attentions=True`):
        Cross-frame attention maps of every layer, `(batch_size, heads, num_frames, num_frames)` (empty when
        `temporal_modeling="none"`).
    mit_attentions (`tuple(torch.Tensor)`, returned with `output_attentions=True`):
        The multi-frame integration transformer's maps, one per MIT layer, `(batch_size, mit_heads, num_frames,
        num_frames)` (row: the frame that attends; empty with `video_pooling="mean"`).
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    frame_embeds: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_frame_attentions: tuple[torch.Tensor, ...] | None = None
    mit_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class VideoClassifierOutput(ModelOutput):
    r"""
    loss (`torch.Tensor` of shape `()`, returned with `labels`):
        The loss `config.problem_type` selects.
    logits (`torch.Tensor` of shape `(batch_size, num_labels)`):
        Classification scores (before softmax).
    hidden_states, attentions, cross_frame_attentions, mit_attentions: as in [`VideoTransformerModelOutput`].
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_frame_attentions: tuple[torch.Tensor, ...] | None = None
    mit_attentions: tuple[torch.Tensor, ...] | None = None


def check_video(pixel_values: torch.Tensor | None, config: VideoTransformerConfig) -> None:
    if pixel_values is not None and pixel_values.dim() == 4:
        raise ValueError(
            f"pixel_values must be clips of shape {VIDEO_LAYOUT}, got a 4-D tensor {tuple(pixel_values.shape)}. "
            "Frames stacked as (batch * frames, channels, height, width) are ambiguous: reshape them to "
            f"(batch, {config.num_frames}, channels, height, width) yourself, e.g. "
            "pixel_values.unflatten(0, (-1, num_frames))."
        )
    check_pixel_values(pixel_values, config.num_channels, layout=VIDEO_LAYOUT)


def init_x_clip_weights(
    module: nn.Module, factor: float, num_layers: int, initializer_range: float, position_std: float | None = None
) -> None:
    """X-CLIP's initialisation of the modules of the video encoder (CLIP's scheme, scaled by `factor`); the spatial
    positions get `position_std` when given."""
    if isinstance(module, VideoTransformerEmbeddings):
        init.normal_(module.class_embedding, std=module.class_embedding.shape[0] ** -0.5 * factor)
        init.normal_(module.patch_embedding.weight, std=initializer_range * factor)
        init.normal_(module.position_embedding, std=position_std or initializer_range * factor)
    elif isinstance(module, CrossFrameAttentionLayer):
        for attention in (module.self_attn, getattr(module, "message_attn", None)):
            if attention is not None:
                init_clip_attention(attention, num_layers, factor)
        init_clip_mlp(module.mlp, num_layers, factor)
    elif isinstance(module, MultiFrameIntegrationTransformer):
        init.normal_(module.position_embedding, std=factor)
        for block in module.layers:  # X-CLIP scales the MIT's blocks by the MIT's own depth
            init_clip_attention(block.self_attn, len(module.layers), factor)
            init_clip_mlp(block.mlp, len(module.layers), factor)
    elif isinstance(module, VideoSpecificPromptGenerator):
        init.constant_(module.alpha, module.initial_alpha)


def init_clip_attention(attention: MultiHeadAttention, num_layers: int, factor: float) -> None:
    width = attention.q_proj.in_features
    for projection in (attention.q_proj, attention.k_proj, attention.v_proj):
        init.normal_(projection.weight, std=width**-0.5 * (2 * num_layers) ** -0.5 * factor)
    init.normal_(attention.out_proj.weight, std=width**-0.5 * factor)


def init_clip_mlp(mlp: FeedForward, num_layers: int, factor: float) -> None:
    width = mlp.fc1.in_features
    init.normal_(mlp.fc1.weight, std=(2 * width) ** -0.5 * factor)
    init.normal_(mlp.fc2.weight, std=width**-0.5 * (2 * num_layers) ** -0.5 * factor)


def init_x_clip_text_weights(text_model: CLIPResidualTextModel, factor: float) -> None:
    """X-CLIP's (CLIP's) initialisation of the text model. The text model is a model of its own, initialised by its
    own `_init_weights` (every linear normal(initializer_range)) before its parent's runs this over it."""
    init.normal_(text_model.token_embedding.weight, std=0.02 * factor)
    init.normal_(text_model.position_embedding.weight, std=0.02 * factor)
    for block in text_model.layers:
        init_clip_attention(block.self_attn, len(text_model.layers), factor)
        init_clip_mlp(block.mlp, len(text_model.layers), factor)


class VideoTransformerPreTrainedModel(HFAttentionPreTrainedModel):
    config: VideoTransformerConfig
    config_class = VideoTransformerConfig
    base_model_prefix = "video_model"
    main_input_name = "pixel_values"
    input_modalities = ("video",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["VideoTransformerEmbeddings", "CrossFrameAttentionLayer", "CLIPResidualAttentionBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {
        "hidden_states": CrossFrameAttentionLayer,
        "attentions": OutputRecorder(IntraFrameAttention, index=1, layer_name="self_attn"),
        "cross_frame_attentions": OutputRecorder(MultiHeadAttention, index=1, layer_name="message_attn"),
        "mit_attentions": OutputRecorder(MultiHeadAttention, index=1, layer_name="mit"),
    }

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """A deterministic batch of two clips that fits the config (transformers' convention for example inputs)."""
        config = self.config
        shape = (2, config.num_frames, config.num_channels, config.image_size, config.image_size)
        return {"pixel_values": torch.randn(*shape, generator=torch.Generator().manual_seed(0))}

    def hub_tags(self) -> list[str]:
        return ["video", "x-clip", "cross-frame-attention"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # linear, conv and layer norm
        config = self.config
        init_x_clip_weights(
            module,
            config.initializer_factor,
            config.num_hidden_layers,
            config.initializer_range,
            config.position_embedding_std,
        )
        if isinstance(module, VideoTransformerModel) and module.visual_projection is not None:
            init.normal_(module.visual_projection.weight, std=config.hidden_size**-0.5 * config.initializer_factor)


class VideoTransformerModel(VideoTransformerPreTrainedModel):
    """X-CLIP's video encoder with its projection and MIT: clips in, frame tokens and a video embedding out."""

    def __init__(self, config: VideoTransformerConfig):
        super().__init__(config)
        self.embeddings = VideoTransformerEmbeddings(config)
        self.pre_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(
            CrossFrameAttentionLayer(
                config.hidden_size,
                config.num_attention_heads,
                config.intermediate_size,
                hidden_act=config.hidden_act,
                layer_norm_eps=config.layer_norm_eps,
                attention_dropout=config.attention_dropout,
                drop_path_rate=config.drop_path_rate,
                cross_frame=config.temporal_modeling == "cross_frame",
                config=config,
            )
            for _ in range(config.num_hidden_layers)
        )
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.visual_projection = None
        if config.projection_dim is not None:
            self.visual_projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)
        self.mit = None
        if config.video_pooling == "mit":
            self.mit = MultiFrameIntegrationTransformer(
                config.embed_dim,
                config.mit_num_attention_heads,
                config.mit_intermediate_size,
                config.mit_num_hidden_layers,
                config.num_frames,
                hidden_act=config.hidden_act,
                layer_norm_eps=config.layer_norm_eps,
                attention_dropout=config.attention_dropout,
                config=config,
            )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VideoTransformerModelOutput:
        r"""
        pixel_values (`torch.Tensor` of shape `(batch_size, num_frames, num_channels, height, width)`):
            Clips, e.g. from `VideoMAEImageProcessor`. Their frame count must be `config.num_frames`.
        interpolate_pos_encoding (`bool`, *optional*):
            Run on frames of another size than `config.image_size`, or clips of another length than
            `config.num_frames`, by interpolating the spatial and temporal position embeddings.
        """
        kwargs = resolve_forward_kwargs(self, kwargs)
        # CFA and MIT maps are recorded whenever attention maps are asked for: one switch for all three attentions
        output_attentions = bool(kwargs.get("output_attentions"))
        recorded = {f"output_{name}": output_attentions for name in ("cross_frame_attentions", "mit_attentions")}
        return self._encode(pixel_values, bool(interpolate_pos_encoding), **recorded, **kwargs)

    @capture_outputs(tie_last_hidden_states=False)
    def _encode(self, pixel_values, interpolate_pos_encoding: bool, **kwargs) -> VideoTransformerModelOutput:
        kwargs.pop("output_cross_frame_attentions", None)
        kwargs.pop("output_mit_attentions", None)
        check_video(pixel_values, self.config)
        num_frames = pixel_values.shape[1]
        if num_frames != self.config.num_frames and not interpolate_pos_encoding:
            raise ValueError(
                f"The clips have {num_frames} frames but the model was built for num_frames={self.config.num_frames}. "
                "Sample that many frames, or pass interpolate_pos_encoding=True to interpolate the temporal position "
                "embeddings (a batch is never split into shorter clips)."
            )
        frames = rearrange(pixel_values, "b f c h w -> (b f) c h w").to(self.embeddings.patch_embedding.weight.dtype)
        tokens = self.pre_layernorm(self.embeddings(frames, interpolate_pos_encoding))
        hidden_states = rearrange(tokens, "(b f) t d -> b f t d", f=num_frames)
        for layer in self.layers:
            hidden_states = layer(hidden_states, **kwargs)
        frame_embeds = self.post_layernorm(hidden_states[:, :, 0])
        if self.visual_projection is not None:
            frame_embeds = self.visual_projection(frame_embeds)
        if self.mit is None:
            video_embeds = frame_embeds.mean(dim=1)
        else:
            _, video_embeds = self.mit(frame_embeds, interpolate_pos_encoding, **kwargs)
        return VideoTransformerModelOutput(
            last_hidden_state=hidden_states, pooler_output=video_embeds, frame_embeds=frame_embeds
        )


class VideoTransformerForVideoClassification(VideoTransformerPreTrainedModel):
    """A linear classifier on the video embedding; the loss follows `config.problem_type`.

    `from_pretrained` also loads a saved `VideoTextTransformerModel` (e.g. a converted X-CLIP checkpoint): its video
    encoder, projection and MIT are kept, the text side is left out and the classifier is new.
    """

    def __init__(self, config: VideoTransformerConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.video_model = VideoTransformerModel(config)
        self.classifier = nn.Linear(config.embed_dim, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VideoClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, or float `(batch_size, num_labels)`, *optional*):
            Class indices (single-label), multi-hot targets (multi-label) or values (regression).
        """
        outputs = self.video_model(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return VideoClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            cross_frame_attentions=outputs.cross_frame_attentions,
            mit_attentions=outputs.mit_attentions,
        )


@dataclass
class VideoTextTransformerOutput(ModelOutput):
    r"""
    loss (`torch.Tensor` of shape `()`, returned with `labels` or `return_loss=True`):
        With `labels` (batch_size,): cross-entropy of every video's logits over the texts (X-CLIP's recipe for K class
        texts). With `return_loss=True` and no labels: CLIP's symmetric contrastive loss (video i matches text i).
    logits_per_video (`torch.Tensor` of shape `(batch_size, num_texts)`):
        Scaled cosine similarities of every video with every (prompted) text. 0 for a text with no real token.
    logits_per_text (`torch.Tensor` of shape `(num_texts, batch_size)`):
        The transpose of `logits_per_video`.
    video_embeds (`torch.Tensor` of shape `(batch_size, projection_dim)`):
        Normalised video embeddings.
    text_embeds (`torch.Tensor` of shape `(batch_size, num_texts, projection_dim)`):
        Normalised text embeddings, prompted with each video (zeros for a text with no real token).
    video_last_hidden_state (`torch.Tensor` of shape `(batch_size, num_frames, num_tokens, hidden_size)`):
        The video encoder's last layer. The full outputs of the towers (with attention maps) come from
        `get_video_features` and `get_text_features`.
    text_last_hidden_state (`torch.Tensor` of shape `(num_texts, length, text_hidden_size)`):
        The text tower's normed last layer.
    video_hidden_states, text_hidden_states (`tuple(torch.Tensor)`, returned with `output_hidden_states=True`):
        The hidden states of the two towers.
    video_attentions, cross_frame_attentions, mit_attentions (`tuple(torch.Tensor)`, returned with
    `output_attentions=True`):
        The video encoder's intra-frame, cross-frame and MIT maps, as in [`VideoTransformerModelOutput`]. The text
        tower's maps are per text, not per video: `get_text_features(..., output_attentions=True)` returns them.
    """

    loss: torch.Tensor | None = None
    logits_per_video: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    video_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    video_last_hidden_state: torch.Tensor | None = None
    text_last_hidden_state: torch.Tensor | None = None
    video_hidden_states: tuple[torch.Tensor, ...] | None = None
    text_hidden_states: tuple[torch.Tensor, ...] | None = None
    video_attentions: tuple[torch.Tensor, ...] | None = None
    cross_frame_attentions: tuple[torch.Tensor, ...] | None = None
    mit_attentions: tuple[torch.Tensor, ...] | None = None


class VideoTextTransformerPreTrainedModel(HFAttentionPreTrainedModel):
    config: VideoTextTransformerConfig
    config_class = VideoTextTransformerConfig
    base_model_prefix = "video_text"
    main_input_name = "input_ids"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["VideoTransformerEmbeddings", "CrossFrameAttentionLayer", "CLIPResidualAttentionBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    # recorded by the towers themselves (each base model captures its own); listed so the contract knows the maps
    _can_record_outputs = VideoTransformerPreTrainedModel._can_record_outputs

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """Two clips and three texts (one padded) that fit the config."""
        video = self.config.video_config
        shape = (2, video.num_frames, video.num_channels, video.image_size, video.image_size)
        generator = torch.Generator().manual_seed(0)
        text = self.config.text_config
        input_ids = torch.randint(3, text.vocab_size, (3, 5), generator=generator)
        attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
        input_ids = input_ids.masked_fill(attention_mask == 0, text.pad_token_id or 0)
        return {
            "pixel_values": torch.randn(*shape, generator=generator),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
        }

    def hub_tags(self) -> list[str]:
        return ["video", "x-clip", "cross-frame-attention", "video-text"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        config, video = self.config, self.config.video_config
        init_x_clip_weights(
            module,
            config.initializer_factor,
            video.num_hidden_layers,
            video.initializer_range,
            video.position_embedding_std,
        )
        if isinstance(module, VideoTransformerModel) and module.visual_projection is not None:
            init.normal_(module.visual_projection.weight, std=video.hidden_size**-0.5 * config.initializer_factor)
        elif isinstance(module, VideoTextTransformerModel):
            init_x_clip_text_weights(module.text_model, config.initializer_factor)
            text_width = config.text_config.hidden_size
            init.normal_(module.text_projection.weight, std=text_width**-0.5 * config.initializer_factor)
            init.normal_(module.prompts_visual_projection, std=video.hidden_size**-0.5 * config.initializer_factor)
            init.constant_(module.logit_scale, config.logit_scale_init_value)


class VideoTextTransformerModel(VideoTextTransformerPreTrainedModel):
    """The X-CLIP video-text model: videos against (video-prompted) texts by scaled cosine similarity."""

    def __init__(self, config: VideoTextTransformerConfig):
        super().__init__(config)
        video, embed_dim = config.video_config, config.projection_dim
        self.video_model = VideoTransformerModel(video)
        self.text_model = CLIPResidualTextModel(config.text_config)
        self.text_projection = nn.Linear(config.text_config.hidden_size, embed_dim, bias=False)
        self.prompts_visual_layernorm = nn.LayerNorm(video.hidden_size, eps=video.layer_norm_eps)
        self.prompts_visual_projection = nn.Parameter(torch.empty(video.hidden_size, embed_dim))
        self.prompts_generator = VideoSpecificPromptGenerator(
            embed_dim,
            config.prompt_num_attention_heads,
            config.prompt_layers,
            config.prompt_alpha,
            hidden_act=config.prompt_hidden_act,
            layer_norm_eps=config.text_config.layer_norm_eps,
            visual_layer_norm_eps=video.layer_norm_eps,
            attention_dropout=config.prompt_attention_dropout,
            projection_dropout=config.prompt_projection_dropout,
            config=config,
        )
        self.logit_scale = nn.Parameter(torch.empty(()))
        self.post_init()

    @can_return_tuple
    def get_video_features(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VideoTransformerModelOutput:
        """The video tower's output; `pooler_output` is the (unnormalised) video embedding (batch, projection_dim)."""
        return self.video_model(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """The text model's output; `pooler_output` is the projected text embedding (num_texts, projection_dim),
        before the video-specific prompt (which needs a video)."""
        kwargs = resolve_forward_kwargs(self, kwargs)
        outputs = self.text_model(input_ids, attention_mask, position_ids, **kwargs)
        outputs.pooler_output = self.text_projection(outputs.pooler_output)
        return outputs

    def visual_prompt_tokens(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """The patch tokens the prompt generator attends to: normed, projected, averaged over frames."""
        patches = self.prompts_visual_layernorm(last_hidden_state[:, :, 1:])
        return torch.matmul(patches, self.prompts_visual_projection).mean(dim=1)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VideoTextTransformerOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(num_texts, length)`):
            The K texts every video is compared with (e.g. one per class), from X-CLIP's CLIP tokenizer.
        pixel_values (`torch.Tensor` of shape `(batch_size, num_frames, num_channels, height, width)`):
            The clips.
        attention_mask (`torch.Tensor` of shape `(num_texts, length)`, *optional*):
            1 for real tokens, 0 for padding. A text with no real token gets logits 0.
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            The index of the matching text of every video, in [0, num_texts) (or -100 to ignore the video).
        return_loss (`bool`, *optional*):
            Without `labels`: CLIP's symmetric loss, which needs as many texts as videos.
        """
        kwargs = resolve_forward_kwargs(self, kwargs)
        video_outputs = self.video_model(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        # the text maps are (num_texts, ...), not per video: get_text_features returns them
        text_kwargs = {**kwargs, "output_attentions": False}
        text_outputs = self.get_text_features(input_ids, attention_mask, position_ids=position_ids, **text_kwargs)
        batch_size = video_outputs.pooler_output.shape[0]
        texts = text_outputs.pooler_output.expand(batch_size, -1, -1)
        visual = self.visual_prompt_tokens(video_outputs.last_hidden_state)
        texts = texts + self.prompts_generator(texts, visual)
        video_embeds = nn.functional.normalize(video_outputs.pooler_output, dim=-1)
        text_embeds = nn.functional.normalize(texts, dim=-1)
        if attention_mask is not None:  # a text with no real token matches nothing
            has_tokens = (attention_mask != 0).any(dim=-1)
            text_embeds = torch.where(has_tokens[None, :, None], text_embeds, 0.0)
        logits_per_video = torch.matmul(self.logit_scale.exp() * text_embeds, video_embeds[:, :, None])[..., 0]
        loss = self.video_text_loss(logits_per_video, labels, return_loss)
        return VideoTextTransformerOutput(
            loss=loss,
            logits_per_video=logits_per_video,
            logits_per_text=logits_per_video.T,
            video_embeds=video_embeds,
            text_embeds=text_embeds,
            video_last_hidden_state=video_outputs.last_hidden_state,
            text_last_hidden_state=text_outputs.last_hidden_state,
            video_hidden_states=video_outputs.hidden_states,
            text_hidden_states=text_outputs.hidden_states,
            video_attentions=video_outputs.attentions,
            cross_frame_attentions=video_outputs.cross_frame_attentions,
            mit_attentions=video_outputs.mit_attentions,
        )

    @staticmethod
    def video_text_loss(logits_per_video: torch.Tensor, labels: torch.Tensor | None, return_loss: bool | None):
        batch_size, num_texts = logits_per_video.shape
        if labels is not None:
            if labels.shape != (batch_size,) or labels.is_floating_point():
                raise ValueError(
                    f"labels must be integer indices of shape (batch_size,) = ({batch_size},), one matching text per "
                    f"video, got {labels.dtype} of shape {tuple(labels.shape)}."
                )
            ignored = labels == -100
            if bool(((labels < 0) | (labels >= num_texts))[~ignored].any()):
                raise ValueError(f"labels must index the {num_texts} texts (0..{num_texts - 1}) or be -100.")
            if bool(ignored.all()):
                return logits_per_video.sum() * 0.0
            return nn.functional.cross_entropy(logits_per_video.float(), labels.long(), ignore_index=-100)
        if not return_loss:
            return None
        if batch_size != num_texts:
            raise ValueError(
                f"return_loss=True without labels is CLIP's symmetric loss, where video i matches text i: it needs as "
                f"many texts as videos, got {num_texts} texts for {batch_size} videos. To score videos against K "
                "class texts, pass labels (batch_size,) with each video's text index."
            )
        return contrastive_loss(logits_per_video, "video", "text")


__all__ = [
    "CrossFrameAttentionLayer",
    "IntraFrameAttention",
    "MultiFrameIntegrationTransformer",
    "VideoSpecificPromptGenerator",
    "VideoTextTransformerModel",
    "VideoTextTransformerPreTrainedModel",
    "VideoTransformerForVideoClassification",
    "VideoTransformerModel",
    "VideoTransformerPreTrainedModel",
]
