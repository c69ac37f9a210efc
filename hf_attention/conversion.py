"""Weights from transformers' own models into ours: the one home of every weight-name map.

`from_transformers(model)` looks the model's class up in `CONVERTERS` and returns our equivalent with the same
weights. Each family adds one converter: a config translation plus a state-dict translation.

    >>> from transformers import ViTForImageClassification
    >>> from hf_attention import from_transformers
    >>> ours = from_transformers(ViTForImageClassification.from_pretrained("google/vit-base-patch16-224"))
"""

import contextlib
import logging
import math
import re
from collections.abc import Callable, Iterable
from contextvars import ContextVar

import torch
from transformers import PreTrainedModel
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import Chunk, WeightConverter, WeightRenaming

from .configuration_clip_residual import CLIPResidualTransformerConfig
from .configuration_clip_text import CLIPResidualTextConfig
from .configuration_detr_transformer import DETRTransformerConfig
from .configuration_image_text import VisionTextCrossAttentionConfig
from .configuration_video import VideoTextTransformerConfig, VideoTransformerConfig
from .configuration_vit import VisionTransformerConfig
from .modeling_clip_residual import CLIPResidualAttentionBlock, CLIPResidualTransformerModel
from .modeling_clip_text import CLIPResidualTextModel
from .modeling_detr_transformer import DETRTransformerDecoderLayer, DETRTransformerEncoderLayer, DETRTransformerModel
from .modeling_image_text import VisionTextCrossAttentionModel
from .modeling_video import VideoTextTransformerModel, VideoTransformerModel
from .modeling_vit import VisionTransformerForImageClassification, VisionTransformerModel
from .pretrained import HFAttentionPreTrainedModel

logger = logging.getLogger(__name__)

# transformers' ViT name -> ours, applied in order
VIT_RENAMES = [(r"\.attention\.o_proj\.", ".attention.out_proj.")]
VIT_DROPPED = [r"^(vit\.)?pooler\."]

# our config field <- transformers' ViTConfig field (same meaning, same name)
VIT_CONFIG_FIELDS = [
    "image_size",
    "patch_size",
    "num_channels",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "layer_norm_eps",
    "initializer_range",
    "qkv_bias",
]

# transformers' DetrModel / DetrEncoderLayer / DetrDecoderLayer name -> our DETRTransformerModel / layers
DETR_RENAMES = [
    (r"\.o_proj\.", ".out_proj."),
    (r"(^|\.)self_attn_layer_norm\.", r"\1self_attn_norm."),
    (r"(^|\.)encoder_attn\.", r"\1cross_attn."),
    (r"(^|\.)encoder_attn_layer_norm\.", r"\1cross_attn_norm."),
    (r"(^|\.)final_layer_norm\.", r"\1mlp_norm."),
    (r"^decoder\.layernorm\.", "decoder.norm."),
]
DETR_DROPPED = [r"^backbone\."]

# transformers' CLIPTextModel name -> our CLIPResidualTextModel (its layers keep CLIP's names)
CLIP_TEXT_RENAMES = [(r"^(text_model\.)?(embeddings|encoder)\.", ""), (r"^text_model\.", "")]
# our CLIPResidualTextConfig field <- transformers' CLIPTextConfig / XCLIPTextConfig field (same meaning, same name)
CLIP_TEXT_CONFIG_FIELDS = [
    "vocab_size",
    "max_position_embeddings",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "layer_norm_eps",
    "attention_dropout",
    "initializer_range",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
]

# transformers' CLIPVisionModel name (CLIPModel's under `vision_model.`) -> our VisionTransformerModel: CLIP's vision
# tower is a pre-norm ViT with a norm on the embeddings, `pre_layrnorm`, which ours holds as `pre_layernorm`
CLIP_VISION_RENAMES = [
    (r"^(?:vision_model\.)?embeddings\.class_embedding$", "embeddings.cls_token"),
    (r"^(?:vision_model\.)?embeddings\.patch_embedding\.", "embeddings.patch_embeddings.projection."),
    (r"^(?:vision_model\.)?embeddings\.position_embedding\.weight$", "embeddings.position_embeddings"),
    (r"^(?:vision_model\.)?pre_layrnorm\.", "pre_layernorm."),
    (r"^(?:vision_model\.)?post_layernorm\.", "layernorm."),
    (r"^(?:vision_model\.)?encoder\.layers\.(\d+)\.layer_norm1\.", r"layers.\1.layernorm_before."),
    (r"^(?:vision_model\.)?encoder\.layers\.(\d+)\.self_attn\.", r"layers.\1.attention."),
    (r"^(?:vision_model\.)?encoder\.layers\.(\d+)\.layer_norm2\.", r"layers.\1.layernorm_after."),
    (r"^(?:vision_model\.)?encoder\.layers\.", "layers."),
]
# our VisionTransformerConfig field <- transformers' CLIPVisionConfig field (same meaning, same name)
CLIP_VISION_CONFIG_FIELDS = [
    "image_size",
    "patch_size",
    "num_channels",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "layer_norm_eps",
    "initializer_range",
]
# transformers' CLIPModel name -> our VisionTextCrossAttentionModel: the towers under the same prefixes, the projections
# and the logit scale under the same names
CLIP_RENAMES = [
    *[(pattern, "vision_model." + replacement) for pattern, replacement in CLIP_VISION_RENAMES],
    (r"^text_model\.(embeddings|encoder)\.", "text_model."),
]
# what our image-text model has and CLIP has not: the ITM fusion, initialised afresh
CLIP_NEW_WEIGHTS = [r"^fusion\."]

# transformers' XCLIPVisionModel name -> our VideoTransformerModel (its layers keep X-CLIP's names)
XCLIP_VISION_RENAMES = [
    (r"^(video_model\.)?encoder\.layers\.", r"\1layers."),
    (r"(^|\.)embeddings\.position_embedding\.weight$", r"\1embeddings.position_embedding"),
]
# transformers' XCLIPModel name -> our VideoTextTransformerModel
XCLIP_RENAMES = [
    (r"^vision_model\.", "video_model."),
    (r"^visual_projection\.", "video_model.visual_projection."),
    (r"^mit\.encoder\.layers\.", "video_model.mit.layers."),
    (r"^mit\.position_embedding$", "video_model.mit.position_embedding"),
    (r"^text_model\.embeddings\.", "text_model."),
    (r"^text_model\.encoder\.layers\.", "text_model.layers."),
    (r"^prompts_generator\.decoder\.(\d+)\.mlp\.0\.", r"prompts_generator.layers.\1.mlp.fc1."),
    (r"^prompts_generator\.decoder\.(\d+)\.mlp\.3\.", r"prompts_generator.layers.\1.mlp.fc2."),
    (r"^prompts_generator\.decoder\.", "prompts_generator.layers."),
    (r"\.cross_attn\.proj\.", ".cross_attn.out_proj."),
    *XCLIP_VISION_RENAMES,
]
# our VideoTransformerConfig field <- transformers' XCLIPVisionConfig field (same meaning, same name)
XCLIP_VISION_CONFIG_FIELDS = [
    "image_size",
    "patch_size",
    "num_channels",
    "num_frames",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "layer_norm_eps",
    "attention_dropout",
    "drop_path_rate",
    "initializer_range",
    "initializer_factor",
    "mit_intermediate_size",
    "mit_num_hidden_layers",
    "mit_num_attention_heads",
]
# our VideoTextTransformerConfig field <- transformers' XCLIPConfig field
XCLIP_CONFIG_FIELDS = [
    "prompt_layers",
    "prompt_alpha",
    "prompt_hidden_act",
    "prompt_num_attention_heads",
    "prompt_attention_dropout",
    "prompt_projection_dropout",
    "logit_scale_init_value",
    "initializer_factor",
]


def rename_state_dict(
    state_dict: dict[str, torch.Tensor], renames: list[tuple[str, str]], dropped: list[str] = ()
) -> dict[str, torch.Tensor]:
    """Apply regex renames in order and drop the keys `dropped` matches."""
    converted = {}
    for name, tensor in state_dict.items():
        if any(re.search(pattern, name) for pattern in dropped):
            continue
        for pattern, replacement in renames:
            name = re.sub(pattern, replacement, name)
        converted[name] = tensor
    return converted


def _vit_config(source_config, **overrides) -> VisionTransformerConfig:
    fields = {name: getattr(source_config, name) for name in VIT_CONFIG_FIELDS}
    labels = {"id2label": source_config.id2label, "label2id": source_config.label2id}
    return VisionTransformerConfig(pooling="cls", **fields, **labels, **overrides)


def convert_vit(model: PreTrainedModel) -> VisionTransformerModel:
    """transformers' `ViTModel` or `ViTForImageClassification`."""
    is_base_model = type(model).__name__ == "ViTModel"
    if is_base_model and model.pooler is not None:
        logger.warning(
            "transformers' ViTModel pooler (dense + tanh on the class token) has no counterpart here and is "
            "dropped; our pooler_output is the normalised class token. last_hidden_state is unchanged."
        )
    config = _vit_config(model.config)
    target_class = VisionTransformerModel if is_base_model else VisionTransformerForImageClassification
    state_dict = rename_state_dict(model.state_dict(), VIT_RENAMES, VIT_DROPPED)
    return _load_converted(target_class, config, state_dict, model.dtype)


def _clip_config(source_config) -> CLIPResidualTransformerConfig:
    """CLIP's text tower runs its encoder causally (the mask comes from outside the encoder); the vision tower not."""
    return CLIPResidualTransformerConfig(
        hidden_size=source_config.hidden_size,
        num_hidden_layers=source_config.num_hidden_layers,
        num_attention_heads=source_config.num_attention_heads,
        intermediate_size=source_config.intermediate_size,
        hidden_act=source_config.hidden_act,
        layer_norm_eps=source_config.layer_norm_eps,
        attention_dropout=source_config.attention_dropout,
        is_causal=type(source_config).__name__ in ("CLIPTextConfig", "XCLIPTextConfig"),
        initializer_range=source_config.initializer_range,
    )


def _clip_text_config(source_config) -> CLIPResidualTextConfig:
    """transformers' CLIP and X-CLIP text models pool at the end-of-text token: the highest id when `eos_token_id` is
    2 (their configs before transformers' PR #24773), else the first `eos_token_id`. Ours finds it as the highest
    real id, the same token where the end-of-text token is the last of the vocabulary, as in every CLIP release."""
    eos_token_id, vocab_size = source_config.eos_token_id, source_config.vocab_size
    if eos_token_id not in (2, vocab_size - 1):
        raise ValueError(
            f"This text model pools at the first eos_token_id={eos_token_id}, which is not the highest id of its "
            f"vocabulary ({vocab_size - 1}); ours pools at the highest id, so the outputs would differ."
        )
    fields = {name: getattr(source_config, name) for name in CLIP_TEXT_CONFIG_FIELDS}
    return CLIPResidualTextConfig(is_causal=True, pooling="end_of_text", **fields)


def convert_clip_text(model: PreTrainedModel) -> CLIPResidualTextModel:
    """transformers' `CLIPTextModel`."""
    config = _clip_text_config(model.config)
    state_dict = rename_state_dict(model.state_dict(), CLIP_TEXT_RENAMES, dropped=[r"position_ids$"])
    return _load_converted(CLIPResidualTextModel, config, state_dict, model.dtype)


def _clip_vision_config(source_config) -> VisionTransformerConfig:
    fields = {name: getattr(source_config, name) for name in CLIP_VISION_CONFIG_FIELDS}
    return VisionTransformerConfig(
        **fields,
        attention_probs_dropout_prob=source_config.attention_dropout,
        hidden_dropout_prob=0.0,
        qkv_bias=True,
        pre_layernorm=True,
        pooling="cls",
    )


def _clip_vision_tensors(state_dict: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """CLIP's vision tensors (already renamed, under `prefix`) in our ViT's shapes: the class and position embeddings
    gain the leading batch axis ours broadcasts, and the patch projection, which CLIP has without a bias, gets a zero
    bias (the same map)."""
    embeddings = prefix + "embeddings."
    converted = dict(state_dict)
    converted[embeddings + "cls_token"] = state_dict[embeddings + "cls_token"].reshape(1, 1, -1)
    converted[embeddings + "position_embeddings"] = state_dict[embeddings + "position_embeddings"][None]
    weight = state_dict[embeddings + "patch_embeddings.projection.weight"]
    converted[embeddings + "patch_embeddings.projection.bias"] = weight.new_zeros(weight.shape[0])
    return converted


def _warn_clip_last_hidden_state() -> None:
    logger.warning(
        "CLIP's vision last_hidden_state is the encoder output before post_layernorm; ours (as transformers' ViT) "
        "applies that norm to every token. pooler_output, the embeddings and the logits are unchanged."
    )


def convert_clip_vision(model: PreTrainedModel) -> VisionTransformerModel:
    """transformers' `CLIPVisionModel`: CLIP's vision tower as our ViT with `pre_layernorm=True`."""
    _warn_clip_last_hidden_state()
    state_dict = rename_state_dict(model.state_dict(), CLIP_VISION_RENAMES, dropped=[r"position_ids$"])
    return _load_converted(
        VisionTransformerModel, _clip_vision_config(model.config), _clip_vision_tensors(state_dict), model.dtype
    )


def convert_clip(model: PreTrainedModel) -> VisionTextCrossAttentionModel:
    """transformers' `CLIPModel`: both towers, both projections and the logit scale, in our image-text model.

    CLIP has no image-text matching (ITM) fusion, which our model adds: it is initialised afresh (one layer), and
    `rerank_top_k=0` so that `rank` orders by the contrastive scores alone, as CLIP does, until the ITM is trained.
    """
    source = model.config
    logger.warning(
        "CLIPModel has no image-text matching fusion: the converted model's fusion and ITM head are new and untrained "
        "(itm_logits mean nothing until it is fine-tuned); rank() orders by CLIP's contrastive scores alone "
        "(rerank_top_k=0)."
    )
    _warn_clip_last_hidden_state()
    text_config = _clip_text_config(source.text_config)
    logit_scale = float(model.logit_scale.detach())
    config = VisionTextCrossAttentionConfig(
        vision_config=_clip_vision_config(source.vision_config).to_dict(),
        text_config=text_config.to_dict(),
        projection_dim=source.projection_dim,
        logit_scale_init_value=source.logit_scale_init_value,
        # CLIP does not clamp its logit scale when it scores, ours does: never below the converted value
        max_logit_scale=max(math.log(100.0), logit_scale),
        num_fusion_layers=1,
        num_fusion_heads=text_config.num_attention_heads,
        fusion_intermediate_size=text_config.intermediate_size,
        rerank_top_k=0,
    )
    state_dict = rename_state_dict(model.state_dict(), CLIP_RENAMES, dropped=[r"position_ids$"])
    state_dict = _clip_vision_tensors(state_dict, prefix="vision_model.")
    return _load_into(VisionTextCrossAttentionModel(config), state_dict, model.dtype, new_weights=CLIP_NEW_WEIGHTS)


def convert_clip_encoder(encoder: torch.nn.Module) -> CLIPResidualTransformerModel:
    """transformers' `CLIPEncoder`."""
    config = _clip_config(encoder.config)
    dtype = next(encoder.parameters()).dtype  # transformers' CLIP names are ours
    return _load_converted(CLIPResidualTransformerModel, config, encoder.state_dict(), dtype)


def convert_clip_encoder_layer(layer: torch.nn.Module) -> CLIPResidualAttentionBlock:
    """transformers' `CLIPEncoderLayer`."""
    config = _clip_config(layer.self_attn.config)
    config._attn_implementation = layer.self_attn.config._attn_implementation or "sdpa"
    block = CLIPResidualAttentionBlock.from_config(config)
    return _load_into(block, layer.state_dict(), next(layer.parameters()).dtype)


def convert_detr_layer(layer: torch.nn.Module):
    """transformers' `DetrEncoderLayer` or `DetrDecoderLayer`: our layer (post-norm, as DETR's) with its weights."""
    config, is_decoder = layer.self_attn.config, type(layer).__name__ == "DetrDecoderLayer"
    target_class = DETRTransformerDecoderLayer if is_decoder else DETRTransformerEncoderLayer
    converted = target_class(
        config.d_model,
        config.decoder_attention_heads if is_decoder else config.encoder_attention_heads,
        config.decoder_ffn_dim if is_decoder else config.encoder_ffn_dim,
        dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        activation_dropout=config.activation_dropout,
        activation=config.activation_function,
        normalize_before=False,
        layer_norm_eps=layer.self_attn_layer_norm.eps,
        attn_implementation=config._attn_implementation or "sdpa",
    )
    state_dict = rename_state_dict(layer.state_dict(), DETR_RENAMES)
    return _load_into(converted, state_dict, next(layer.parameters()).dtype)


def convert_detr_model(model: PreTrainedModel) -> DETRTransformerModel:
    """DETR's transformer: input projection, encoder, decoder and object queries. The CNN backbone is not part of it:
    feed it `model.backbone(pixel_values, pixel_mask)[-1]`, the last feature map and its mask."""
    source = model.config
    if source.position_embedding_type != "sine":
        raise ValueError(
            "Only DETR's sine position embeddings convert, got "
            f"position_embedding_type={source.position_embedding_type!r}."
        )
    encoder_shape = (source.encoder_attention_heads, source.encoder_ffn_dim)
    if encoder_shape != (source.decoder_attention_heads, source.decoder_ffn_dim):
        raise ValueError(
            "DETRTransformerConfig has one head count and one feed-forward width for encoder and decoder; this DETR "
            f"has (heads, ffn) = {encoder_shape} in the encoder and "
            f"{(source.decoder_attention_heads, source.decoder_ffn_dim)} in the decoder."
        )
    logger.warning(
        "DetrModel's CNN backbone is not converted: DETRTransformerModel takes the backbone's feature map and mask, "
        "model.backbone(pixel_values, pixel_mask)[-1]."
    )
    config = DETRTransformerConfig(
        num_channels=model.input_projection.in_channels,
        hidden_size=source.d_model,
        num_attention_heads=source.encoder_attention_heads,
        encoder_layers=source.encoder_layers,
        decoder_layers=source.decoder_layers,
        intermediate_size=source.encoder_ffn_dim,
        num_queries=source.num_queries,
        dropout=source.dropout,
        attention_dropout=source.attention_dropout,
        activation_dropout=source.activation_dropout,
        activation_function=source.activation_function,
        layer_norm_eps=model.decoder.layernorm.eps,
    )
    state_dict = rename_state_dict(model.state_dict(), DETR_RENAMES, dropped=DETR_DROPPED)
    return _load_converted(DETRTransformerModel, config, state_dict, model.dtype)


def _video_config(vision_config, **overrides) -> VideoTransformerConfig:
    fields = {name: getattr(vision_config, name) for name in XCLIP_VISION_CONFIG_FIELDS}
    for name in ("image_size", "patch_size"):
        if not isinstance(fields[name], int):
            raise ValueError(f"Only square X-CLIP frames and patches convert, got {name}={fields[name]!r}.")
    return VideoTransformerConfig(temporal_modeling="cross_frame", **fields, **overrides)


def convert_xclip_vision(model: PreTrainedModel) -> VideoTransformerModel:
    """X-CLIP's video encoder. `XCLIPVisionModel` holds no projection and no MIT (they live in `XCLIPModel`), so ours
    gets neither: `frame_embeds` are the post-normed class tokens and the video embedding is their mean."""
    logger.info(
        "XCLIPVisionModel has no visual projection and no MIT (XCLIPModel has them): the converted encoder pools "
        "frames with a plain mean. Convert the XCLIPModel to keep them."
    )
    config = _video_config(model.config, projection_dim=None, video_pooling="mean")
    state_dict = rename_state_dict(model.state_dict(), XCLIP_VISION_RENAMES)
    return _load_converted(VideoTransformerModel, config, state_dict, model.dtype)


def convert_xclip(model: PreTrainedModel) -> VideoTextTransformerModel:
    """The whole X-CLIP video-text model: video encoder, projection, MIT, text tower and prompt generator."""
    source, vision, text = model.config, model.config.vision_config, model.config.text_config
    if vision.mit_hidden_size != source.projection_dim:
        raise ValueError(
            f"X-CLIP's MIT runs on the projected frame embeddings, so mit_hidden_size ({vision.mit_hidden_size}) "
            f"must equal projection_dim ({source.projection_dim})."
        )
    config = VideoTextTransformerConfig(
        video_config=_video_config(vision, projection_dim=source.projection_dim, video_pooling="mit"),
        text_config=_clip_text_config(text),
        **{name: getattr(source, name) for name in XCLIP_CONFIG_FIELDS},
    )
    state_dict = rename_state_dict(model.state_dict(), XCLIP_RENAMES)
    return _load_converted(VideoTextTransformerModel, config, state_dict, model.dtype)


def _load_converted(target_class, config, state_dict, dtype) -> PreTrainedModel:
    return _load_into(target_class(config), state_dict, dtype)


def _load_into(converted: torch.nn.Module, state_dict, dtype, new_weights: Iterable[str] = ()) -> torch.nn.Module:
    """Load `state_dict` into `converted`; every weight must match, but for those `new_weights` (regexes) name, which
    the source model has no counterpart of and keep their initialisation."""
    missing, unexpected = converted.load_state_dict(state_dict, strict=False)
    missing = [name for name in missing if not any(re.search(pattern, name) for pattern in new_weights)]
    if missing or unexpected:
        raise ValueError(
            f"Converting into {type(converted).__name__} left weights unmatched: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}. The conversion table in hf_attention/conversion.py needs updating."
        )
    return converted.to(dtype).eval()


# --- checkpoints of earlier hf_attention releases, converted on load ---------------------------------------------

# Before the plain layout: one fused `qkv_proj` per self-attention, rows [q; k; v]; CLIP blocks under OpenAI's names
# (resblocks, ln_1, attn, ln_2, mlp.c_fc, mlp.c_proj) where transformers' CLIP names are now used.
LEGACY_RENAMES = [
    (r"resblocks\.", "layers."),
    (r"\.ln_1\.", ".layer_norm1."),
    (r"\.ln_2\.", ".layer_norm2."),
    (r"\.attn\.", ".self_attn."),
    (r"\.mlp\.c_fc\.", ".mlp.fc1."),
    (r"\.mlp\.c_proj\.", ".mlp.fc2."),
]
LEGACY_FUSED_PROJECTION = ("qkv_proj", ["q_proj", "k_proj", "v_proj"])
# Before the CLIP text model was shared, the video-text model's text tower held its blocks in a transformer of its own
# (text_model.transformer.resblocks.N, text_model.transformer.layers.N after LEGACY_RENAMES, which come first);
# anchored at the root of that one model type, so that no other key of any model is renamed
LEGACY_RENAMES_BY_MODEL_TYPE = {
    VideoTextTransformerConfig.model_type: [(r"^text_model\.transformer\.layers\.", "text_model.layers.")],
}


# True while one of this package's classes loads. transformers applies a model type's transforms to every class of
# that type, and reverses them when one saves: code an old folder ships (loaded with trust_remote_code) shares our
# model types and still holds `qkv_proj`, which the reversed split would rename on its save (to `qkqkv_proj`).
_LOADING_PACKAGE_MODEL: ContextVar[bool] = ContextVar("hf_attention_loading_package_model", default=False)


class _OnlyWhileAPackageModelLoads:
    """Mixed into a transformers weight transform: it matches no key unless `_LOADING_PACKAGE_MODEL` is set."""

    def _scoped_match(self, source_key: str):
        return super()._scoped_match(source_key) if _LOADING_PACKAGE_MODEL.get() else None


class LegacyRenaming(_OnlyWhileAPackageModelLoads, WeightRenaming):
    """A renaming from an earlier layout of ours."""


class LegacyConverter(_OnlyWhileAPackageModelLoads, WeightConverter):
    """A conversion (the fused `qkv_proj` split) from an earlier layout of ours."""


def legacy_weight_transforms(model_type: str | None = None) -> list[LegacyRenaming | LegacyConverter]:
    """transformers weight transforms from every earlier layout of `model_type`'s checkpoints to the current one."""
    renames = [*LEGACY_RENAMES, *LEGACY_RENAMES_BY_MODEL_TYPE.get(model_type, [])]  # in order: they chain
    renamings = [LegacyRenaming(source, target) for source, target in renames]
    fused, split = LEGACY_FUSED_PROJECTION
    return [*renamings, LegacyConverter(fused, split, operations=[Chunk(dim=0)])]


@contextlib.contextmanager
def loading_package_model():
    token = _LOADING_PACKAGE_MODEL.set(True)
    try:
        yield
    finally:
        _LOADING_PACKAGE_MODEL.reset(token)


def register_legacy_checkpoint_formats(model_types: Iterable[str]) -> None:
    """Let our classes' `from_pretrained` read checkpoints saved in earlier layouts, through transformers' conversion
    mapping; saving, and any other code of our model types, never sees the transforms (`_LOADING_PACKAGE_MODEL`)."""
    for model_type in model_types:
        register_checkpoint_conversion_mapping(model_type, legacy_weight_transforms(model_type), overwrite=True)
    HFAttentionPreTrainedModel._loading_context = staticmethod(loading_package_model)


# --- state dicts of the seeds' own libraries (they need torchvision, so only their weights pass through here) ---

# vit_pytorch.efficient.ViT over linformer.Linformer -> VisionTransformerForImageClassification(attention_type=
# "linformer", linformer_sharing="headwise", qkv_bias=False, pooling="cls")
VIT_PYTORCH_LINFORMER_RENAMES = [
    (r"^to_patch_embedding\.2\.bias$", "vit.embeddings.patch_embeddings.projection.bias"),
    (r"^cls_token$", "vit.embeddings.cls_token"),
    (r"^pos_embedding$", "vit.embeddings.position_embeddings"),
    (r"^transformer\.net\.layers\.(\d+)\.0\.norm\.", r"vit.layers.\1.layernorm_before."),
    (r"^transformer\.net\.layers\.(\d+)\.0\.fn\.to_(q|k|v)\.", r"vit.layers.\1.attention.\2_proj."),
    (r"^transformer\.net\.layers\.(\d+)\.0\.fn\.to_out\.", r"vit.layers.\1.attention.out_proj."),
    (r"^transformer\.net\.layers\.(\d+)\.0\.fn\.proj_k$", r"vit.layers.\1.attention.key_projection"),
    (r"^transformer\.net\.layers\.(\d+)\.0\.fn\.proj_v$", r"vit.layers.\1.attention.value_projection"),
    (r"^transformer\.net\.layers\.(\d+)\.1\.norm\.", r"vit.layers.\1.layernorm_after."),
    (r"^transformer\.net\.layers\.(\d+)\.1\.fn\.w(1|2)\.", r"vit.layers.\1.mlp.fc\2."),
    (r"^mlp_head\.0\.", "vit.layernorm."),
    (r"^mlp_head\.1\.", "classifier."),
]


def convert_vit_pytorch_linformer_state_dict(state_dict: dict[str, torch.Tensor], patch_size: int) -> dict:
    """Weights of the seed's efficient ViT (`vit_pytorch.efficient.ViT(transformer=linformer.Linformer(...))`,
    per-layer E and F shared by the heads) under our Linformer ViT's names.

    Its patch embedding is a linear map of (p1 p2 c)-ordered patches, ours a strided convolution: the same map
    with the weight reshaped. Recent vit-pytorch releases put a LayerNorm before and after that linear map, which our
    ViT (and the paper) do not have: such checkpoints are refused rather than converted into something else.
    """
    if "to_patch_embedding.1.weight" in state_dict or "to_patch_embedding.3.weight" in state_dict:
        raise ValueError(
            "This vit_pytorch ViT normalises its patches (LayerNorm in to_patch_embedding), which our ViT does not; "
            "only the plain linear patch embedding converts (replace to_patch_embedding[1] and [3] by nn.Identity)."
        )
    linear = state_dict["to_patch_embedding.2.weight"]
    converted = {"vit.embeddings.patch_embeddings.projection.weight": _patches_linear_to_conv(linear, patch_size)}
    for name, tensor in state_dict.items():
        if name == "to_patch_embedding.2.weight":
            continue
        new_name = name
        for pattern, replacement in VIT_PYTORCH_LINFORMER_RENAMES:
            new_name = re.sub(pattern, replacement, new_name)
        if new_name == name:
            raise ValueError(f"No counterpart for vit_pytorch weight {name!r} in our Linformer ViT.")
        # the package's (n, k) projection is shared by all heads: ours holds it as (1, n, k)
        converted[new_name] = tensor[None] if name.endswith(("proj_k", "proj_v")) else tensor
    return converted


def _patches_linear_to_conv(weight: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(dim, p1 * p2 * c) weight of a linear map on 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)' patches -> the
    (dim, c, p1, p2) weight of the equivalent stride-p convolution."""
    dim, patch_dim = weight.shape
    channels = patch_dim // (patch_size * patch_size)
    return weight.reshape(dim, patch_size, patch_size, channels).permute(0, 3, 1, 2).contiguous()


def convert_timm_squeeze_excite_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's `SqueezeExcite` (`SEModule`: 1x1 convolutions fc1, fc2) -> our `SqueezeExcitation` (linear fc1, fc2):
    a 1x1 convolution of a 1x1 map is the linear map with the same (out, in) weight."""
    if any(name.startswith("bn.") for name in state_dict):
        raise ValueError("timm SEModule with a norm_layer between fc1 and fc2 has no counterpart in SqueezeExcitation.")
    return {name: tensor.flatten(1) if name.endswith("weight") else tensor for name, tensor in state_dict.items()}


TIMM_NON_LOCAL_RENAMES = {"t": "theta", "p": "phi", "g": "g", "z": "output", "norm": "output_norm"}


def convert_timm_non_local_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's `NonLocalAttn` (t, p, g, z, norm) -> our embedded-Gaussian `NonLocalBlock` (theta, phi, g, output,
    output_norm). The maths agree for `use_scale=False`; timm's default `use_scale=True` also multiplies the scores
    by in_channels ** -0.5, which the paper (and our block) does not."""
    converted = {}
    for name, tensor in state_dict.items():
        module, _, rest = name.partition(".")
        if module not in TIMM_NON_LOCAL_RENAMES:
            raise ValueError(f"No counterpart for timm NonLocalAttn weight {name!r} in NonLocalBlock.")
        converted[f"{TIMM_NON_LOCAL_RENAMES[module]}.{rest}"] = tensor
    return converted


# transformers' class name -> its converter; by name, so that importing this file loads none of their model code
CONVERTERS: dict[str, Callable[[torch.nn.Module], torch.nn.Module]] = {
    "ViTModel": convert_vit,
    "ViTForImageClassification": convert_vit,
    "CLIPModel": convert_clip,
    "CLIPTextModel": convert_clip_text,
    "CLIPVisionModel": convert_clip_vision,
    "CLIPEncoder": convert_clip_encoder,
    "CLIPEncoderLayer": convert_clip_encoder_layer,
    "DetrEncoderLayer": convert_detr_layer,
    "DetrDecoderLayer": convert_detr_layer,
    "DetrModel": convert_detr_model,
    "XCLIPVisionModel": convert_xclip_vision,
    "XCLIPModel": convert_xclip,
}


def from_transformers(model: torch.nn.Module) -> torch.nn.Module:
    """Our equivalent of a transformers model, with the same weights (outputs agree within 1e-5 in fp32).

    Supported: `ViTModel` -> `VisionTransformerModel`, `ViTForImageClassification` ->
    `VisionTransformerForImageClassification`, `CLIPModel` -> `VisionTextCrossAttentionModel` (CLIP's towers,
    projections and logit scale; its ITM fusion, which CLIP has not, new), `CLIPVisionModel` -> `VisionTransformerModel`
    (with `pre_layernorm`), `CLIPTextModel` -> `CLIPResidualTextModel`, `CLIPEncoder` ->
    `CLIPResidualTransformerModel` (causal when it is a text encoder), and single layers into our layer modules:
    `CLIPEncoderLayer` -> `CLIPResidualAttentionBlock`, `DetrEncoderLayer` / `DetrDecoderLayer` ->
    `DETRTransformerEncoderLayer` / `DETRTransformerDecoderLayer`, `DetrModel` -> `DETRTransformerModel` (its
    transformer, without the CNN backbone), `XCLIPVisionModel` -> `VideoTransformerModel` (frames pooled by their
    mean: it has no MIT) and `XCLIPModel` -> `VideoTextTransformerModel`.
    """
    is_transformers_model = type(model).__module__.startswith("transformers.models.")
    converter = CONVERTERS.get(type(model).__name__) if is_transformers_model else None
    if converter is None:
        supported = ", ".join(sorted(CONVERTERS))
        raise TypeError(f"No conversion for {type(model).__name__}; supported: {supported}.")
    return converter(model)
