"""One picture per model: `draw_attention(model, pixel_values, image)` picks the right one; `hf-attention show` calls
it. The maps come from `attention_maps`, the drawing from `drawing`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..configuration_vit import as_pair
from .attention_maps import (
    RecordedBlock,
    VideoAttentionMaps,
    VisionTransformerMaps,
    attention_rollout,
    block_grids,
    criss_cross_dense,
    criss_cross_maps,
    feature_cell,
    image_text_word_maps,
    is_block,
    query_attention_map,
    record_feature_attention,
    video_attention_maps,
    vit_attention_maps,
)
from .drawing import (
    DPI,
    PANEL_SIZE,
    PanelGrid,
    affine_source_points,
    overlay_attention,
    plot_channel_weights,
    plot_criss_cross,
    plot_image_text,
    plot_query_attention,
    plot_residual_masks,
    plot_spatial_transformer,
    plot_video_attention,
    plot_vit_attention,
    save_figure,
)
from .visualize_glimpse import draw_glimpse_paths  # the glimpse model's picture, shared with its training report

# --- one picture per model -------------------------------------------------------------------------------------

DRAWABLE = (
    "VisionTransformer* (softmax attention)",
    "AttentionCNN* with attention_type non_local, dual_attention, criss_cross, squeeze_excitation, "
    "residual_attention or spatial_transformer",
    "VideoTransformer* and VideoTextTransformerModel (a video file)",
    "VisionTextCrossAttention* (an image and --text CAPTION)",
    "RecurrentAttention* (the glimpse model)",
)


def _stage_label(name: str) -> str:
    parts = name.split(".")
    return f"stage {parts[parts.index('stages') + 1]}" if "stages" in parts else name or "block"


def draw_vit(model, pixel_values: torch.Tensor, image: Image.Image, panel_size: int = PANEL_SIZE, dpi: int = DPI):
    """Rollout and last-layer per-head attention of a Vision Transformer for the first image of `pixel_values`."""
    config = model.config
    if config.attention_type != "softmax":
        raise ValueError(
            f"This ViT uses {config.attention_type} attention, whose maps run over {config.linformer_k} projected "
            "keys, not over the image patches; only softmax-attention ViTs can be drawn over the image."
        )
    with torch.no_grad():
        attentions = model(pixel_values=pixel_values, output_attentions=True).attentions
    patch_height, patch_width = as_pair(config.patch_size)
    grid_size = (pixel_values.shape[-2] // patch_height, pixel_values.shape[-1] // patch_width)
    maps = vit_attention_maps(attentions, grid_size, config.pooling)
    return plot_vit_attention(image, maps, panel_size, dpi)


def _feature_attention_maps(
    model, pixel_values: torch.Tensor, image_size: tuple[int, int], query_pixel: tuple[int, int]
):
    """(label, attention map of the query pixel) per non-local / DANet position block, from the model's own
    `attentions`."""
    with torch.no_grad():
        outputs, grids = block_grids(model, lambda: model(pixel_values=pixel_values, output_attentions=True))
    attentions = getattr(outputs, "attentions", None)
    if not attentions or len(attentions) != len(grids):
        raise ValueError(
            f"{type(model).__name__} returned {len(attentions or ())} attention maps for {len(grids)} attention blocks "
            "with output_attentions=True; this version of the model does not return its maps, so they cannot be drawn."
        )
    maps = []
    for (name, grid), attention in zip(grids, attentions, strict=True):
        num_keys = attention.shape[-1]
        key_grid = grid if num_keys == grid[0] * grid[1] else (-(-grid[0] // 2), -(-grid[1] // 2))  # sub-sampled keys
        cell = feature_cell(query_pixel, image_size, grid)
        maps.append((_stage_label(name), query_attention_map(attention, cell, grid, key_grid)))
    return maps


def _criss_cross_block_maps(model, pixel_values: torch.Tensor, query_pixel: tuple[int, int]):
    """(label, crosses per pass, reach) per criss-cross block, from the model's own `attentions` (one map per pass,
    (batch, 1, h * w, h + w): each position's weights over its column, then its row)."""
    with torch.no_grad():
        outputs, grids = block_grids(model, lambda: model(pixel_values=pixel_values, output_attentions=True))
    attentions = list(getattr(outputs, "attentions", None) or ())
    blocks = [module for module in model.modules() if is_block(module, "CrissCrossAttention")]
    expected = sum(block.recurrence for block in blocks)
    if len(attentions) != expected:
        raise ValueError(
            f"{type(model).__name__} returned {len(attentions)} attention maps for {expected} criss-cross passes with "
            "output_attentions=True; this version of the model does not return its maps, so they cannot be drawn."
        )
    maps = []
    for (name, (height, width)), block in zip(grids, blocks, strict=True):
        passes = [attentions.pop(0).reshape(-1, height, width, height + width) for _ in range(block.recurrence)]
        cell = feature_cell(query_pixel, tuple(pixel_values.shape[-2:]), (height, width))
        maps.append((_stage_label(name), cell, *criss_cross_maps(passes, cell)))
    return maps


def draw_attention_cnn(
    model,
    pixel_values: torch.Tensor,
    image: Image.Image,
    query_pixel: tuple[int, int] | None = None,
    panel_size: int = PANEL_SIZE,
    dpi: int = DPI,
):
    """The picture that fits the model's `attention_type`, for the first image of `pixel_values`."""
    kind = model.config.attention_type
    image_size = tuple(pixel_values.shape[-2:])
    query_pixel = tuple(query_pixel) if query_pixel is not None else (image_size[0] // 2, image_size[1] // 2)
    if kind in ("non_local", "dual_attention"):
        maps = _feature_attention_maps(model, pixel_values, image_size, query_pixel)
        return plot_query_attention(image, maps, query_pixel, panel_size, dpi)
    if kind == "criss_cross":
        return plot_criss_cross(
            image, _criss_cross_block_maps(model, pixel_values, query_pixel), query_pixel, panel_size, dpi
        )
    if kind in ("squeeze_excitation", "residual_attention", "spatial_transformer"):
        with torch.no_grad(), record_feature_attention(model) as records:
            model(pixel_values=pixel_values)
        values = [(_stage_label(record.name), record.value[0]) for record in records if record.kind == kind]
        if kind == "squeeze_excitation":
            return plot_channel_weights(values, panel_size, dpi)
        if kind == "residual_attention":
            return plot_residual_masks(image, values, panel_size, dpi)
        return plot_spatial_transformer(image, values, panel_size=panel_size, dpi=dpi)
    raise ValueError(
        f"An AttentionCNN with attention_type={kind!r} has no attention map to draw; drawable: {DRAWABLE[1]}."
    )


def draw_video(
    model, pixel_values: torch.Tensor, frames: Sequence[Image.Image], panel_size: int = PANEL_SIZE, dpi: int = DPI
):
    """Per frame the class token's attention and the cross-frame map, for the first clip of `pixel_values`
    (batch, frames, channels, height, width); `frames` are the clip's frames as the model saw them."""
    encoder = getattr(model, "video_model", model)  # the classifier's and the video-text model's video encoder
    with torch.no_grad():
        outputs = encoder(pixel_values=pixel_values, output_attentions=True)
    config = encoder.config
    grid_size = (pixel_values.shape[-2] // config.patch_size, pixel_values.shape[-1] // config.patch_size)
    maps = video_attention_maps(outputs.attentions, outputs.cross_frame_attentions, pixel_values.shape[1], grid_size)
    return plot_video_attention(frames, maps, panel_size, dpi)


def draw_image_text(
    model,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    image: Image.Image,
    words: Sequence[str],
    word_ids: Sequence[int | None],
    panel_size: int = PANEL_SIZE,
    dpi: int = DPI,
):
    """For each word of one caption, the image-text model's cross-attention over the image's patches.

    `words` are the caption's words and `word_ids` the word of every token of `input_ids[0]` (a fast tokenizer's
    `encoding.word_ids()`); the input panel gives the model's image-text match probability.
    """
    with torch.no_grad():
        outputs = model(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, output_attentions=True
        )
    if not outputs.cross_attentions:
        raise ValueError(f"{type(model).__name__} returned no cross-attention maps with output_attentions=True.")
    config = model.config
    patch_height, patch_width = as_pair(config.vision_config.patch_size)
    grid_size = (pixel_values.shape[-2] // patch_height, pixel_values.shape[-1] // patch_width)
    text_queries = config.fusion_direction == "text_to_image"
    maps = image_text_word_maps(outputs.cross_attentions, word_ids, grid_size, text_queries)
    match = float(outputs.itm_logits[0].float().softmax(-1)[1])
    title = f"input · match {match:.0%}" + ("" if text_queries else " · image queries text")
    return plot_image_text(image, [(words[word], heat) for word, heat in maps.items()], title, panel_size, dpi)


def draw_glimpse(model, pixel_values: torch.Tensor, image: Image.Image) -> Image.Image:
    """The glimpse model's path over the first image: its policy's mean locations (no sampling), numbered, with the
    prediction as caption; drawn by `draw_glimpse_paths`, the picture the glimpse training writes."""
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values[:1], sample_locations=False)
    caption = None
    if getattr(outputs, "logits", None) is not None:
        predicted = int(outputs.logits[0].argmax())
        caption = [f"pred {model.config.id2label.get(predicted, predicted)}"]
    config = model.config
    return draw_glimpse_paths([image], outputs.glimpse_locations[:1], config.patch_size, config.num_scales, caption)


def image_from_pixel_values(pixel_values: torch.Tensor, image_mean=None, image_std=None) -> Image.Image:
    """A (channels, height, width) model input back as the RGB image the model saw: the processor's normalisation
    undone when its mean and std are given, else scaled from its own min-max."""
    values = pixel_values.detach().float().cpu()
    if image_mean is not None and image_std is not None:
        mean, std = (torch.as_tensor(v, dtype=torch.float32).reshape(-1, 1, 1) for v in (image_mean, image_std))
        values = values * std + mean
    else:
        values = (values - values.min()) / max(float(values.max() - values.min()), 1e-8)
    values = values.clamp(0, 1).expand(3, -1, -1) if values.shape[0] == 1 else values[:3].clamp(0, 1)
    return Image.fromarray(np.round(values.permute(1, 2, 0).numpy() * 255).astype(np.uint8))


def draw_attention(
    model,
    pixel_values: torch.Tensor,
    image: Image.Image,
    query_pixel: tuple[int, int] | None = None,
    panel_size: int = PANEL_SIZE,
    dpi: int = DPI,
):
    """The attention picture of `model` for its input `pixel_values` (first of the batch), drawn over `image`.

    `query_pixel` (row, column of the model's input) is the query of the non-local, DANet and criss-cross maps;
    default the centre. Raises `ValueError` for a model this module cannot draw.
    """
    # by model_type, never isinstance: a model loaded with trust_remote_code has the folder's copy of our classes
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    model.eval()
    if model_type == "hf_attention_vision_text_cross_attention":
        raise ValueError(
            f"A {type(model).__name__} is drawn per word of a caption: call draw_image_text with the tokenized caption "
            "(`hf-attention show MODEL IMAGE --text CAPTION`)."
        )
    if model_type in ("hf_attention_video", "hf_attention_video_text"):
        frames = image if isinstance(image, (list, tuple)) else None
        if pixel_values.dim() != 5 or frames is None or len(frames) != pixel_values.shape[1]:
            raise ValueError(
                "A video model is drawn from clips (batch, frames, channels, height, width) with one image per frame; "
                f"got pixel_values of shape {tuple(pixel_values.shape)} and {len(frames or ())} frame images."
            )
        return draw_video(model, pixel_values, frames, panel_size, dpi)
    size = (pixel_values.shape[-1], pixel_values.shape[-2])
    image = image if image.size == size else image.resize(size, Image.Resampling.BILINEAR)  # what the model saw
    if model_type == "hf_attention_recurrent_attention":
        return draw_glimpse(model, pixel_values, image)
    if model_type == "hf_attention_vit":
        return draw_vit(model, pixel_values, image, panel_size, dpi)
    if model_type == "hf_attention_attention_cnn":
        return draw_attention_cnn(model, pixel_values, image, query_pixel, panel_size, dpi)
    raise ValueError(
        f"Cannot draw the attention of a {type(model).__name__}: it takes no image. Drawable: {'; '.join(DRAWABLE)}. "
        "The map functions of hf_attention.visualize (query_attention_map, criss_cross_maps, attention_rollout) "
        "also work on any block's weights in a notebook."
    )


__all__ = [
    "PanelGrid",
    "RecordedBlock",
    "VideoAttentionMaps",
    "VisionTransformerMaps",
    "affine_source_points",
    "attention_rollout",
    "block_grids",
    "criss_cross_dense",
    "criss_cross_maps",
    "draw_attention",
    "draw_attention_cnn",
    "draw_glimpse",
    "draw_glimpse_paths",
    "draw_image_text",
    "draw_video",
    "draw_vit",
    "image_from_pixel_values",
    "image_text_word_maps",
    "feature_cell",
    "overlay_attention",
    "plot_channel_weights",
    "plot_criss_cross",
    "plot_image_text",
    "plot_query_attention",
    "plot_residual_masks",
    "plot_spatial_transformer",
    "plot_video_attention",
    "plot_vit_attention",
    "query_attention_map",
    "record_feature_attention",
    "save_figure",
    "video_attention_maps",
    "vit_attention_maps",
]
