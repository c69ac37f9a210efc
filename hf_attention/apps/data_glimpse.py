"""Datasets of the glimpse model: digits, Fashion-MNIST 28x28, and translated Fashion-MNIST.

Translated Fashion-MNIST follows the paper's "translated MNIST": each 28x28 image pasted at a random place on a
black 60x60 canvas, so that the object is small and somewhere, and a model must find it. The canvases are built on
the fly: a training image lands at a new place every time it is drawn; a test image always lands at the same place
(an "offset" column drawn once from the seed), so every evaluation sees the same test set.
"""

from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict
from PIL import Image

from .data import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, _from_arrays, _idx_file, load_image_dataset, read_idx

TRANSLATED_FASHION_MNIST = "translated-fashion-mnist"
CANVAS_SIZE = 60
FASHION_MNIST_SIZE = 28


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
    "TRANSLATED_FASHION_MNIST",
    "glimpse_preprocessing",
    "load_glimpse_dataset",
    "place_on_canvas",
    "prepare_glimpse_dataset",
    "random_offsets",
]
