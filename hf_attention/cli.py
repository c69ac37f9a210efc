"""The `hf-attention` command.

hf-attention train vit                                   # scikit-learn digits, no setup
hf-attention train vit --dataset fashion-mnist           # Debian's dataset-fashion-mnist
hf-attention train vit --dataset ./my_images             # an image folder, or a Hub dataset id
hf-attention train attention-cnn --attention criss_cross  # small ResNet, one attention block per stage
hf-attention train vit --push-to-hub me/vit-digits       # then share it: weights, code, processor, card
hf-attention push outputs/vit me/vit-digits --revision v2  # share a saved model folder
"""

import argparse
import json
import sys
from pathlib import Path

# dataset -> defaults that fit it; an explicit flag always wins
DATASET_DEFAULTS = {
    "digits": {"image_size": 8, "patch_size": 1, "epochs": 50, "batch_size": 32, "learning_rate": 2e-3},
    "fashion-mnist": {"image_size": 28, "patch_size": 4, "epochs": 10, "batch_size": 128, "learning_rate": 2e-3},
    None: {"image_size": 224, "patch_size": 16, "epochs": 3, "batch_size": 32, "learning_rate": 5e-4},
}


def _add_training_arguments(parser: argparse.ArgumentParser, attn_help: str) -> None:
    """The flags every `train` command shares: data, optimisation, backend, sharing."""
    parser.add_argument("--dataset", default="digits", help="digits, fashion-mnist, an image folder or a Hub id")
    parser.add_argument("--data-dir", help="folder holding the Fashion-MNIST IDX files")
    parser.add_argument("--train-size", type=int, help="train on a fixed random subset of this many images")
    parser.add_argument("--image-size", type=int, help="images are resized to this square size")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--shift", type=float, default=0.0, help="random shift of training images (fraction of size)")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--attn-implementation", default="sdpa", help=attn_help)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="push the trained model to this Hub repo")


def _add_vit_arguments(parser: argparse.ArgumentParser) -> None:
    _add_training_arguments(parser, "eager, sdpa, flash_attention_2, flex_attention, ...")
    parser.add_argument("--output-dir", default="outputs/vit", help="where the model and processor are saved")
    parser.add_argument("--patch-size", type=int)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--mlp-size", type=int, default=256, help="width of the MLP hidden layer")
    parser.add_argument("--pooling", choices=("cls", "mean"), default="mean")
    parser.add_argument("--drop-path-rate", type=float, default=0.1)


def _add_attention_cnn_arguments(parser: argparse.ArgumentParser) -> None:
    from .configuration_attention_cnn import ATTENTION_CNN_TYPES

    _add_training_arguments(parser, "kernel of the non-local and DANet blocks")
    parser.add_argument("--attention", choices=ATTENTION_CNN_TYPES, default="none", help="block after each stage")
    parser.add_argument("--attention-stages", type=int, nargs="+", help="stages followed by a block (default: all)")
    parser.add_argument("--output-dir", help="where the model and processor go (outputs/attention-cnn-<attention>)")
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[32, 64, 128], help="width of each stage")
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 1, 1], help="residual blocks per stage")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-attention", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="fine-tune a model with transformers.Trainer")
    models = train.add_subparsers(dest="model", required=True)
    _add_vit_arguments(models.add_parser("vit", help="Vision Transformer image classifier"))
    _add_attention_cnn_arguments(models.add_parser("attention-cnn", help="small ResNet with feature-map attention"))
    push = commands.add_parser("push", help="push a saved model folder to the Hub with its code and a model card")
    push.add_argument("folder", help="a folder written by `save_pretrained` or `hf-attention train`")
    push.add_argument("repo_id", help="the Hub repo, e.g. me/vit-digits; created if it does not exist")
    push.add_argument("--revision", help="branch to push to; created from main if it does not exist")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    return parser


def _with_dataset_defaults(args: argparse.Namespace, table: dict) -> argparse.Namespace:
    defaults = table.get(args.dataset, table[None])
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def _load_labelled_dataset(args: argparse.Namespace):
    """The dataset `args` name (a fixed random subset of it with --train-size) and its label maps."""
    from datasets import DatasetDict

    from .data import load_image_dataset

    dataset = load_image_dataset(args.dataset, data_dir=args.data_dir, seed=args.seed)
    if args.train_size is not None:
        if not 0 < args.train_size <= len(dataset["train"]):
            raise ValueError(f"--train-size must be in 1..{len(dataset['train'])}, got {args.train_size}.")
        subset = dataset["train"].shuffle(seed=args.seed).select(range(args.train_size))
        dataset = DatasetDict(train=subset, test=dataset["test"])
    class_names = dataset["train"].features["label"].names
    labels = {"id2label": dict(enumerate(class_names)), "label2id": {name: i for i, name in enumerate(class_names)}}
    return dataset, labels


def _fit(model, dataset, args: argparse.Namespace, output_dir: str):
    """Train `model` with Trainer as `args` say, evaluate on the test split, save; returns the summary."""
    from transformers import TrainingArguments

    from .training import make_image_processor, train_image_classifier

    model.set_attn_implementation(args.attn_implementation)
    training_args = TrainingArguments(
        output_dir=output_dir,
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
    return train_image_classifier(model, processor, dataset, args.dataset, training_args, args.shift)


def _report(title: str, summary, args: argparse.Namespace) -> int:
    print("\n".join(["", f"{title}: done", *summary.lines()]))
    if args.push_to_hub:
        push_folder(summary.output_dir, args.push_to_hub)
    return 0


def train_vit(args: argparse.Namespace) -> int:
    from transformers import set_seed

    from .configuration_vit import VisionTransformerConfig
    from .modeling_vit import VisionTransformerForImageClassification

    args = _with_dataset_defaults(args, DATASET_DEFAULTS)
    set_seed(args.seed)
    dataset, labels = _load_labelled_dataset(args)
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
        **labels,
    )
    summary = _fit(VisionTransformerForImageClassification(config), dataset, args, args.output_dir)
    return _report("hf-attention train vit", summary, args)


# dataset -> defaults of `train attention-cnn`; an explicit flag always wins
ATTENTION_CNN_DATASET_DEFAULTS = {
    "digits": {"image_size": 8, "epochs": 20, "batch_size": 32, "learning_rate": 2e-3},
    "fashion-mnist": {"image_size": 28, "epochs": 2, "batch_size": 128, "learning_rate": 2e-3},
    None: {"image_size": 64, "epochs": 3, "batch_size": 32, "learning_rate": 1e-3},
}


def fit_attention_cnn(args: argparse.Namespace):
    """Train and evaluate an attention CNN as `args` say; returns the `TrainingSummary`."""
    from transformers import set_seed

    from .configuration_attention_cnn import AttentionCNNConfig
    from .modeling_attention_cnn import AttentionCNNForImageClassification

    args = _with_dataset_defaults(args, ATTENTION_CNN_DATASET_DEFAULTS)
    set_seed(args.seed)
    dataset, labels = _load_labelled_dataset(args)
    config = AttentionCNNConfig(
        num_channels=3,
        hidden_sizes=args.hidden_sizes,
        depths=args.depths,
        attention_type=args.attention,
        attention_stages=args.attention_stages,
        hidden_dropout_prob=args.dropout,
        **labels,
    )
    output_dir = args.output_dir or f"outputs/attention-cnn-{args.attention}"
    return _fit(AttentionCNNForImageClassification(config), dataset, args, output_dir)


def train_attention_cnn(args: argparse.Namespace) -> int:
    return _report(f"hf-attention train attention-cnn --attention {args.attention}", fit_attention_cnn(args), args)


# `push_to_hub` writes these itself from the loaded model
WRITTEN_BY_PUSH = {"config.json", "README.md", "model.safetensors.index.json"}


def push_folder(folder: str | Path, repo_id: str, revision: str | None = None, private: bool | None = None) -> str:
    """Push a saved model with its code, a model card (with the results `hf-attention train` saved, if any) and
    the folder's other files, such as the image processor's, in one commit; returns the commit URL."""
    from transformers import PreTrainedConfig

    from . import REGISTRY
    from .pretrained import PICKLE_SUFFIXES
    from .training import TRAINING_SUMMARY_FILE

    folder = Path(folder)
    classes = {cls.__name__: cls for _, base, heads in REGISTRY for cls in (base, *heads.values())}
    architecture = (PreTrainedConfig.from_pretrained(folder).architectures or ["?"])[0]
    if architecture not in classes:
        raise ValueError(f"{folder} holds a {architecture}, not a model hf_attention defines: {sorted(classes)}.")
    summary_file = folder / TRAINING_SUMMARY_FILE
    extra_files = [
        path
        for path in folder.iterdir()
        if path.is_file() and path.name not in WRITTEN_BY_PUSH and path.suffix not in (".safetensors", *PICKLE_SUFFIXES)
    ]
    model = classes[architecture].from_pretrained(folder)
    commit = model.push_to_hub(
        repo_id,
        revision=revision,
        private=private,
        training_results=json.loads(summary_file.read_text()) if summary_file.exists() else None,
        extra_files=extra_files,
    )
    print(f"pushed {architecture} from {folder} to {commit.commit_url}")
    return commit.commit_url


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "push":
        push_folder(args.folder, args.repo_id, args.revision, True if args.private else None)
        return 0
    if args.command == "train" and args.model == "vit":
        return train_vit(args)
    if args.command == "train" and args.model == "attention-cnn":
        return train_attention_cnn(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
