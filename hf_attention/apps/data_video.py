"""Moving-glyph clips: a real glyph (a scikit-learn digit or a Fashion-MNIST garment) moving across a canvas; the label
is the motion direction, one of 8.

The canvas is a torus (the glyph leaves on one side and comes back on the other) and the start is uniform on it, so
every single frame shows the glyph at a uniformly random place whatever the direction: no frame tells the label.
A clip played backwards is a clip of the opposite direction with the same frames, so anything computed from the
set of frames without their order (a mean over frames, say) scores the two alike: it can tell the axis of motion
but not its sign. Only the order of frames gives the label.
"""

from pathlib import Path

import numpy as np
from datasets import Array4D, ClassLabel, Dataset, DatasetDict, Features
from PIL import Image

from .data import FASHION_MNIST_DIR, _idx_file, read_idx

# (dy, dx) of one step of each direction, in image coordinates (y grows downwards); direction k + 4 is k reversed
DIRECTIONS = {
    "right": (0, 1),
    "down-right": (1, 1),
    "down": (1, 0),
    "down-left": (1, -1),
    "left": (0, -1),
    "up-left": (-1, -1),
    "up": (-1, 0),
    "up-right": (-1, 1),
}
DIRECTION_NAMES = list(DIRECTIONS)
GLYPH_SOURCES = ("digits", "fashion-mnist")
IDX_PREFIXES = (("train", "train"), ("test", "t10k"))


def opposite(label: int) -> int:
    """The direction of the same path played backwards."""
    return (label + len(DIRECTIONS) // 2) % len(DIRECTIONS)


def load_glyphs(source: str, data_dir: str | Path | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Train and test glyphs (uint8 arrays) of `source`: digits split 80/20 at random, Fashion-MNIST by its official
    split. Read as arrays, not through `datasets` images: 70,000 PIL decodes would take minutes."""
    if source == "digits":
        from sklearn.datasets import load_digits

        images = np.round(load_digits().images * (255.0 / 16.0)).astype(np.uint8)
        order = np.random.default_rng(seed).permutation(len(images))
        split = int(0.8 * len(images))
        arrays = {"train": images[order[:split]], "test": images[order[split:]]}
    elif source == "fashion-mnist":
        folder = Path(data_dir) if data_dir else FASHION_MNIST_DIR
        arrays = {split: read_idx(_idx_file(folder, f"{prefix}-images-idx3-ubyte")) for split, prefix in IDX_PREFIXES}
    else:
        raise ValueError(f"Glyphs come from one of {GLYPH_SOURCES}, got {source!r}.")
    return arrays


def render_clip(glyph: np.ndarray, canvas_size: int, num_frames: int, start: tuple[int, int], step: tuple[int, int]):
    """(frames, canvas, canvas) uint8: `glyph` at `start + t * step` in frame t, wrapping around the canvas."""
    canvas = np.zeros((canvas_size, canvas_size), dtype=np.uint8)
    canvas[: glyph.shape[0], : glyph.shape[1]] = glyph
    return np.stack(
        [np.roll(canvas, (start[0] + t * step[0], start[1] + t * step[1]), axis=(0, 1)) for t in range(num_frames)]
    )


def make_clips(
    glyphs: np.ndarray,
    num_clips: int,
    *,
    num_frames: int = 8,
    canvas_size: int = 32,
    glyph_size: int = 16,
    speeds: tuple[int, ...] = (1, 2),
    seed: int = 0,
    with_reversed: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """`num_clips` clips (N, frames, canvas, canvas, 3) uint8 RGB and their direction labels (N,).

    Directions are balanced; glyph (resized to `glyph_size`), start and speed (pixels per frame) are random.
    `with_reversed=True` returns every clip followed by itself played backwards (labelled with the opposite
    direction): 2N clips.
    """
    if num_clips <= 0 or num_frames < 2:
        raise ValueError(f"Need at least one clip of at least 2 frames, got {num_clips} clips of {num_frames} frames.")
    if not 0 < glyph_size <= canvas_size:
        raise ValueError(f"glyph_size must be in 1..canvas_size={canvas_size}, got {glyph_size}.")
    rng = np.random.default_rng(seed)
    labels = np.arange(num_clips) % len(DIRECTIONS)
    rng.shuffle(labels)
    clips, all_labels = [], []
    for label in labels:
        speed = int(rng.choice(speeds))
        dy, dx = DIRECTIONS[DIRECTION_NAMES[label]]
        start = (int(rng.integers(canvas_size)), int(rng.integers(canvas_size)))
        glyph = Image.fromarray(glyphs[rng.integers(len(glyphs))]).resize((glyph_size, glyph_size), Image.BILINEAR)
        clip = render_clip(np.asarray(glyph), canvas_size, num_frames, start, (dy * speed, dx * speed))
        clips.append(clip)
        all_labels.append(label)
        if with_reversed:
            clips.append(clip[::-1])
            all_labels.append(opposite(label))
    rgb = np.repeat(np.stack(clips)[..., None], 3, axis=-1)
    return rgb, np.asarray(all_labels)


def load_moving_glyphs(
    source: str = "digits",
    *,
    train_size: int = 2048,
    test_size: int = 256,
    num_frames: int = 8,
    canvas_size: int = 32,
    glyph_size: int = 16,
    speeds: tuple[int, ...] = (1, 2),
    data_dir: str | Path | None = None,
    seed: int = 0,
) -> DatasetDict:
    """A DatasetDict of clips ("video": frames x H x W x 3 uint8, "label": direction) from held-apart glyphs.

    The test split holds `test_size` clips of glyphs never seen in training, each followed by its reversed clip
    (so 2 * test_size clips): reversed pairs, on which any order-free model is exactly at chance between a
    direction and its opposite.
    """
    glyphs = load_glyphs(source, data_dir, seed)
    settings = dict(num_frames=num_frames, canvas_size=canvas_size, glyph_size=glyph_size, speeds=speeds)
    train = make_clips(glyphs["train"], train_size, **settings, seed=seed)
    test = make_clips(glyphs["test"], test_size, **settings, seed=seed + 1, with_reversed=True)
    features = Features(
        video=Array4D(shape=(num_frames, canvas_size, canvas_size, 3), dtype="uint8"),
        label=ClassLabel(names=DIRECTION_NAMES),
    )
    return DatasetDict(
        train=Dataset.from_dict({"video": train[0], "label": train[1]}, features=features),
        test=Dataset.from_dict({"video": test[0], "label": test[1]}, features=features),
    )


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 8) -> Path:
    """Write (frames, H, W, 3) uint8 RGB frames as an H.264 .mp4 with PyAV (H and W even, as yuv420p needs)."""
    import av

    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"Expected (frames, even height, even width, 3) RGB frames, got {frames.shape}.")
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        stream.options = {"crf": "0"}  # near-lossless: decoded pixels are within 1 grey level of the written ones
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


__all__ = ["DIRECTION_NAMES", "load_moving_glyphs", "make_clips", "opposite", "render_clip", "write_mp4"]
