"""`hf-attention train glimpse`: the recurrent attention model trained with REINFORCE through `transformers.Trainer`.

The model's `forward` computes its whole loss (cross-entropy + baseline MSE + REINFORCE) from `labels`, so the
Trainer here is stock except that it logs the mean reward (the training accuracy of the sampled rollouts) next to
the loss. The output folder holds the model, transformers' `ViTImageProcessor` (so `pipeline("image-
classification", model=folder)` works), `training_summary.json` and `glimpse_paths.png`, the glimpses of the
trained model over test images.

`--dataset cluttered-mnist` trains on the paper's cluttered translated MNIST (60x60 canvases, 4 pieces of clutter,
drawn in torch by `ClutteredCanvasCollator`), one grey channel in [0, 1] (black is 0, what the retina reads outside
the canvas); `--full-image-mlp` trains the paper's fully connected baseline on the same data instead.
"""

import argparse
import time
from pathlib import Path

import torch
from torch import nn
from transformers import Trainer
from transformers.modeling_outputs import ImageClassifierOutput

from ..configuration_glimpse import LOCATION_POLICIES
from .data_glimpse import CLUTTERED_MNIST, TRANSLATED_FASHION_MNIST

PICTURE_FILE = "glimpse_paths.png"
DATASETS = ("digits", "fashion-mnist", TRANSLATED_FASHION_MNIST, CLUTTERED_MNIST)
# dataset -> defaults that fit it (the paper's settings for 28x28 and translated 60x60); an explicit flag wins
GLIMPSE_DATASET_DEFAULTS = {
    "digits": dict(image_size=8, patch_size=2, num_scales=2, num_glimpses=4, epochs=30, batch_size=32),
    "fashion-mnist": dict(image_size=28, patch_size=8, num_scales=1, num_glimpses=6, epochs=5, batch_size=64),
    TRANSLATED_FASHION_MNIST: dict(image_size=60, patch_size=12, num_scales=3, num_glimpses=8, epochs=5, batch_size=64),
    CLUTTERED_MNIST: dict(image_size=60, patch_size=12, num_scales=3, num_glimpses=8, epochs=80, batch_size=64),
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
        "--location-policy",
        choices=LOCATION_POLICIES,
        default="learned",
        help="random (uniform) and raster (a fixed path): the ablations",
    )
    parser.add_argument(
        "--location-policy-hidden-units",
        type=int,
        default=0,
        help="hidden width of a two-layer location network (0: one layer, the paper)",
    )
    parser.add_argument("--max-steps", type=int, help="train this many optimizer steps (overrides --epochs)")
    parser.add_argument(
        "--full-image-mlp",
        action="store_true",
        help="train the fully connected baseline on the whole image instead (2 hidden layers of --hidden-size)",
    )
    parser.add_argument("--reinforce-weight", type=float, default=1.0, help="weight of the REINFORCE term")
    parser.add_argument(
        "--monte-carlo-rollouts", type=int, default=1, help="average this many sampled rollouts in eval (DRAM)"
    )
    parser.add_argument("--num-pictures", type=int, default=8, help="test images in glimpse_paths.png (0: none)")


class FullImageMLP(nn.Module):
    """ReLU MLP on the flattened image: the paper's fully connected baseline that sees everything at once.

    `value_range`: the (black, white) of the pixel values, mapped to [0, 1] first so that the empty canvas is 0:
    with -1 on thousands of inputs, Adam's first steps push every hidden unit's input the same way and the ReLUs die.
    """

    def __init__(
        self,
        num_inputs: int,
        hidden_sizes: tuple[int, ...],
        num_labels: int,
        value_range: tuple[float, float] = (0.0, 1.0),
    ):
        super().__init__()
        widths = (num_inputs, *hidden_sizes)
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:], strict=True))
        self.classifier = nn.Linear(widths[-1], num_labels)
        self.value_range = value_range

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> ImageClassifierOutput:
        low, high = self.value_range
        features = (pixel_values.flatten(1) - low) / (high - low)
        for layer in self.hidden:
            features = torch.relu(layer(features))
        logits = self.classifier(features)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


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
        # the image pipeline hands the model RGB images; cluttered MNIST is trained on its one grey channel
        num_channels=1 if args.dataset == CLUTTERED_MNIST else 3,
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
        location_policy_hidden_units=args.location_policy_hidden_units,
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
    for name in (TRANSLATED_FASHION_MNIST, CLUTTERED_MNIST):
        if args.dataset == name and args.image_size != 60:
            raise ValueError(f"{name} is built on 60x60 canvases; --image-size must be 60, got {args.image_size}.")
    if args.dataset == CLUTTERED_MNIST and args.shift:
        raise ValueError(f"--shift does not apply to {CLUTTERED_MNIST}: its digits are placed at random already.")
    if args.max_steps is not None and args.max_steps <= 0:
        raise ValueError(f"--max-steps must be positive, got {args.max_steps}.")
    return args


def fit_glimpse(args: argparse.Namespace, dataset=None):
    """Train, evaluate on the held-out test split, save folder + picture; returns (TrainingSummary, model).

    `dataset`: an already loaded `load_glimpse_dataset(args.dataset, ...)` (for cluttered MNIST, the pair
    `load_cluttered_mnist(...)` returns), so that a sweep loads it once.
    """
    from transformers import set_seed

    from .training import TrainingSummary, accuracy, training_arguments

    args = _check_arguments(args)
    set_seed(args.seed)
    prepared, collator, processor, dataset_sizes, class_names = prepare_glimpse_data(args, dataset)
    labels = {"id2label": dict(enumerate(class_names)), "label2id": {name: i for i, name in enumerate(class_names)}}
    model = build_model(args, labels)
    output_dir = args.output_dir or f"outputs/glimpse-{args.dataset}"
    overrides = {} if args.max_steps is None else {"max_steps": args.max_steps}
    trainer = RewardLoggingTrainer(
        model=model,
        args=training_arguments(args, output_dir, **overrides),
        train_dataset=prepared["train"],
        eval_dataset=prepared["test"],
        data_collator=collator,
        compute_metrics=accuracy,
    )
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    metrics = trainer.evaluate()
    if not args.full_image_mlp:  # the baseline is a plain torch module, kept for the comparison only
        from .training import save_for_pipeline

        save_for_pipeline(trainer, processor, output_dir)
    summary = TrainingSummary(
        dataset=args.dataset,
        train_size=dataset_sizes[0],
        eval_size=dataset_sizes[1],
        accuracy=metrics["eval_accuracy"],
        eval_loss=metrics["eval_loss"],
        train_seconds=train_seconds,
        epochs=round(trainer.state.epoch, 3),
        num_parameters=sum(parameter.numel() for parameter in model.parameters()),
        output_dir=str(Path(output_dir).resolve()),
        num_processes=trainer.args.world_size,
    )
    if not trainer.is_world_process_zero():
        return summary, model
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    summary.save()
    if args.num_pictures > 0 and not args.full_image_mlp:
        save_glimpse_picture(model, prepared["test"], Path(output_dir) / PICTURE_FILE, args.num_pictures, collator)
    return summary, model


def prepare_glimpse_data(args: argparse.Namespace, dataset=None):
    """(prepared splits, collator, image processor, (train size, test size), class names) for `args.dataset`."""
    from .data_glimpse import (
        ClutteredCanvasCollator,
        load_cluttered_mnist,
        load_glimpse_dataset,
        prepare_glimpse_dataset,
    )
    from .training import collate, make_image_processor

    if args.dataset == CLUTTERED_MNIST:
        from ..image_processing_grey import GreyImageProcessor

        dataset, digits = dataset if dataset is not None else load_cluttered_mnist(args.test_size)
        if args.train_size is not None:
            dataset["train"] = dataset["train"].shuffle(seed=args.seed).select(range(args.train_size))
        # what a saved model is given: one grey channel (also from the RGB images pipelines pass), in [0, 1]
        processor = GreyImageProcessor(size={"height": 60, "width": 60}, do_normalize=False)
        collator = ClutteredCanvasCollator(digits, args.seed)
        prepared = dataset
    else:
        if dataset is None:
            dataset = load_glimpse_dataset(args.dataset, args.data_dir, args.seed, args.train_size, args.test_size)
        processor = make_image_processor(args.image_size)
        prepared = prepare_glimpse_dataset(dataset, args.dataset, processor, args.seed, args.shift)
        collator = collate
    sizes = (len(dataset["train"]), len(dataset["test"]))
    return prepared, collator, processor, sizes, dataset["train"].features["label"].names


def build_model(args: argparse.Namespace, labels: dict) -> nn.Module:
    """The glimpse model the flags describe, or with `--full-image-mlp` the fully connected baseline."""
    from ..modeling_glimpse import RecurrentAttentionForImageClassification

    config = build_config(args, labels)
    if not args.full_image_mlp:
        return RecurrentAttentionForImageClassification(config)
    height, width = config.image_size if isinstance(config.image_size, (tuple, list)) else [config.image_size] * 2
    # the processors of the other datasets normalise to [-1, 1]
    value_range = (0.0, 1.0) if args.dataset == CLUTTERED_MNIST else (-1.0, 1.0)
    num_inputs = config.num_channels * height * width
    return FullImageMLP(num_inputs, (args.hidden_size, args.hidden_size), config.num_labels, value_range)


@torch.no_grad()
def save_glimpse_picture(model, test_split, path: Path, count: int, collator=None) -> Path:
    """Draw where the (eval-mode, deterministic) model looks on `count` test images, one of each class first; on
    cluttered MNIST each digit's 28x28 box is outlined."""
    from .training import collate
    from .visualize_glimpse import draw_glimpse_paths

    rows = picture_rows(test_split.with_format(None)["label"], count)  # the raw column, past any transform
    examples = [test_split[row] for row in rows]
    batch = (collator or collate)(examples)
    boxes = None
    if "digit_offset" in examples[0]:
        boxes = [(*map(int, example["digit_offset"]), 28, 28) for example in examples]
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
        value_range=(0.0, 1.0) if boxes is not None else (-1.0, 1.0),  # the processor normalises to [-1, 1]
        boxes=boxes,
    )
    picture.save(path)
    return path


def picture_rows(labels, count: int) -> list[int]:
    """`count` rows: the first of each class in turn (the test splits may be sorted by class), then the next ones."""
    labels = [int(label) for label in labels]
    rows, seen = [], set()
    for row, label in enumerate(labels):
        if label not in seen:
            rows.append(row)
            seen.add(label)
    rows += [row for row in range(len(labels)) if row not in set(rows)]
    return rows[: min(count, len(labels))]


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


__all__ = [
    "FullImageMLP",
    "RewardLoggingTrainer",
    "add_glimpse_arguments",
    "fit_glimpse",
    "save_glimpse_picture",
    "train_glimpse",
]
