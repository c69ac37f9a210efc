"""Where a model attends, as numbers and as pictures: for notebooks, and behind `hf-attention show`.

Two layers, so the numbers can be checked apart from the drawing:
- map functions (torch only) turn a model's outputs into the maps that get drawn: `attention_rollout`,
  `vit_attention_maps`, `query_attention_map` (non-local, DANet), `criss_cross_maps`, `video_attention_maps`,
  `image_text_word_maps`, and `record_feature_attention`, which reads SE gates, residual-attention masks and STN
  transforms with forward hooks (the blocks themselves are not changed);
- drawing functions (matplotlib, the `[viz]` extra) return a PIL image (`overlay_attention`) or a matplotlib
  `Figure` (`plot_*`). Figures are laid out on a grid of square panels `panel_size` pixels wide, so a figure of
  r x c panels saved at its own dpi is exactly (c * panel_size, r * panel_size) pixels.

`draw_attention(model, pixel_values, image)` picks the right picture for a model; `hf-attention show` calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from ..configuration_vit import as_pair
from .visualize_glimpse import draw_glimpse_paths  # the glimpse model's picture, shared with its training report

PANEL_SIZE = 160  # pixels per panel side
DPI = 100
MAX_COLUMNS = 6
COLORMAP = "inferno"

# --- numbers ---------------------------------------------------------------------------------------------------


def attention_rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar and Zuidema, 2020): how much each input token flows into each output token.

    Per layer the heads are averaged, the identity is added for the residual connection, and rows are renormalised
    to sum to 1; the layers are then multiplied, first layer on the right. `attentions` holds one (batch, heads,
    tokens, tokens) map per layer; returns (batch, tokens, tokens) whose rows sum to 1.
    """
    if not attentions:
        raise ValueError("attention_rollout needs at least one layer's attention map, got none.")
    rollout = None
    for layer, attention in enumerate(attentions):
        if attention.dim() != 4 or attention.shape[-1] != attention.shape[-2]:
            raise ValueError(
                f"attention_rollout needs self-attention maps (batch, heads, tokens, tokens); layer {layer} has shape "
                f"{tuple(attention.shape)}."
            )
        mixed = attention.float().mean(dim=1) + torch.eye(attention.shape[-1], device=attention.device)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed if rollout is None else mixed @ rollout
    return rollout


@dataclass
class VisionTransformerMaps:
    """The two ViT pictures' numbers for one image: `rollout` (grid_h, grid_w) and `heads` (heads, grid_h, grid_w).

    `query` says whose attention they are, the token the classifier reads: the class token for `pooling="cls"`, the
    mean over the patch tokens' rows for `pooling="mean"`. `heads` is the last layer's attention over the patches;
    `class_token_share` (heads,) is what each head gives the class token instead.
    """

    rollout: torch.Tensor
    heads: torch.Tensor
    class_token_share: torch.Tensor
    query: str


def vit_attention_maps(
    attentions: Sequence[torch.Tensor], grid_size: tuple[int, int], pooling: str = "cls", index: int = 0
) -> VisionTransformerMaps:
    """The rollout and the last layer's per-head attention of image `index`, over its (grid_h, grid_w) patches."""
    grid_height, grid_width = grid_size
    num_tokens = attentions[-1].shape[-1]
    if num_tokens != grid_height * grid_width + 1 or attentions[-1].shape[-2] != num_tokens:
        raise ValueError(
            f"Expected attention over a class token and {grid_height}x{grid_width} patches "
            f"({grid_height * grid_width + 1} keys), got maps of shape {tuple(attentions[-1].shape)}. Linformer "
            "attention runs over projected keys, not over the patches, so it cannot be drawn over the image."
        )
    rollout = attention_rollout(attentions)[index]
    last = attentions[-1][index].float()
    if pooling == "mean":
        rollout_row, head_rows, query = rollout[1:].mean(dim=0), last[:, 1:].mean(dim=1), "mean of patches"
    else:
        rollout_row, head_rows, query = rollout[0], last[:, 0], "class token"
    return VisionTransformerMaps(
        rollout=rollout_row[1:].reshape(grid_height, grid_width),
        heads=head_rows[:, 1:].reshape(-1, grid_height, grid_width),
        class_token_share=head_rows[:, 0],
        query=query,
    )


def feature_cell(pixel: tuple[int, int], image_size: tuple[int, int], grid_size: tuple[int, int]) -> tuple[int, int]:
    """The cell of a (grid_h, grid_w) feature map that covers input pixel (row, column) of an (h, w) image."""
    (row, column), (height, width) = pixel, image_size
    if not (0 <= row < height and 0 <= column < width):
        raise ValueError(f"The query pixel {pixel} lies outside the {height}x{width} input image (rows, columns).")
    return row * grid_size[0] // height, column * grid_size[1] // width


def query_attention_map(
    attention: torch.Tensor,
    query_cell: tuple[int, int],
    query_grid: tuple[int, int],
    key_grid: tuple[int, int],
    index: int = 0,
) -> torch.Tensor:
    """One query position's attention over the key positions of a feature map, as a (key_h, key_w) map.

    `attention` is (batch, heads, query_h * query_w, key_h * key_w), positions in row-major order, as the non-local
    and DANet position blocks return it; the heads (one in both papers) are averaged.
    """
    expected = query_grid[0] * query_grid[1], key_grid[0] * key_grid[1]
    if attention.dim() != 4 or tuple(attention.shape[-2:]) != expected:
        raise ValueError(
            f"Expected an attention map (batch, heads, {expected[0]}, {expected[1]}) between a {query_grid} query grid "
            f"and a {key_grid} key grid, got {tuple(attention.shape)}."
        )
    query = query_cell[0] * query_grid[1] + query_cell[1]
    return attention[index, :, query].float().mean(dim=0).reshape(key_grid)


def criss_cross_dense(probabilities: torch.Tensor) -> torch.Tensor:
    """One criss-cross pass as a dense (batch, h * w, h * w) map between positions (row-major).

    `probabilities` is (batch, h, w, h + w): for query (i, j), first its weights over column j (rows g = 0..h-1,
    zero at g = i, where the position is counted in its row), then over row i (columns v = 0..w-1). Rows sum to 1.
    """
    batch, height, width, length = probabilities.shape
    if length != height + width:
        raise ValueError(
            f"Expected criss-cross weights (batch, height, width, height + width), got {tuple(probabilities.shape)}."
        )
    column, row = probabilities.float().split((height, width), dim=-1)
    dense = probabilities.new_zeros(batch, height, width, height, width, dtype=torch.float32)
    dense += torch.einsum("bhwg,wx->bhwgx", column, torch.eye(width))  # key (g, w): the query's own column
    dense += torch.einsum("bhwv,hy->bhwyv", row, torch.eye(height))  # key (h, v): the query's own row
    return dense.reshape(batch, height * width, height * width)


def criss_cross_maps(
    passes: Sequence[torch.Tensor], query_cell: tuple[int, int], index: int = 0
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """For one query position: the (h, w) cross it attends over in each pass, and its reach after all passes (the
    product of the passes' dense maps, last pass on the left: after two passes every position is reached)."""
    height, width = passes[0].shape[1:3]
    query = query_cell[0] * width + query_cell[1]
    denses = [criss_cross_dense(probabilities[index : index + 1])[0] for probabilities in passes]
    reach = denses[0]
    for dense in denses[1:]:
        reach = dense @ reach
    crosses = [dense[query].reshape(height, width) for dense in denses]
    return crosses, reach[query].reshape(height, width)


@dataclass
class VideoAttentionMaps:
    """The video pictures' numbers for one clip: `frames` (frames, grid_h, grid_w), each frame's class token's
    last-layer attention over its patches (heads averaged); `message_share` (frames,), what it gives its frame's
    message token; `cross_frame` (frames, frames), the last layer's attention between the frames' message tokens
    (row: the frame that attends), or None without cross-frame attention."""

    frames: torch.Tensor
    message_share: torch.Tensor | None
    cross_frame: torch.Tensor | None


def video_attention_maps(
    attentions: Sequence[torch.Tensor],
    cross_frame_attentions: Sequence[torch.Tensor] | None,
    num_frames: int,
    grid_size: tuple[int, int],
    index: int = 0,
) -> VideoAttentionMaps:
    """Per frame the class token's attention, and the CFA map, of clip `index`, from the video model's outputs.

    `attentions[-1]` is (batch, frames * heads, tokens (+ 1), tokens (+ 1)), frame-major: the class token first, then
    the patches, then (with cross-frame attention) the frame's message token; `cross_frame_attentions[-1]` is (batch,
    heads, frames, frames).
    """
    num_patches = grid_size[0] * grid_size[1]
    last = attentions[-1]
    if last.dim() != 4 or last.shape[-1] not in (num_patches + 1, num_patches + 2) or last.shape[1] % num_frames:
        raise ValueError(
            f"Expected intra-frame maps (batch, {num_frames} frames * heads, tokens, tokens) over a class token and "
            f"{num_patches} patches (and a message token), got {tuple(last.shape)}."
        )
    per_frame = last[index].unflatten(0, (num_frames, -1))  # (frames, heads, tokens, tokens)
    class_rows = per_frame[:, :, 0].float().mean(dim=1)
    frames = class_rows[:, 1 : 1 + num_patches].reshape(num_frames, *grid_size)
    has_message = last.shape[-1] == num_patches + 2
    cross_frame = None
    if cross_frame_attentions:
        cross_frame = cross_frame_attentions[-1][index].float().mean(dim=0)
    return VideoAttentionMaps(frames, class_rows[:, -1] if has_message else None, cross_frame)


def image_text_word_maps(
    cross_attentions: Sequence[torch.Tensor],
    word_ids: Sequence[int | None],
    grid_size: tuple[int, int],
    text_queries: bool = True,
    index: int = 0,
) -> dict[int, torch.Tensor]:
    """{word index: (grid_h, grid_w) map} of pair `index`: the last fusion layer's cross-attention (heads averaged)
    between each word of the caption and the image patches, the maps of a word's sub-word tokens averaged.

    `cross_attentions[-1]` is (pairs, heads, queries, keys); with `text_queries` the queries are the text tokens
    and the keys the image tokens (class token first), so a word's map is its row over the patches; otherwise the
    image tokens query the text and a word's map is its column over the patch queries. `word_ids` gives each text
    token's word (None for special tokens and padding, which are left out), as a fast tokenizer's `word_ids()`.
    """
    last = cross_attentions[-1][index].float().mean(dim=0)
    per_token = last[:, 1:] if text_queries else last[1:].T  # (text tokens, patches)
    num_patches = grid_size[0] * grid_size[1]
    if per_token.shape != (len(word_ids), num_patches):
        raise ValueError(
            f"Expected cross-attention between {len(word_ids)} text tokens and a class token + {num_patches} patches, "
            f"got a map of shape {tuple(cross_attentions[-1].shape)}."
        )
    maps = {}
    for word in dict.fromkeys(word for word in word_ids if word is not None):
        tokens = [position for position, token_word in enumerate(word_ids) if token_word == word]
        maps[word] = per_token[tokens].mean(dim=0).reshape(grid_size)
    return maps


# --- forward hooks: what the blocks compute but do not return ------------------------------------------------


@dataclass
class RecordedBlock:
    """What one feature-map attention block computed during a forward pass, found by a forward hook.

    `kind` is "squeeze_excitation" (`value`: channel gates (batch, channels)), "residual_attention" (`value`: the soft
    mask M (batch, channels, h, w)) or "spatial_transformer" (`value`: the affine transforms (batch, 2, 3)).
    """

    name: str
    kind: str
    value: torch.Tensor


def _recording_hooks(model: nn.Module):
    """(module, kind, how to turn its output into the recorded value) for every block the hooks can read."""
    from .. import ResidualAttentionModule, SpatialTransformer, SqueezeExcitation

    for name, module in model.named_modules():
        if isinstance(module, SqueezeExcitation):  # the gate is sigmoid(fc2(...)); fc2 is the last layer before it
            yield name, module.fc2, "squeeze_excitation", torch.sigmoid
        elif isinstance(module, ResidualAttentionModule):
            yield name, module.mask, "residual_attention", lambda output: output
        elif isinstance(module, SpatialTransformer):
            yield name, module.theta, "spatial_transformer", lambda output: output.view(-1, 2, 3)


@contextmanager
def record_feature_attention(model: nn.Module):
    """Within the block, every forward pass of `model` appends a `RecordedBlock` per SE, residual-attention and STN
    block to the yielded list, in the order the blocks ran. The hooks are removed on exit."""
    records: list[RecordedBlock] = []
    handles = []
    for name, module, kind, transform in _recording_hooks(model):

        def hook(_module, _inputs, output, name=name, kind=kind, transform=transform):
            records.append(RecordedBlock(name, kind, transform(output.detach()).float()))

        handles.append(module.register_forward_hook(hook))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def block_grids(model: nn.Module, run) -> tuple[object, list[tuple[str, tuple[int, int]]]]:
    """Call `run()` and return its result with (module name, (height, width) of the feature map it attended over)
    for every non-local, DANet position and criss-cross block, in the order they ran."""
    from .. import CrissCrossAttention, NonLocalBlock, PositionAttention

    grids, handles = [], []
    for name, module in model.named_modules():
        if isinstance(module, (NonLocalBlock, PositionAttention, CrissCrossAttention)):

            def hook(_module, inputs, name=name):
                grids.append((name, tuple(inputs[0].shape[-2:])))

            handles.append(module.register_forward_pre_hook(hook))
    try:
        return run(), grids
    finally:
        for handle in handles:
            handle.remove()


# --- drawing ---------------------------------------------------------------------------------------------------


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - matplotlib is in the [viz] and [dev] extras
        raise ImportError("Drawing attention needs matplotlib: pip install 'hf-attention[viz]'.") from error
    return Figure


def _colormap(name: str = COLORMAP):
    from matplotlib import colormaps

    return colormaps[name]


class PanelGrid:
    """A figure of rows x columns square panels, exactly (columns * panel_size, rows * panel_size) pixels at `dpi`."""

    def __init__(self, rows: int, columns: int, panel_size: int = PANEL_SIZE, dpi: int = DPI):
        if panel_size < 64:
            raise ValueError(f"panel_size is in pixels and must be at least 64, got {panel_size}.")
        self.rows, self.columns, self.panel_size = rows, columns, panel_size
        self.figure = _figure_class()(figsize=(columns * panel_size / dpi, rows * panel_size / dpi), dpi=dpi)
        self.font_size = max(6.0, panel_size / 22)

    @classmethod
    def for_panels(cls, count: int, panel_size: int = PANEL_SIZE, dpi: int = DPI) -> PanelGrid:
        """Enough rows of at most MAX_COLUMNS panels for `count` panels."""
        columns = min(count, MAX_COLUMNS)
        return cls(-(-count // columns), columns, panel_size, dpi)

    def axes(self, row: int, column: int, span: int = 1, *, frame: bool = False, inset: tuple = (0.03, 0.03)):
        """The axes of the panel at (row, column), `span` panels wide, below room for a title; `inset` is the
        (left, bottom) margin as a fraction of a panel (more for axes with tick labels)."""
        title_room = 2.4 * self.font_size * self.figure.dpi / 72 / self.panel_size
        left, bottom = inset
        axes = self.figure.add_axes(
            (
                (column + left) / self.columns,
                (self.rows - 1 - row + bottom) / self.rows,
                (span - left - 0.03) / self.columns,
                (1 - title_room - bottom) / self.rows,
            )
        )
        if not frame:
            axes.set_axis_off()
        return axes

    def image_panel(
        self,
        index: int,
        image: Image.Image,
        title: str,
        marker: tuple[int, int] | None = None,
        size: tuple[int, int] | None = None,
    ):
        """Draw `image` in the index-th panel (row-major), in the coordinates of an image of `size` (width, height),
        with a cross on the pixel `marker` (row, column) of that image."""
        width, height = size or image.size
        axes = self.axes(index // self.columns, index % self.columns)
        axes.imshow(image, extent=(0, width, height, 0), interpolation="nearest")
        if marker is not None:
            axes.plot(
                marker[1] + 0.5,
                marker[0] + 0.5,
                marker="+",
                color="cyan",
                markersize=self.font_size * 1.6,
                markeredgewidth=2,
            )
            axes.set_xlim(0, width)
            axes.set_ylim(height, 0)
        axes.set_title(title, fontsize=self.font_size)
        return axes


def overlay_attention(
    image: Image.Image,
    attention,
    alpha: float = 0.6,
    size: int = 224,
    colormap: str = COLORMAP,
    value_range: tuple[float, float] | None = None,
    where=None,
) -> Image.Image:
    """A (h, w) attention map, coloured, blended over a grey copy of `image`; returns an RGB PIL image.

    Colours run from `value_range` (default 0 to the map's maximum, so zero attention is always the darkest). The
    map is stretched over the whole image with nearest-neighbour sampling, so each patch or feature-map cell stays a
    visible block; small images are enlarged (nearest, so pixels stay pixels) until their longer side is `size`.
    `where`, a (h, w) bool map, limits the colour to its True cells (the rest shows the dimmed image): the positions
    a sparse attention such as criss-cross can reach at all.
    """
    heat = torch.as_tensor(attention, dtype=torch.float32).detach().cpu()
    if heat.dim() != 2:
        raise ValueError(f"overlay_attention needs a 2-D (height, width) map, got shape {tuple(heat.shape)}.")
    if not torch.isfinite(heat).all():
        raise ValueError("The attention map holds NaN or infinite values; nothing sensible can be drawn.")
    low, high = value_range if value_range is not None else (0.0, float(heat.max()))
    heat = ((heat - low) / (high - low)).clamp(0, 1) if high > low else torch.zeros_like(heat)
    scale = max(1, size // max(image.size))
    width, height = image.width * scale, image.height * scale

    def stretched(values: torch.Tensor) -> np.ndarray:
        return np.asarray(Image.fromarray(values.float().numpy()).resize((width, height), Image.Resampling.NEAREST))

    base = np.asarray(image.convert("L").convert("RGB").resize((width, height), Image.Resampling.NEAREST)) / 255
    if where is not None:  # start the colours above black, so a reachable cell with no weight still shows
        heat = 0.25 + 0.75 * heat
    coloured = (1 - alpha) * base + alpha * _colormap(colormap)(stretched(heat))[..., :3]
    if where is not None:
        inside = stretched(torch.as_tensor(where).float())[..., None] > 0.5
        coloured = np.where(inside, coloured, 0.3 * base)
    return Image.fromarray(np.round(coloured * 255).astype(np.uint8))


def plot_vit_attention(image: Image.Image, maps: VisionTransformerMaps, panel_size: int = PANEL_SIZE, dpi: int = DPI):
    """The input, the attention rollout and the last layer's attention of each head, over the image."""
    num_heads = maps.heads.shape[0]
    grid = PanelGrid.for_panels(2 + num_heads, panel_size, dpi)
    grid.image_panel(0, image, f"input · query: {maps.query}")
    grid.image_panel(1, overlay_attention(image, maps.rollout), "rollout, all layers", size=image.size)
    for head in range(num_heads):
        share = float(maps.class_token_share[head])
        title = f"last layer, head {head + 1} · cls {share:.0%}"
        grid.image_panel(2 + head, overlay_attention(image, maps.heads[head]), title, size=image.size)
    return grid.figure


def plot_query_attention(
    image: Image.Image,
    maps: Sequence[tuple[str, torch.Tensor]],
    query_pixel: tuple[int, int],
    panel_size: int = PANEL_SIZE,
    dpi: int = DPI,
):
    """The input with the query pixel marked, then for each block its (h, w) attention map of that query."""
    grid = PanelGrid.for_panels(1 + len(maps), panel_size, dpi)
    grid.image_panel(0, image, f"input · query pixel {tuple(query_pixel)}", marker=query_pixel)
    for index, (label, attention) in enumerate(maps, start=1):
        title = f"{label} · {attention.shape[0]}x{attention.shape[1]} · max {float(attention.max()):.2f}"
        grid.image_panel(index, overlay_attention(image, attention), title, marker=query_pixel, size=image.size)
    return grid.figure


def plot_criss_cross(
    image: Image.Image,
    maps: Sequence[tuple[str, tuple[int, int], Sequence[torch.Tensor], torch.Tensor]],
    query_pixel: tuple[int, int],
    panel_size: int = PANEL_SIZE,
    dpi: int = DPI,
):
    """One row per criss-cross block (label, query cell, crosses, reach): the cross each pass attends over (the
    cells off the cross, which it cannot see, dimmed), then where the query's information comes from after all
    passes (the product of the passes' maps: the whole image after two)."""
    passes = max(len(crosses) for _, _, crosses, _ in maps)
    grid = PanelGrid(len(maps), passes + 1, panel_size, dpi)
    for row, (label, (cell_row, cell_column), crosses, reach) in enumerate(maps):
        on_cross = torch.zeros(reach.shape, dtype=torch.bool)
        on_cross[cell_row, :], on_cross[:, cell_column] = True, True
        for step, cross in enumerate(crosses):
            title = f"{label} · pass {step + 1}" + (f" · query {tuple(query_pixel)}" if step == 0 else "")
            drawn = overlay_attention(image, cross, where=on_cross)
            grid.image_panel(row * grid.columns + step, drawn, title, query_pixel, image.size)
        title = f"{label} · reach after {len(crosses)} passes"
        grid.image_panel(row * grid.columns + passes, overlay_attention(image, reach), title, query_pixel, image.size)
    return grid.figure


def plot_channel_weights(weights: Sequence[tuple[str, torch.Tensor]], panel_size: int = PANEL_SIZE, dpi: int = DPI):
    """A bar chart per Squeeze-and-Excitation block: the gate in (0, 1) it multiplies each channel by."""
    grid = PanelGrid(len(weights), 3, panel_size, dpi)
    for row, (label, gates) in enumerate(weights):
        axes = grid.axes(row, 0, span=3, frame=True, inset=(0.3, 0.28))
        gates = gates.detach().float().cpu()
        axes.bar(np.arange(len(gates)), gates.numpy(), width=0.8, color=_colormap()(0.55))
        axes.set_ylim(0, 1)
        axes.set_xlim(-0.6, len(gates) - 0.4)
        axes.axhline(float(gates.mean()), color="black", linewidth=0.8, linestyle="--")
        axes.tick_params(labelsize=grid.font_size * 0.85)
        axes.set_xlabel("channel", fontsize=grid.font_size, labelpad=1)
        axes.set_ylabel("gate", fontsize=grid.font_size, labelpad=1)
        title = f"{label} · {len(gates)} channels · mean {float(gates.mean()):.2f} (dashed)"
        axes.set_title(title, fontsize=grid.font_size)
    return grid.figure


def plot_residual_masks(
    image: Image.Image, masks: Sequence[tuple[str, torch.Tensor]], panel_size: int = PANEL_SIZE, dpi: int = DPI
):
    """The input, then each residual-attention module's soft mask M (averaged over channels) over the image; the
    module outputs (1 + M) * trunk, so brighter is amplified more."""
    grid = PanelGrid.for_panels(1 + len(masks), panel_size, dpi)
    grid.image_panel(0, image, "input")
    for index, (label, mask) in enumerate(masks, start=1):
        mean = mask.float().mean(dim=0)
        title = f"{label} · mask {float(mean.min()):.2f}-{float(mean.max()):.2f}"
        masked = overlay_attention(image, mean, value_range=(float(mean.min()), float(mean.max())))
        grid.image_panel(index, masked, title, size=image.size)
    return grid.figure


def affine_source_points(theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Where an STN samples: output points (n, 2) as (x, y) in [-1, 1] -> input points (n, 2), as `affine_grid`."""
    return points @ theta[:, :2].T.float() + theta[:, 2].float()


def plot_spatial_transformer(
    image: Image.Image,
    thetas: Sequence[tuple[str, torch.Tensor]],
    lines: int = 7,
    panel_size: int = PANEL_SIZE,
    dpi: int = DPI,
):
    """For each STN: the grid it samples, drawn over the input (the identity grid would be the square border and its
    evenly spaced lines), and the input resampled by that transform: what the next layer gets to see."""
    grid = PanelGrid.for_panels(1 + 2 * len(thetas), panel_size, dpi)
    width, height = image.size
    grid.image_panel(0, image, "input")
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None] / 255
    steps = torch.linspace(-1, 1, 50)
    for index, (label, theta) in enumerate(thetas):
        axes = grid.image_panel(1 + 2 * index, image.convert("L").convert("RGB"), f"{label} · where it samples")
        corners = [0.0, float(width), 0.0, float(height)]
        for level, value in enumerate(torch.linspace(-1, 1, lines)):
            edge = level in (0, lines - 1)
            for points in (torch.stack((steps, value.expand(50)), 1), torch.stack((value.expand(50), steps), 1)):
                source = affine_source_points(theta, points)
                x, y = (source[:, 0] + 1) / 2 * width, (source[:, 1] + 1) / 2 * height
                axes.plot(x, y, color="cyan", linewidth=1.6 if edge else 0.7)
                corners = [
                    min(corners[0], float(x.min())),
                    max(corners[1], float(x.max())),
                    min(corners[2], float(y.min())),
                    max(corners[3], float(y.max())),
                ]
        # show the whole grid, also where it leaves the image (the STN reads zeros there), up to half an image
        axes.set_xlim(max(corners[0], -width / 2), min(corners[1], 1.5 * width))
        axes.set_ylim(min(corners[3], 1.5 * height), max(corners[2], -height / 2))
        sampling = F.affine_grid(theta[None].float(), [1, 3, height, width], align_corners=False)
        warped = F.grid_sample(pixels, sampling, mode="bilinear", padding_mode="zeros", align_corners=False)
        warped = Image.fromarray(np.round(warped[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8))
        grid.image_panel(2 + 2 * index, warped, f"{label} · warped input")
    return grid.figure


def plot_video_attention(
    frames: Sequence[Image.Image], maps: VideoAttentionMaps, panel_size: int = PANEL_SIZE, dpi: int = DPI
):
    """Each frame with its class token's attention, then the cross-frame attention between the frames."""
    count = len(frames) + (maps.cross_frame is not None)
    grid = PanelGrid.for_panels(count, panel_size, dpi)
    for index, (frame, heat) in enumerate(zip(frames, maps.frames, strict=True)):
        title = f"frame {index + 1}" + (
            f" · msg {float(maps.message_share[index]):.0%}" if maps.message_share is not None else ""
        )
        grid.image_panel(index, overlay_attention(frame, heat), title, size=frame.size)
    if maps.cross_frame is not None:
        panel = len(frames)
        axes = grid.axes(panel // grid.columns, panel % grid.columns, frame=True, inset=(0.16, 0.14))
        num_frames = maps.cross_frame.shape[0]
        axes.imshow(maps.cross_frame.numpy(), cmap=COLORMAP, vmin=0, vmax=1, interpolation="nearest")
        ticks = list(range(num_frames))
        axes.set_xticks(ticks, [str(tick + 1) for tick in ticks], fontsize=grid.font_size * 0.8)
        axes.set_yticks(ticks, [str(tick + 1) for tick in ticks], fontsize=grid.font_size * 0.8)
        axes.tick_params(length=0, pad=1)
        if num_frames <= 8:  # the weights themselves, where they fit
            for (row, column), weight in np.ndenumerate(maps.cross_frame.numpy()):
                colour = "black" if weight > 0.6 else "white"
                axes.text(
                    column,
                    row,
                    f"{weight:.2f}"[1:],
                    ha="center",
                    va="center",
                    color=colour,
                    fontsize=grid.font_size * 0.7 * min(1.0, 6 / num_frames),
                )
        axes.set_title("cross-frame: row → column", fontsize=grid.font_size)
    return grid.figure


def plot_image_text(
    image: Image.Image,
    words: Sequence[tuple[str, torch.Tensor]],
    caption_title: str,
    panel_size: int = PANEL_SIZE,
    dpi: int = DPI,
):
    """The input (titled `caption_title`), then for each word of the caption its cross-attention over the image."""
    grid = PanelGrid.for_panels(1 + len(words), panel_size, dpi)
    grid.image_panel(0, image, caption_title)
    for index, (word, heat) in enumerate(words, start=1):
        grid.image_panel(index, overlay_attention(image, heat), f"\u201c{word}\u201d", size=image.size)
    return grid.figure


def save_figure(figure, path, optimize: bool = True) -> None:
    """Write `figure` as a PNG of exactly its pixel size, as a 256-colour palette image when `optimize` (these
    pictures are flat colour maps: the palette keeps them small without a visible change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rendered = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
    if optimize:
        rendered = rendered.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    rendered.save(path, format="PNG", optimize=True)


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
    from .. import CrissCrossAttention

    blocks = [module for module in model.modules() if isinstance(module, CrissCrossAttention)]
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
    from .. import (
        AttentionCNNPreTrainedModel,
        RecurrentAttentionPreTrainedModel,
        VideoTextTransformerModel,
        VideoTransformerPreTrainedModel,
        VisionTextCrossAttentionPreTrainedModel,
        VisionTransformerPreTrainedModel,
    )

    model.eval()
    if isinstance(model, VisionTextCrossAttentionPreTrainedModel):
        raise ValueError(
            f"A {type(model).__name__} is drawn per word of a caption: call draw_image_text with the tokenized caption "
            "(`hf-attention show MODEL IMAGE --text CAPTION`)."
        )
    if isinstance(model, (VideoTransformerPreTrainedModel, VideoTextTransformerModel)):
        frames = image if isinstance(image, (list, tuple)) else None
        if pixel_values.dim() != 5 or frames is None or len(frames) != pixel_values.shape[1]:
            raise ValueError(
                "A video model is drawn from clips (batch, frames, channels, height, width) with one image per frame; "
                f"got pixel_values of shape {tuple(pixel_values.shape)} and {len(frames or ())} frame images."
            )
        return draw_video(model, pixel_values, frames, panel_size, dpi)
    size = (pixel_values.shape[-1], pixel_values.shape[-2])
    image = image if image.size == size else image.resize(size, Image.Resampling.BILINEAR)  # what the model saw
    if isinstance(model, RecurrentAttentionPreTrainedModel):
        return draw_glimpse(model, pixel_values, image)
    if isinstance(model, VisionTransformerPreTrainedModel):
        return draw_vit(model, pixel_values, image, panel_size, dpi)
    if isinstance(model, AttentionCNNPreTrainedModel):
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
