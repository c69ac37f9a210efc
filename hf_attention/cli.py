"""The `hf-attention` command.

hf-attention train vit                                   # scikit-learn digits, no setup
hf-attention train vit --dataset fashion-mnist           # Debian's dataset-fashion-mnist
hf-attention train vit --dataset ./my_images             # an image folder, or a Hub dataset id
"""

import argparse
import sys

# dataset -> defaults that fit it; an explicit flag always wins
DATASET_DEFAULTS = {
    "digits": {"image_size": 8, "patch_size": 1, "epochs": 30, "batch_size": 32, "learning_rate": 2e-3},
    "fashion-mnist": {"image_size": 28, "patch_size": 4, "epochs": 10, "batch_size": 128, "learning_rate": 2e-3},
    None: {"image_size": 224, "patch_size": 16, "epochs": 3, "batch_size": 32, "learning_rate": 5e-4},
}


def _add_vit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="digits", help="digits, fashion-mnist, an image folder or a Hub id")
    parser.add_argument("--data-dir", help="folder holding the Fashion-MNIST IDX files")
    parser.add_argument("--output-dir", default="outputs/vit", help="where the model and processor are saved")
    parser.add_argument("--image-size", type=int, help="images are resized to this square size")
    parser.add_argument("--patch-size", type=int)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--mlp-size", type=int, default=256, help="width of the MLP hidden layer")
    parser.add_argument("--pooling", choices=("cls", "mean"), default="mean")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--drop-path-rate", type=float, default=0.1)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--shift", type=float, default=0.125, help="random shift of training images (fraction)")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--attn-implementation", default="sdpa", help="eager, sdpa, flash_attention_2, ...")
    parser.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-attention", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="fine-tune a model with transformers.Trainer")
    models = train.add_subparsers(dest="model", required=True)
    _add_vit_arguments(models.add_parser("vit", help="Vision Transformer image classifier"))
    return parser


def _with_dataset_defaults(args: argparse.Namespace) -> argparse.Namespace:
    defaults = DATASET_DEFAULTS.get(args.dataset, DATASET_DEFAULTS[None])
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def train_vit(args: argparse.Namespace) -> int:
    from transformers import TrainingArguments, set_seed

    from .configuration_vit import VisionTransformerConfig
    from .data import load_image_dataset
    from .modeling_vit import VisionTransformerForImageClassification
    from .training import make_image_processor, train_image_classifier

    args = _with_dataset_defaults(args)
    set_seed(args.seed)
    dataset = load_image_dataset(args.dataset, data_dir=args.data_dir, seed=args.seed)
    class_names = dataset["train"].features["label"].names
    config = VisionTransformerConfig(
        image_size=args.image_size,
        patch_size=args.patch_size,
        num_channels=3,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        intermediate_size=args.mlp_size,
        hidden_dropout_prob=args.dropout,
        drop_path_rate=args.drop_path_rate,
        pooling=args.pooling,
        id2label=dict(enumerate(class_names)),
        label2id={name: index for index, name in enumerate(class_names)},
    )
    config._attn_implementation = args.attn_implementation
    model = VisionTransformerForImageClassification(config)
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=max(args.batch_size, 256),
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_ratio,
        lr_scheduler_type="cosine",
        eval_strategy="no",
        save_strategy="no",
        logging_steps=50,
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=False,
        seed=args.seed,
        dataloader_num_workers=0,
    )
    processor = make_image_processor(args.image_size)
    summary = train_image_classifier(model, processor, dataset, args.dataset, training_args, args.shift)
    print("\n".join(["", "hf-attention train vit: done", *summary.lines()]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train" and args.model == "vit":
        return train_vit(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
