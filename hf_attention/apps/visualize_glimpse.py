"""Pictures of where a glimpse model looked: every glimpse's retina boxes over the image, numbered in order.

Needs only Pillow (no matplotlib), so the glimpse training job draws with it too.
"""

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

# one colour per step, early (blue) to late (red): the order reads at a glance even where numbers overlap
STEP_COLOURS = [
    (49, 130, 189), (0, 170, 170), (70, 180, 60), (190, 190, 0), (240, 150, 0), (230, 85, 13), (215, 25, 28),
    (160, 0, 120),
]  # fmt: skip


def _as_pil(image, value_range: tuple[float, float] | None) -> Image.Image:
    """A PIL image, or a (channels, height, width) tensor / array scaled from `value_range` (default: its min-max)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    import numpy as np

    array = np.asarray(image.detach().cpu().float() if hasattr(image, "detach") else image, dtype=np.float32)
    if array.ndim != 3:
        raise ValueError(f"Each image must be (channels, height, width), got shape {array.shape}.")
    low, high = value_range if value_range is not None else (float(array.min()), float(array.max()))
    scaled = np.clip((array - low) / max(high - low, 1e-8), 0, 1)
    scaled = np.repeat(scaled, 3, axis=0) if scaled.shape[0] == 1 else scaled[:3]
    return Image.fromarray((scaled.transpose(1, 2, 0) * 255).round().astype(np.uint8), mode="RGB")


BOX_COLOUR = (255, 215, 0)  # the object's box: gold, a colour no step uses


def _draw_one(
    image: Image.Image, locations, patch_size: int, num_scales: int, zoom: int, box: Sequence[int] | None = None
) -> Image.Image:
    width, height = image.size
    # a margin, so that boxes leaving the image (the retina reads zeros there) stay visible; the coarsest boxes
    # may still be cut at its edge
    margin = min(patch_size * 2 ** (num_scales - 1) // 2, 8) * zoom
    canvas = Image.new("RGB", (width * zoom + 2 * margin, height * zoom + 2 * margin), (255, 255, 255))
    canvas.paste(image.resize((width * zoom, height * zoom), Image.NEAREST), (margin, margin))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if box is not None:
        left, top, box_width, box_height = box
        corners = (left, top, left + box_width, top + box_height)
        draw.rectangle([margin + value * zoom for value in corners], outline=BOX_COLOUR, width=1)
    centres = []
    for step, (x, y) in enumerate(locations):
        colour = STEP_COLOURS[step % len(STEP_COLOURS)]
        # (x, y) in [-1, 1] spans the image's outer pixel edges: the sensor's convention
        centre = (margin + (float(x) + 1) / 2 * width * zoom, margin + (float(y) + 1) / 2 * height * zoom)
        for scale in range(num_scales):
            half = patch_size * 2**scale / 2 * zoom
            box = (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)
            draw.rectangle(box, outline=colour, width=2 if scale == 0 else 1)
        centres.append(centre)
        half = patch_size / 2 * zoom
        draw.text((centre[0] - half + 2, centre[1] - half + 1), str(step + 1), fill=colour, font=font)
    if len(centres) > 1:
        draw.line(centres, fill=(255, 255, 255), width=1)
    return canvas


def draw_glimpse_paths(
    images,
    glimpse_locations,
    patch_size: int,
    num_scales: int = 1,
    captions: Sequence[str] | None = None,
    columns: int = 4,
    zoom: int = 4,
    value_range: tuple[float, float] | None = None,
    boxes: Sequence[Sequence[int]] | None = None,
) -> Image.Image:
    """A grid of `images`, each with the retina of every glimpse drawn over it.

    Args:
        images: (batch, channels, height, width) tensor or array (e.g. the model's `pixel_values`), or PIL images.
        glimpse_locations: (batch, num_glimpses, 2) (x, y) in [-1, 1], the model output's `glimpse_locations`.
        patch_size, num_scales: the model's retina (`config.patch_size`, `config.num_scales`); the finest box is
            drawn thick, each coarser one (twice as wide) thin, all in the step's colour and numbered from 1.
        captions: one line under each image (e.g. "Bag (pred Bag)").
        columns, zoom: grid width and pixel magnification.
        value_range: the (min, max) pixel value that maps to black and white; default: each image's own range.
        boxes: one (left, top, width, height) pixel box per image, outlined in gold (e.g. where the digit is).
    """
    if len(images) != len(glimpse_locations):
        raise ValueError(f"Got {len(images)} images but {len(glimpse_locations)} rows of glimpse_locations.")
    if len(images) == 0:
        raise ValueError("No images to draw.")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"Got {len(captions)} captions for {len(images)} images.")
    if boxes is not None and (len(boxes) != len(images) or any(len(box) != 4 for box in boxes)):
        raise ValueError(f"`boxes` must be one (left, top, width, height) per image: {len(images)} of them.")
    for row in glimpse_locations:
        if len(row) and len(row[0]) != 2:
            raise ValueError("glimpse_locations must be (batch, num_glimpses, 2) as (x, y).")
        for x, y in row:
            if not (abs(float(x)) <= 1 and abs(float(y)) <= 1):  # also NaN
                largest = max(abs(float(x)), abs(float(y)))
                raise ValueError(
                    "glimpse_locations must lie in [-1, 1] (normalised: -1 the left/top edge, +1 the right/bottom "
                    f"edge), got a coordinate of magnitude {largest:g}. Pixel coordinates must be normalised first: "
                    "x = 2 * column / width - 1."
                )
    tiles = [
        _draw_one(_as_pil(image, value_range), locations, patch_size, num_scales, zoom, box)
        for image, locations, box in zip(images, glimpse_locations, boxes or [None] * len(images), strict=True)
    ]
    caption_height = 14 if captions is not None else 0
    tile_width, tile_height = tiles[0].size
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * tile_width, rows * (tile_height + caption_height)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for index, tile in enumerate(tiles):
        left, top = index % columns * tile_width, index // columns * (tile_height + caption_height)
        sheet.paste(tile, (left, top))
        if captions is not None:
            draw.text((left + 4, top + tile_height + 1), captions[index], fill=(0, 0, 0), font=ImageFont.load_default())
    return sheet


__all__ = ["draw_glimpse_paths"]
