"""The image path of `train_image_classifier`: in memory or on the fly, the same pixels and the same shifts; the
`RandomAffine` augmentation against exact pixel moves."""

import random
import re

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

from hf_attention.apps.cli import DATASET_DEFAULTS, _augmentation, _with_dataset_defaults, build_parser
from hf_attention.apps.training import (
    RandomAffine,
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


def test_affine_moves_that_land_on_the_pixel_grid_are_exact():
    images = torch.randn(4, 3, 8, 8)
    background = images[:, :, :1, :1]
    no_mirror = torch.zeros(4, dtype=torch.bool)

    def moved(degrees=torch.zeros(4), zoom=torch.ones(4), shift=torch.zeros(4, 2), mirror=no_mirror):  # noqa: B008
        return RandomAffine.apply(images, degrees, zoom, shift, mirror)

    assert torch.equal(moved(), images)
    quarter_turn = moved(degrees=torch.full((4,), 90.0))
    torch.testing.assert_close(quarter_turn, torch.rot90(images, 1, dims=(2, 3)), atol=1e-5, rtol=0)
    one_right_two_up = background.expand_as(images).clone()  # 1/8 and -2/8 of an 8-pixel image
    one_right_two_up[:, :, :-2, 1:] = images[:, :, 2:, :-1]
    torch.testing.assert_close(moved(shift=torch.tensor([[0.125, -0.25]] * 4)), one_right_two_up)
    mirror = torch.tensor([True, False, True, False])
    torch.testing.assert_close(moved(mirror=mirror), torch.where(mirror[:, None, None, None], images.flip(-1), images))
    half_size = moved(zoom=torch.full((4,), 0.5))  # each 2x2 block averaged into the middle 4x4, background all round
    torch.testing.assert_close(half_size[:, :, :2], background.expand(-1, -1, 2, 8))
    blocks = images.unflatten(2, (4, 2)).unflatten(4, (4, 2)).mean((3, 5))
    torch.testing.assert_close(half_size[:, :, 2:6, 2:6], blocks, atol=1e-5, rtol=0)


def test_each_image_of_a_batch_draws_its_own_augmentation():
    torch.manual_seed(0)
    images = torch.randn(1, 3, 8, 8).expand(64, -1, -1, -1)
    flipped = RandomAffine(horizontal_flip=True)(images)
    is_mirrored = [torch.equal(image, images[0].flip(-1)) for image in flipped]
    assert all(mirrored or torch.equal(image, images[0]) for image, mirrored in zip(flipped, is_mirrored, strict=True))
    assert 16 < sum(is_mirrored) < 48
    rotated = RandomAffine(degrees=10.0)(images)
    assert len({round(float(image.sum()), 4) for image in rotated}) == 64
    assert RandomAffine(degrees=10.0)(images[0]).shape == (3, 8, 8)  # one image, unbatched


def test_only_the_training_split_is_augmented_in_memory_and_on_the_fly():
    dataset, processor = tiny_image_dataset(), make_image_processor(8)
    flip = RandomAffine(horizontal_flip=True)

    def read(split) -> torch.Tensor:  # one batch, as torch's DataLoader fetches it
        return torch.stack([item["pixel_values"] for item in split.__getitems__(list(range(6)))])

    clean = process_in_memory(dataset, processor)
    torch.manual_seed(0)
    on_the_fly = attach_preprocessing(dataset, processor, 0.0, flip)
    for prepared in (process_in_memory(dataset, processor, augment=flip), on_the_fly):
        pairs = list(zip(read(prepared["train"]), read(clean["train"]), strict=True))
        mirrored = [torch.equal(image, source.flip(-1)) for image, source in pairs]
        assert any(mirrored) and not all(mirrored)
        assert all(m or torch.equal(image, source) for (image, source), m in zip(pairs, mirrored, strict=True))
        torch.testing.assert_close(read(prepared["test"]), read(clean["test"]))


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"degrees": 180.0}, "degrees must be in [0, 180.0)"), ({"scale": -0.1}, "scale must be in [0, 1.0)")],
)
def test_impossible_affine_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        RandomAffine(**settings)


def test_augmentation_flags_default_per_dataset_and_are_off_elsewhere():
    def augmentation(*argv):
        args = build_parser().parse_args(["train", *argv])
        if args.model == "vit":
            args = _with_dataset_defaults(args, DATASET_DEFAULTS)
        return _augmentation(args)

    assert augmentation("vit") == RandomAffine(degrees=10.0, translate=0.06, scale=0.1)
    assert augmentation("vit", "--rotation", "0", "--translate", "0", "--scale", "0") is None
    assert augmentation("vit", "--dataset", "fashion-mnist").horizontal_flip
    assert augmentation("attention-cnn") is None
    assert augmentation("attention-cnn", "--horizontal-flip") == RandomAffine(horizontal_flip=True)
    with pytest.raises(SystemExit):
        augmentation("vit", "--rotation", "200")
