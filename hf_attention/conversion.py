"""Weights from transformers' own models into ours: the one home of every weight-name map.

`from_transformers(model)` looks the model's class up in `CONVERTERS` and returns our equivalent with the same
weights. Each family adds one converter: a config translation plus a state-dict translation.

    >>> from transformers import ViTForImageClassification
    >>> from hf_attention import from_transformers
    >>> ours = from_transformers(ViTForImageClassification.from_pretrained("google/vit-base-patch16-224"))
"""

import logging
import re
from collections.abc import Callable

import torch
from transformers import PreTrainedModel, ViTForImageClassification, ViTModel
from transformers.models.clip.configuration_clip import CLIPTextConfig
from transformers.models.clip.modeling_clip import CLIPEncoder, CLIPEncoderLayer
from transformers.models.detr.modeling_detr import DetrDecoderLayer, DetrEncoderLayer, DetrModel

from .configuration_clip_residual import CLIPResidualTransformerConfig
from .configuration_detr_transformer import DETRTransformerConfig
from .configuration_vit import VisionTransformerConfig
from .modeling_clip_residual import CLIPResidualAttentionBlock, CLIPResidualTransformerModel
from .modeling_detr_transformer import DETRTransformerDecoderLayer, DETRTransformerEncoderLayer, DETRTransformerModel
from .modeling_vit import VisionTransformerForImageClassification, VisionTransformerModel

logger = logging.getLogger(__name__)

# transformers' ViT name -> ours, applied in order; q/k/v projections are fused separately
VIT_RENAMES = [(r"\.attention\.o_proj\.", ".attention.out_proj.")]
VIT_FUSED_QKV = (r"(.*\.attention)\.(q|k|v)_proj\.(weight|bias)$", "{prefix}.qkv_proj.{kind}")
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

# transformers' CLIPEncoder(Layer) name -> our CLIPResidualTransformerModel / CLIPResidualAttentionBlock
CLIP_RENAMES = [
    (r"^layers\.", "resblocks."),
    (r"(^|\.)layer_norm1\.", r"\1ln_1."),
    (r"(^|\.)layer_norm2\.", r"\1ln_2."),
    (r"(^|\.)self_attn\.", r"\1attn."),
    (r"(^|\.)mlp\.fc1\.", r"\1mlp.c_fc."),
    (r"(^|\.)mlp\.fc2\.", r"\1mlp.c_proj."),
]
CLIP_FUSED_QKV = (r"^(.*?attn)\.(q|k|v)_proj\.(weight|bias)$", "{prefix}.qkv_proj.{kind}")

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


def rename_state_dict(
    state_dict: dict[str, torch.Tensor],
    renames: list[tuple[str, str]],
    fused: tuple[str, str] | None = None,
    dropped: list[str] = (),
) -> dict[str, torch.Tensor]:
    """Apply regex renames, drop unwanted keys, and concatenate q/k/v pieces matched by `fused` in q, k, v order."""
    converted, pieces = {}, {}
    for name, tensor in state_dict.items():
        if any(re.search(pattern, name) for pattern in dropped):
            continue
        for pattern, replacement in renames:
            name = re.sub(pattern, replacement, name)
        match = re.match(fused[0], name) if fused else None
        if match:
            prefix, which, kind = match.groups()
            pieces.setdefault(fused[1].format(prefix=prefix, kind=kind), {})[which] = tensor
            continue
        converted[name] = tensor
    for name, parts in pieces.items():
        if sorted(parts) != ["k", "q", "v"]:
            raise ValueError(f"Cannot fuse {name}: found only the {sorted(parts)} projections, expected q, k and v.")
        converted[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return converted


def _vit_config(source_config, **overrides) -> VisionTransformerConfig:
    fields = {name: getattr(source_config, name) for name in VIT_CONFIG_FIELDS}
    labels = {"id2label": source_config.id2label, "label2id": source_config.label2id}
    return VisionTransformerConfig(pooling="cls", **fields, **labels, **overrides)


def convert_vit(model: ViTModel | ViTForImageClassification) -> VisionTransformerModel:
    if isinstance(model, ViTModel) and model.pooler is not None:
        logger.warning(
            "transformers' ViTModel pooler (dense + tanh on the class token) has no counterpart here and is "
            "dropped; our pooler_output is the normalised class token. last_hidden_state is unchanged."
        )
    config = _vit_config(model.config)
    target_class = VisionTransformerForImageClassification
    if isinstance(model, ViTModel):
        target_class = VisionTransformerModel
    state_dict = rename_state_dict(model.state_dict(), VIT_RENAMES, VIT_FUSED_QKV, VIT_DROPPED)
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
        is_causal=isinstance(source_config, CLIPTextConfig),
        initializer_range=source_config.initializer_range,
    )


def convert_clip_encoder(encoder: CLIPEncoder) -> CLIPResidualTransformerModel:
    config = _clip_config(encoder.config)
    state_dict = rename_state_dict(encoder.state_dict(), CLIP_RENAMES, CLIP_FUSED_QKV)
    dtype = next(encoder.parameters()).dtype
    return _load_converted(CLIPResidualTransformerModel, config, state_dict, dtype)


def convert_clip_encoder_layer(layer: CLIPEncoderLayer) -> CLIPResidualAttentionBlock:
    config = _clip_config(layer.self_attn.config)
    block = CLIPResidualAttentionBlock(
        config.hidden_size,
        config.num_attention_heads,
        config.intermediate_size,
        hidden_act=config.hidden_act,
        layer_norm_eps=config.layer_norm_eps,
        attention_dropout=config.attention_dropout,
        is_causal=config.is_causal,
        attn_implementation=layer.self_attn.config._attn_implementation or "sdpa",
    )
    state_dict = rename_state_dict(layer.state_dict(), CLIP_RENAMES, CLIP_FUSED_QKV)
    return _load_into(block, state_dict, next(layer.parameters()).dtype)


def convert_detr_layer(layer: DetrEncoderLayer | DetrDecoderLayer):
    """A DETR layer (post-norm, as transformers' DETR is) with the same weights."""
    config, is_decoder = layer.self_attn.config, isinstance(layer, DetrDecoderLayer)
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


def convert_detr_model(model: DetrModel) -> DETRTransformerModel:
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


def _load_converted(target_class, config, state_dict, dtype) -> PreTrainedModel:
    return _load_into(target_class(config), state_dict, dtype)


def _load_into(converted: torch.nn.Module, state_dict, dtype) -> torch.nn.Module:
    missing, unexpected = converted.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"Converting into {type(converted).__name__} left weights unmatched: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}. The conversion table in hf_attention/conversion.py needs updating."
        )
    return converted.to(dtype).eval()


CONVERTERS: dict[type, Callable[[torch.nn.Module], torch.nn.Module]] = {
    ViTModel: convert_vit,
    ViTForImageClassification: convert_vit,
    CLIPEncoder: convert_clip_encoder,
    CLIPEncoderLayer: convert_clip_encoder_layer,
    DetrEncoderLayer: convert_detr_layer,
    DetrDecoderLayer: convert_detr_layer,
    DetrModel: convert_detr_model,
}


def from_transformers(model: torch.nn.Module) -> torch.nn.Module:
    """Our equivalent of a transformers model, with the same weights (outputs agree within 1e-5 in fp32).

    Supported: `ViTModel` -> `VisionTransformerModel`, `ViTForImageClassification` ->
    `VisionTransformerForImageClassification`, `CLIPEncoder` -> `CLIPResidualTransformerModel` (causal when
    it is a text encoder), and single layers into our layer modules: `CLIPEncoderLayer` ->
    `CLIPResidualAttentionBlock`, `DetrEncoderLayer` / `DetrDecoderLayer` -> `DETRTransformerEncoderLayer` /
    `DETRTransformerDecoderLayer`, and `DetrModel` -> `DETRTransformerModel` (its transformer, without the CNN
    backbone).
    """
    converter = CONVERTERS.get(type(model))
    if converter is None:
        supported = ", ".join(sorted(cls.__name__ for cls in CONVERTERS))
        raise TypeError(f"No conversion for {type(model).__name__}; supported: {supported}.")
    return converter(model)
