"""Fine-tuning an image classifier with `transformers.Trainer` on a `datasets.DatasetDict`.

The image processor is transformers' own `ViTImageProcessor` (its PIL backend, so torchvision is not needed),
saved next to the model so that `pipeline("image-classification", model=output_dir)` works.
"""

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import DatasetDict
from PIL import Image
from transformers import PreTrainedModel, Trainer, TrainingArguments, ViTImageProcessorPil

# written next to the trained model; `hf-attention push` puts its dataset and accuracy on the model card
TRAINING_SUMMARY_FILE = "training_summary.json"


@dataclass
class TrainingSummary:
    dataset: str
    train_size: int
    eval_size: int
    accuracy: float
    eval_loss: float
    train_seconds: float
    epochs: float
    num_parameters: int
    output_dir: str
    num_processes: int = 1

    def lines(self) -> list[str]:
        return [
            f"dataset           {self.dataset}",
            f"train / eval size {self.train_size} / {self.eval_size}",
            f"parameters        {self.num_parameters:,}",
            f"epochs            {self.epochs:g}",
            f"test accuracy     {self.accuracy:.4f}",
            f"test loss         {self.eval_loss:.4f}",
            f"training time     {self.train_seconds:.1f} s",
            *([f"processes         {self.num_processes}"] if self.num_processes > 1 else []),
            f"saved to          {self.output_dir}",
        ]

    def save(self) -> None:
        """Write the results (not the local path) to TRAINING_SUMMARY_FILE in the output dir."""
        record = {name: value for name, value in asdict(self).items() if name != "output_dir"}
        (Path(self.output_dir) / TRAINING_SUMMARY_FILE).write_text(json.dumps(record, indent=2) + "\n")


def make_image_processor(image_size: int) -> ViTImageProcessorPil:
    """Resize RGB images to `image_size`, scale to [0, 1], normalise to [-1, 1]."""
    return ViTImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )


def random_shift(image: Image.Image, max_fraction: float) -> Image.Image:
    """Translate by up to `max_fraction` of the size in each direction, filling with the corner colour."""
    max_x, max_y = round(image.width * max_fraction), round(image.height * max_fraction)
    dx, dy = random.randint(-max_x, max_x), random.randint(-max_y, max_y)
    return image.transform(image.size, Image.AFFINE, (1, 0, dx, 0, 1, dy), fillcolor=image.getpixel((0, 0)))


def attach_preprocessing(
    dataset: DatasetDict, processor: ViTImageProcessorPil, shift: float = 0.0, augment: Callable | None = None
) -> DatasetDict:
    """Images -> pixel_values on the fly; training images are randomly shifted by up to `shift` of their size, then
    go through `augment` (a `RandomAffine`, say)."""

    def preprocessor(max_shift: float, augment: Callable | None):
        def preprocess(batch):
            # transformers' image pipeline hands the model RGB images, so greyscale data is trained as RGB too
            images = [image.convert("RGB") for image in batch["image"]]
            if max_shift > 0:
                images = [random_shift(image, max_shift) for image in images]
            pixel_values = processor(images, return_tensors="pt")["pixel_values"]
            if augment is not None:
                pixel_values = augment(pixel_values)
            return {"pixel_values": pixel_values, "labels": torch.tensor(batch["label"])}

        return preprocess

    return DatasetDict(
        train=dataset["train"].with_transform(preprocessor(shift, augment)),
        test=dataset["test"].with_transform(preprocessor(0.0, None)),
    )


# Below this size (float32 pixels of both splits) the images go through the image processor once, up front, instead of
# once per epoch: on 8x8 digits the processor costs more per batch than the model's training step.
IN_MEMORY_LIMIT_BYTES = 2**30


class ProcessedImages(torch.utils.data.Dataset):
    """Images (or clips) already through the processor, held as one tensor; with `max_shift` each item is translated at
    random by up to that fraction of its size (the uncovered border takes the top-left pixel's value, as
    `random_shift` does), then goes through `augment` if given."""

    def __init__(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor,
        max_shift: float = 0.0,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.pixel_values, self.labels, self.max_shift, self.augment = pixel_values, labels, max_shift, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """A batch at once (torch's DataLoader asks for it so): `augment` then runs once on the whole batch."""
        pixels = self.pixel_values[indices]
        if self.max_shift > 0:
            pixels = torch.stack([shift_pixels(image, self.max_shift) for image in pixels])
        if self.augment is not None:
            pixels = self.augment(pixels)
        labels = self.labels[indices]
        return [{"pixel_values": image, "labels": label} for image, label in zip(pixels, labels, strict=True)]


@dataclass(frozen=True)
class RandomAffine:
    """A random rotation by up to `degrees` either way, scaling by up to `scale` either way (0.1: 0.9x to 1.1x) and
    translation by up to `translate` of the size, resampled bilinearly; with `horizontal_flip` half the images are
    also mirrored. On a batch (batch, channels, height, width), each image drawn on its own, or on one image; the
    uncovered border takes each image's top-left pixel value.

    Sub-pixel moves are what small images need: a whole-pixel `--shift` moves an 8x8 digit by an eighth of its size.
    (torchvision's RandomAffine does the same, but torchvision does not import next to the CPU torch we pin.)
    """

    degrees: float = 0.0
    translate: float = 0.0
    scale: float = 0.0
    horizontal_flip: bool = False

    def __post_init__(self):
        for name, high in (("degrees", 180.0), ("translate", 1.0), ("scale", 1.0)):
            if not 0.0 <= getattr(self, name) < high:
                raise ValueError(f"RandomAffine's {name} must be in [0, {high}), got {getattr(self, name)}.")

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim == 3:
            return self(pixels[None])[0]
        batch_size = len(pixels)

        def uniform(high: float, *shape: int) -> torch.Tensor:
            return (torch.rand(batch_size, *shape) * 2 - 1) * high

        return self.apply(
            pixels,
            degrees=uniform(self.degrees),
            zoom=1.0 + uniform(self.scale),
            shift=uniform(self.translate, 2),
            mirror=torch.rand(batch_size) < 0.5 if self.horizontal_flip else torch.zeros(batch_size, dtype=torch.bool),
        )

    @staticmethod
    def apply(
        pixels: torch.Tensor, degrees: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor, mirror: torch.Tensor
    ) -> torch.Tensor:
        """Image i of the batch rotated by `degrees[i]`, magnified `zoom[i]` times, moved by `shift[i]` (x, y, as
        fractions of the size) and mirrored left-right where `mirror[i]`."""
        mirrored = torch.where(mirror[:, None, None, None], pixels.flip(-1), pixels)
        if not (degrees.any() or shift.any() or (zoom != 1).any()):
            return mirrored  # exact, and no resampling cost
        height, width = pixels.shape[-2:]
        angles = torch.deg2rad(degrees.float())
        cos, sin = angles.cos() / zoom, angles.sin() / zoom
        # affine_grid maps output to input in coordinates normalised to [-1, 1] per axis, hence the aspect factors
        theta = torch.stack(
            [
                torch.stack([cos, -sin * height / width, -2 * shift[:, 0]], dim=-1),
                torch.stack([sin * width / height, cos, -2 * shift[:, 1]], dim=-1),
            ],
            dim=1,
        )
        background = mirrored[:, :, :1, :1]
        grid = F.affine_grid(theta, list(pixels.shape), align_corners=False).to(pixels.dtype)
        return F.grid_sample(mirrored - background, grid, mode="bilinear", align_corners=False) + background


def shift_pixels(pixels: torch.Tensor, max_fraction: float) -> torch.Tensor:
    """`random_shift` on a (channels, height, width) tensor: the same draws give the same image (output pixel
    (y, x) is input pixel (y + dy, x + dx), the border takes the top-left value)."""
    height, width = pixels.shape[-2:]
    max_x, max_y = round(width * max_fraction), round(height * max_fraction)
    dx, dy = random.randint(-max_x, max_x), random.randint(-max_y, max_y)
    shifted = pixels[:, :1, :1].expand_as(pixels).clone()
    shifted[:, max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)] = pixels[
        :, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)
    ]
    return shifted


def process_in_memory(
    dataset: DatasetDict,
    processor: ViTImageProcessorPil,
    shift: float = 0.0,
    augment: Callable | None = None,
    chunk_size: int = 2048,
) -> dict[str, ProcessedImages]:
    """Both splits through the processor once (RGB, as transformers' image pipeline feeds the model); the training
    split is shifted and augmented per item, each time it is read."""
    splits = {}
    for split in ("train", "test"):
        chunks = []
        for start in range(0, len(dataset[split]), chunk_size):
            images = dataset[split][start : start + chunk_size]["image"]
            chunks.append(processor([image.convert("RGB") for image in images], return_tensors="pt")["pixel_values"])
        labels = torch.tensor(dataset[split]["label"])
        if split == "train":
            splits[split] = ProcessedImages(torch.cat(chunks), labels, shift, augment)
        else:
            splits[split] = ProcessedImages(torch.cat(chunks), labels)
    return splits


def fits_in_memory(dataset: DatasetDict, processor: ViTImageProcessorPil) -> bool:
    size = processor.size
    num_images = len(dataset["train"]) + len(dataset["test"])
    return num_images * 3 * size["height"] * size["width"] * 4 <= IN_MEMORY_LIMIT_BYTES


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.stack([example["labels"] for example in examples]),
    }


def accuracy(eval_prediction) -> dict[str, float]:
    logits, labels = eval_prediction
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def training_arguments(args, output_dir: str | Path, **overrides) -> TrainingArguments:
    """The `TrainingArguments` every `hf-attention train` job shares, from its common flags; `overrides` win.

    `use_cpu` is set where no accelerator is present: under `torchrun` / `accelerate launch --multi_gpu` on CPUs,
    transformers otherwise sees one process instead of a distributed run.
    """
    settings = dict(
        output_dir=str(output_dir),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=max(args.batch_size, 256),
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        label_smoothing_factor=getattr(args, "label_smoothing", None) or 0.0,
        warmup_steps=args.warmup_ratio,
        lr_scheduler_type="cosine",
        optim="adamw_torch_fused",  # one kernel for all parameters: on small models the per-tensor loop costs ~15%
        bf16=getattr(args, "bf16", False),
        eval_strategy="no",
        save_strategy="no",
        logging_steps=50,
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=False,
        seed=args.seed,
        dataloader_num_workers=0,
        use_cpu=not (torch.cuda.is_available() or torch.xpu.is_available() or torch.backends.mps.is_available()),
    )
    return TrainingArguments(**{**settings, **overrides})


def save_for_pipeline(trainer: Trainer, processor, output_dir: str | Path) -> None:
    """The trained model (safetensors, with its code) and its processor, as `pipeline(...)` loads them.

    Written once, by the main process, when all processes are done; not `trainer.save_model`, which also pickles
    training_args.bin.
    """
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
    trainer.accelerator.wait_for_everyone()


def train_image_classifier(
    model: PreTrainedModel,
    processor: ViTImageProcessorPil,
    dataset: DatasetDict,
    dataset_name: str,
    training_args: TrainingArguments,
    shift: float = 0.0,
    augment: Callable | None = None,
) -> TrainingSummary:
    """Train on dataset["train"] (shifted and augmented), evaluate on dataset["test"], save model + processor to the
    output dir."""
    if fits_in_memory(dataset, processor):
        prepared = process_in_memory(dataset, processor, shift, augment)
    else:
        prepared = attach_preprocessing(dataset, processor, shift, augment)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=prepared["train"],
        eval_dataset=prepared["test"],
        data_collator=collate,
        compute_metrics=accuracy,
    )
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    metrics = trainer.evaluate()
    save_for_pipeline(trainer, processor, training_args.output_dir)
    summary = TrainingSummary(
        dataset=dataset_name,
        train_size=len(dataset["train"]),
        eval_size=len(dataset["test"]),
        accuracy=metrics["eval_accuracy"],
        eval_loss=metrics["eval_loss"],
        train_seconds=train_seconds,
        epochs=training_args.num_train_epochs,
        num_parameters=model.num_parameters(),
        output_dir=str(Path(training_args.output_dir).resolve()),
        num_processes=training_args.world_size,
    )
    if trainer.is_world_process_zero():
        summary.save()
    return summary
