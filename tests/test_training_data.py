"""The in-memory image path of `train_image_classifier`: the same pixels and the same shifts as the lazy path."""

import random

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

from hf_attention.training import (
    attach_preprocessing,
    fits_in_memory,
    make_image_processor,
    process_in_memory,
    random_shift,
    shift_pixels,
)


def tiny_image_dataset(num_images: int = 6) -> DatasetDict:
    generator = np.random.default_rng(0)
    images = list(generator.integers(0, 256, size=(num_images, 8, 8), dtype=np.uint8))
    features = Features({"image": Image(), "label": ClassLabel(names=["a", "b", "c"])})
    split = Dataset.from_dict({"image": images, "label": [i % 3 for i in range(num_images)]}, features=features)
    return DatasetDict(train=split, test=split)


def test_processed_once_equals_processed_on_the_fly():
    dataset, processor = tiny_image_dataset(), make_image_processor(8)
    assert fits_in_memory(dataset, processor)
    in_memory = process_in_memory(dataset, processor, chunk_size=4)  # two chunks
    lazy = attach_preprocessing(dataset, processor)
    for split in ("train", "test"):
        expected = lazy[split][:]
        torch.testing.assert_close(in_memory[split].pixel_values, expected["pixel_values"])
        assert in_memory[split].labels.tolist() == expected["labels"].tolist() == [0, 1, 2, 0, 1, 2]


def test_tensor_shift_is_the_pil_shift_through_the_processor():
    dataset, processor = tiny_image_dataset(), make_image_processor(8)
    image = dataset["train"][1]["image"].convert("RGB")
    pixels = processor(image, return_tensors="pt")["pixel_values"][0]
    for seed in range(6):
        random.seed(seed)
        expected = processor(random_shift(image, 0.25), return_tensors="pt")["pixel_values"][0]
        random.seed(seed)
        shifted = shift_pixels(pixels, 0.25)
        torch.testing.assert_close(shifted, expected)
    assert not torch.equal(shifted, pixels)  # seed 5 draws a non-zero shift
