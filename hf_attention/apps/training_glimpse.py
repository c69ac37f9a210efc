"""`hf-attention train glimpse`: the recurrent attention model trained with REINFORCE through `transformers.Trainer`.

The model's `forward` computes its whole loss (cross-entropy + baseline MSE + REINFORCE) from `labels`, so the
Trainer here is stock except that it logs the mean reward (the training accuracy of the sampled rollouts) next to
the loss. The output folder holds the model, transformers' `ViTImageProcessor` (so `pipeline("image-
classification", model=folder)` works), `training_summary.json` and `glimpse_paths.png`, the glimpses of the
trained model over test images.
"""

import argparse
import time
from pathlib import Path

import torch
from transformers import Trainer

from .data_glimpse import TRANSLATED_FASHION_MNIST

PICTURE_FILE = "glimpse_paths.png"
DATASETS = ("digits", "fashion-mnist", TRANSLATED_FASHION_MNIST)
# dataset -> defaults that fit it (the paper's settings for 28x28 and translated 60x60); an explicit flag wins
GLIMPSE_DATASET_DEFAULTS = {
    "digits": dict(image_size=8, patch_size=2, num_scales=2, num_glimpses=4, epochs=30, batch_size=32),
    "fashion-mnist": dict(image_size=28, patch_size=8, num_scales=1, num_glimpses=6, epochs=5, batch_size=64),
    TRANSLATED_FASHION_MNIST: dict(image_size=60, patch_size=12, num_scales=3, num_glimpses=8, epochs=5, batch_size=64),
    None: dict(image_size=64, patch_size=12, num_scales=3, num_glimpses=8, epochs=3, batch_size=32),
}


def add_glimpse_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `train glimpse` besides the common ones (`cli._add_training_arguments`)."""
    parser.set_defaults(dropout=0.0, attn_implementation=None, learning_rate=1e-3)
    parser.add_argument("--output-dir", help="where the model, processor and picture go (outputs/glimpse-<dataset>)")
    parser.add_argument("--test-size", type=int, help="evaluate on a fixed random subset of this many test images")
    parser.add_argument("--patch-size", type=int, help="side of the finest retina patch, in pixels")
    parser.add_argument("--num-scales", type=int, help="patches per glimpse, each twice as wide as the previous")
    parser.add_argument("--num-glimpses", type=int, help="glimpses before the classification")
    parser.add_argument("--hidden-size", type=int, default=256, help="width of the recurrent core")
    parser.add_argument("--glimpse-hidden-size", type=int, default=128, help="width of the 'what' pathway")
    parser.add_argument("--location-hidden-size", type=int, default=128, help="width of the 'where' pathway")
    parser.add_argument("--glimpse-embedding-size", type=int, default=256, help="width of the fused glimpse")
    parser.add_argument("--core", choices=("rnn", "gru", "lstm"), default="rnn", help="the recurrent core")
    parser.add_argument("--location-std", type=float, default=0.1, help="std of the Gaussian location policy")
    parser.add_argument(
        "--location-policy", choices=("learned", "random"), default="learned", help="random: the ablation"
    )
    parser.add_argument("--reinforce-weight", type=float, default=1.0, help="weight of the REINFORCE term")
    parser.add_argument(
        "--monte-carlo-rollouts", type=int, default=1, help="average this many sampled rollouts in eval (DRAM)"
    )
    parser.add_argument("--num-pictures", type=int, default=8, help="test images in glimpse_paths.png (0: none)")


class RewardLoggingTrainer(Trainer):
    """Trainer that adds `reward`, the mean reward of the training rollouts since the last log, next to `loss`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reward_sum, self._reward_count = 0.0, 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        rewards = outputs.get("rewards")
        if model.training and rewards is not None and rewards.numel():
            self._reward_sum += float(rewards[:, -1].mean())
            self._reward_count += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._reward_count:
            logs["reward"] = round(self._reward_sum / self._reward_count, 4)
            self._reward_sum, self._reward_count = 0.0, 0
        super().log(logs, start_time)


def build_config(args: argparse.Namespace, labels: dict):
    from ..configuration_glimpse import RecurrentAttentionConfig

    return RecurrentAttentionConfig(
        image_size=args.image_size,
        num_channels=3,  # the image pipeline hands the model RGB images
        patch_size=args.patch_size,
        num_scales=args.num_scales,
        num_glimpses=args.num_glimpses,
        glimpse_hidden_size=args.glimpse_hidden_size,
        location_hidden_size=args.location_hidden_size,
        glimpse_embedding_size=args.glimpse_embedding_size,
        hidden_size=args.hidden_size,
        core_type=args.core,
        location_std=args.location_std,
        location_policy=args.location_policy,
        reinforce_weight=args.reinforce_weight,
        num_monte_carlo_rollouts=args.monte_carlo_rollouts,
        hidden_dropout_prob=args.dropout,
        **labels,
    )


def _check_arguments(args: argparse.Namespace) -> argparse.Namespace:
    if args.attn_implementation is not None:
        raise ValueError(
            "--attn-implementation does not apply to `train glimpse`: the glimpse model has no dot-product attention "
            "(its attention is where the glimpses go)."
        )
    defaults = GLIMPSE_DATASET_DEFAULTS.get(args.dataset, GLIMPSE_DATASET_DEFAULTS[None])
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.dataset == TRANSLATED_FASHION_MNIST and args.image_size != 60:
        raise ValueError(f"{TRANSLATED_FASHION_MNIST} is built on 60x60 canvases; --image-size must be 60.")
    return args


def fit_glimpse(args: argparse.Namespace, dataset=None):
    """Train, evaluate on the held-out test split, save folder + picture; returns (TrainingSummary, model).

    `dataset`: an already loaded `load_glimpse_dataset(args.dataset, ...)`, so that a sweep loads it once.
    """
    from transformers import set_seed

    from ..modeling_glimpse import RecurrentAttentionForImageClassification
    from .data_glimpse import load_glimpse_dataset, prepare_glimpse_dataset
    from .training import (
        TrainingSummary,
        accuracy,
        collate,
        make_image_processor,
        save_for_pipeline,
        training_arguments,
    )

    args = _check_arguments(args)
    set_seed(args.seed)
    if dataset is None:
        dataset = load_glimpse_dataset(args.dataset, args.data_dir, args.seed, args.train_size, args.test_size)
    class_names = dataset["train"].features["label"].names
    labels = {"id2label": dict(enumerate(class_names)), "label2id": {name: i for i, name in enumerate(class_names)}}
    model = RecurrentAttentionForImageClassification(build_config(args, labels))
    processor = make_image_processor(args.image_size)
    prepared = prepare_glimpse_dataset(dataset, args.dataset, processor, args.seed, args.shift)
    output_dir = args.output_dir or f"outputs/glimpse-{args.dataset}"
    trainer = RewardLoggingTrainer(
        model=model,
        args=training_arguments(args, output_dir),
        train_dataset=prepared["train"],
        eval_dataset=prepared["test"],
        data_collator=collate,
        compute_metrics=accuracy,
    )
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    metrics = trainer.evaluate()
    save_for_pipeline(trainer, processor, output_dir)
    summary = TrainingSummary(
        dataset=args.dataset,
        train_size=len(dataset["train"]),
        eval_size=len(dataset["test"]),
        accuracy=metrics["eval_accuracy"],
        eval_loss=metrics["eval_loss"],
        train_seconds=train_seconds,
        epochs=args.epochs,
        num_parameters=model.num_parameters(),
        output_dir=str(Path(output_dir).resolve()),
        num_processes=trainer.args.world_size,
    )
    if not trainer.is_world_process_zero():
        return summary, model
    summary.save()
    if args.num_pictures > 0:
        save_glimpse_picture(model, prepared["test"], Path(output_dir) / PICTURE_FILE, args.num_pictures)
    return summary, model


@torch.no_grad()
def save_glimpse_picture(model, test_split, path: Path, count: int) -> Path:
    """Draw where the (eval-mode, deterministic) model looks on the first `count` test images."""
    from .visualize_glimpse import draw_glimpse_paths

    batch = test_split[: min(count, len(test_split))]
    model.eval()
    outputs = model(batch["pixel_values"], sample_locations=False)
    names = model.config.id2label
    predictions = outputs.logits.argmax(-1).tolist()
    captions = [
        f"{names[int(label)]}" + ("" if int(label) == guess else f" (said {names[guess]})")
        for label, guess in zip(batch["labels"], predictions, strict=True)
    ]
    picture = draw_glimpse_paths(
        batch["pixel_values"],
        outputs.glimpse_locations,
        model.config.patch_size,
        model.config.num_scales,
        captions=captions,
        value_range=(-1.0, 1.0),  # the processor normalises to [-1, 1]
    )
    picture.save(path)
    return path


def train_glimpse(args: argparse.Namespace) -> int:
    from .sharing import push_folder

    summary, _ = fit_glimpse(args)
    lines = ["", f"hf-attention train glimpse --dataset {args.dataset}: done", *summary.lines()]
    if args.num_pictures > 0:
        lines.append(f"glimpse paths     {Path(summary.output_dir) / PICTURE_FILE}")
    print("\n".join(lines))
    if args.push_to_hub:
        push_folder(summary.output_dir, args.push_to_hub)
    return 0


__all__ = ["RewardLoggingTrainer", "add_glimpse_arguments", "fit_glimpse", "save_glimpse_picture", "train_glimpse"]
