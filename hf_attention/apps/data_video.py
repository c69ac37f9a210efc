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
import torch
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


# Distractor clips: what a frame's class token must keep depends on the other frames
DISTRACTOR_DATASETS = {"distractor-fashion-mnist": "fashion-mnist", "distractor-digits": "digits"}


def glyph_tensor(glyphs: np.ndarray, glyph_size: int) -> torch.Tensor:
    """(N, glyph_size, glyph_size) float glyphs in [0, 1], resized with antialiasing in one call."""
    images = torch.from_numpy(np.array(glyphs)).float()[:, None] / 255.0
    resized = torch.nn.functional.interpolate(images, size=(glyph_size, glyph_size), mode="bilinear", antialias=True)
    return resized[:, 0].clamp(0.0, 1.0)


def place(glyphs: torch.Tensor, positions: torch.Tensor, canvas_size: int) -> torch.Tensor:
    """(N, frames, canvas, canvas): glyph n with its top-left corner at positions[n, t] = (y, x) in frame t, wrapping
    around the canvas (a torus), by one gather over all clips and frames."""
    canvas = glyphs.new_zeros(glyphs.shape[0], canvas_size, canvas_size)
    canvas[:, : glyphs.shape[1], : glyphs.shape[2]] = glyphs
    grid = torch.arange(canvas_size)
    rows = (grid - positions[..., :1]) % canvas_size  # (N, F, canvas): source row of every output row
    cols = (grid - positions[..., 1:]) % canvas_size
    index = torch.arange(glyphs.shape[0])[:, None, None, None]
    return canvas[index, rows[..., :, None], cols[..., None, :]]


def make_distractor_clips(
    glyphs: torch.Tensor,
    num_clips: int,
    generator: torch.Generator,
    *,
    num_frames: int = 8,
    canvas_size: int = 32,
    speeds: tuple[int, ...] = (1, 2),
    twin_probability: float = 1.0,
    wrap: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`num_clips` clips (N, frames, canvas, canvas) in [0, 1] and their labels (N,), all drawn in torch.

    Each clip shows two copies of one glyph: one moves coherently (a random start, one of the 8 `DIRECTIONS`, a speed
    of `speeds` pixels a frame), its twin jumps to a uniformly random place every frame. The label is the coherent
    glyph's direction. Both copies are identical, so no frame says which is which: only the frames together (the
    twin's places do not line up) tell the mover from the jumper, and only their order gives the sign of the motion.
    Where the copies overlap, the brighter pixel wins. Each clip shows the twin with probability `twin_probability`
    (a curriculum's early clips show the mover alone); the random draws are the same whatever it is.
    `wrap=True` puts both copies on a torus (any start, the mover leaves on one side and comes back on the other);
    `wrap=False` keeps both whole inside the canvas: the mover's start is uniform over the places from which its whole
    path fits, so where it is in a frame is a straight line in time (but its first and last places lean towards the
    label's edges), and the twin jumps among the places where it fits.
    """
    if not 0.0 <= twin_probability <= 1.0:
        raise ValueError(f"twin_probability is a probability, in [0, 1], got {twin_probability}.")
    if num_clips <= 0 or num_frames < 3:
        raise ValueError(f"Need at least one clip of at least 3 frames, got {num_clips} clips of {num_frames} frames.")
    if glyphs.shape[-1] > canvas_size:
        raise ValueError(f"Glyphs of {glyphs.shape[-1]} px do not fit a canvas of canvas_size={canvas_size}.")
    labels = torch.randint(len(DIRECTIONS), (num_clips,), generator=generator)
    steps = torch.tensor(list(DIRECTIONS.values()))[labels]  # (N, 2) as (dy, dx)
    speed = torch.tensor(speeds)[torch.randint(len(speeds), (num_clips,), generator=generator)]
    time = torch.arange(num_frames)[None, :, None]
    path = (steps * speed[:, None])[:, None, :] * time  # (N, frames, 2), from a start at 0
    free = canvas_size if wrap else canvas_size - glyphs.shape[-1] + 1  # places a top-left corner can take
    span = path.amax(1, keepdim=True) - path.amin(1, keepdim=True)  # 0 on a torus: any start is fine
    if not wrap and (span >= free).any():
        raise ValueError(
            f"A path of {int(span.max())} px does not fit a canvas of canvas_size={canvas_size} with glyphs of "
            f"{glyphs.shape[-1]} px: use a larger canvas, smaller glyphs, slower speeds or wrap=True."
        )
    span = span * (not wrap)
    start = (torch.rand(num_clips, 1, 2, generator=generator) * (free - span)).long() - path.amin(1, keepdim=True)
    mover = start + path
    jumper = (torch.rand(num_clips, num_frames, 2, generator=generator) * free).long()
    chosen = glyphs[torch.randint(len(glyphs), (num_clips,), generator=generator)]
    has_twin = torch.rand(num_clips, generator=generator) < twin_probability
    twins = place(chosen, jumper, canvas_size) * has_twin[:, None, None, None]
    return torch.maximum(place(chosen, mover, canvas_size), twins), labels


def with_reversed(clips: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every clip followed by itself played backwards, labelled with the opposite direction: 2N clips."""
    paired = torch.stack([clips, clips.flip(1)], dim=1).flatten(0, 1)
    opposites = (labels + len(DIRECTIONS) // 2) % len(DIRECTIONS)
    return paired, torch.stack([labels, opposites], dim=1).flatten()


def to_pixel_values(clips: torch.Tensor) -> torch.Tensor:
    """Clips in [0, 1] (N, frames, H, W) -> pixel values (N, frames, 3, H, W) in [-1, 1]: what `make_video_processor`
    gives for the same uint8 clips at the canvas size (grey repeated over RGB, mean 0.5, std 0.5)."""
    grey = (clips * 255.0).round() / 255.0  # the uint8 values a saved clip would hold
    return ((grey - 0.5) / 0.5)[:, :, None].expand(-1, -1, 3, -1, -1)


class DistractorClips(torch.utils.data.Dataset):
    """Training clips drawn afresh for every batch in torch (no clip is seen twice), `size` clips per epoch.

    Trainer's DataLoader asks for a batch of indices at once (`__getitems__`); the indices only set the batch size,
    the clips come from the dataset's own generator, seeded by `seed`, so a run is reproducible.
    `twin_ramp_clips` > 0 is a curriculum: the chance that a clip shows the twin rises linearly from 0 to 1 over the
    first `twin_ramp_clips` clips drawn (per batch, by the clips drawn before it), then stays 1.
    """

    def __init__(self, glyphs: torch.Tensor, size: int, seed: int, twin_ramp_clips: int = 0, **settings):
        if twin_ramp_clips < 0:
            raise ValueError(f"twin_ramp_clips counts clips, >= 0, got {twin_ramp_clips}.")
        self.glyphs, self.size, self.settings = glyphs, size, settings
        self.twin_ramp_clips, self.clips_drawn = twin_ramp_clips, 0
        self.generator = torch.Generator().manual_seed(seed)

    def twin_probability(self) -> float:
        """The chance that the next batch's clips show the twin."""
        return min(1.0, self.clips_drawn / self.twin_ramp_clips) if self.twin_ramp_clips else 1.0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        probability = self.twin_probability()
        clips, labels = make_distractor_clips(
            self.glyphs, len(indices), self.generator, **self.settings, twin_probability=probability
        )
        self.clips_drawn += len(indices)
        pixel_values = to_pixel_values(clips)
        return [{"pixel_values": clip, "labels": label} for clip, label in zip(pixel_values, labels, strict=True)]


class FixedClips(torch.utils.data.Dataset):
    """Clips held as one tensor of pixel values (the held-out set)."""

    def __init__(self, pixel_values: torch.Tensor, labels: torch.Tensor):
        self.pixel_values, self.labels = pixel_values, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixel_values[index], "labels": self.labels[index]}


def load_distractor_clips(
    dataset: str = "distractor-fashion-mnist",
    *,
    train_size: int = 4096,
    test_size: int = 256,
    num_frames: int = 8,
    canvas_size: int = 32,
    glyph_size: int = 12,
    speeds: tuple[int, ...] = (1, 2),
    data_dir: str | Path | None = None,
    seed: int = 0,
    twin_ramp_clips: int = 0,
    wrap: bool = True,
) -> dict[str, torch.utils.data.Dataset]:
    """Train clips (fresh every batch, `train_size` per epoch, glyphs of the training split; the twin phased in over
    the first `twin_ramp_clips`, see `DistractorClips`) and `test_size` fixed held-out clips of test-split glyphs, all
    with their twin, each followed by its reverse (2 * test_size clips). `wrap`: on a torus, or whole inside the canvas
    (see `make_distractor_clips`), for training and held-out clips alike."""
    if dataset not in DISTRACTOR_DATASETS:
        raise ValueError(f"Distractor clips are built from one of {list(DISTRACTOR_DATASETS)}, got {dataset!r}.")
    arrays = load_glyphs(DISTRACTOR_DATASETS[dataset], data_dir, seed)
    glyphs = {split: glyph_tensor(images, glyph_size) for split, images in arrays.items()}
    settings = dict(num_frames=num_frames, canvas_size=canvas_size, speeds=speeds, wrap=wrap)
    # the test set depends on the data only, not on the training seed: every seed is scored on the same clips
    test_generator = torch.Generator().manual_seed(10_000)
    test = make_distractor_clips(glyphs["test"], test_size, test_generator, **settings)
    test_clips, test_labels = with_reversed(*test)
    return {
        "train": DistractorClips(glyphs["train"], train_size, seed, twin_ramp_clips, **settings),
        "test": FixedClips(to_pixel_values(test_clips), test_labels),
        "test_clips": test_clips,
    }


__all__ = [
    "DIRECTION_NAMES",
    "DISTRACTOR_DATASETS",
    "DistractorClips",
    "load_distractor_clips",
    "load_moving_glyphs",
    "make_clips",
    "make_distractor_clips",
    "opposite",
    "render_clip",
    "with_reversed",
    "write_mp4",
]
