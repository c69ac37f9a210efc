"""Drawing attention (matplotlib, the `[viz]` extra): `overlay_attention` returns a PIL image, `plot_*` a matplotlib
`Figure`. Figures are laid out on a grid of square panels `panel_size` pixels wide, so a figure of r x c panels saved at
its own dpi is exactly (c * panel_size, r * panel_size) pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from .attention_maps import VideoAttentionMaps, VisionTransformerMaps

PANEL_SIZE = 160  # pixels per panel side
DPI = 100
MAX_COLUMNS = 6
COLORMAP = "inferno"


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
