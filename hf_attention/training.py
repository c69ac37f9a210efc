"""Fine-tuning an image classifier with `transformers.Trainer` on a `datasets.DatasetDict`.

The image processor is transformers' own `ViTImageProcessor` (its PIL backend, so torchvision is not needed),
saved next to the model so that `pipeline("image-classification", model=output_dir)` works.
"""

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
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

    def lines(self) -> list[str]:
        return [
            f"dataset           {self.dataset}",
            f"train / eval size {self.train_size} / {self.eval_size}",
            f"parameters        {self.num_parameters:,}",
            f"epochs            {self.epochs:g}",
            f"test accuracy     {self.accuracy:.4f}",
            f"test loss         {self.eval_loss:.4f}",
            f"training time     {self.train_seconds:.1f} s",
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


def attach_preprocessing(dataset: DatasetDict, processor: ViTImageProcessorPil, shift: float = 0.0) -> DatasetDict:
    """Images -> pixel_values on the fly; training images are randomly shifted by up to `shift` of their size."""

    def preprocessor(max_shift: float):
        def preprocess(batch):
            # transformers' image pipeline hands the model RGB images, so greyscale data is trained as RGB too
            images = [image.convert("RGB") for image in batch["image"]]
            if max_shift > 0:
                images = [random_shift(image, max_shift) for image in images]
            pixel_values = processor(images, return_tensors="pt")["pixel_values"]
            return {"pixel_values": pixel_values, "labels": torch.tensor(batch["label"])}

        return preprocess

    return DatasetDict(
        train=dataset["train"].with_transform(preprocessor(shift)),
        test=dataset["test"].with_transform(preprocessor(0.0)),
    )


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.stack([example["labels"] for example in examples]),
    }


def accuracy(eval_prediction) -> dict[str, float]:
    logits, labels = eval_prediction
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def train_image_classifier(
    model: PreTrainedModel,
    processor: ViTImageProcessorPil,
    dataset: DatasetDict,
    dataset_name: str,
    training_args: TrainingArguments,
    shift: float = 0.0,
) -> TrainingSummary:
    """Train on dataset["train"], evaluate on dataset["test"], save model + processor to the output dir."""
    prepared = attach_preprocessing(dataset, processor, shift)
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
    model.save_pretrained(training_args.output_dir)  # not trainer.save_model: it also pickles training_args.bin
    processor.save_pretrained(training_args.output_dir)
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
    )
    summary.save()
    return summary
