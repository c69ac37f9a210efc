"""Fashion-MNIST: test accuracy, parameters and training time per epoch of the attention CNN, per attention type.

Every type trains the same network (widths 16-32-64, one basic block per stage, one attention block after each
stage) with the same seed, data order, optimiser (AdamW, lr 2e-3, cosine) and batch size (64), through
`hf-attention train attention-cnn`; only `--attention` changes. To fit a shared 2-core CPU the budget is a fixed
random subset of the training set (6,000 of 60,000 images by default, the same subset for every type) for 2 epochs;
the test set is the full official 10,000 images. Torch runs on one thread (on a busy machine, thread barriers cost
more than they gain). Seconds per epoch include the on-the-fly image preprocessing, the same for every type.

    python benchmarks/attention_cnn_table.py                                   # all types, about 40 min on 2 cores
    python benchmarks/attention_cnn_table.py --types none criss_cross --train-size 2000 --epochs 1   # a quick look
    python benchmarks/attention_cnn_table.py --timing-only      # refresh only the side-by-side step times

Seconds per epoch are wall-clock under whatever else the machine runs, so the table also reports the time of one
training step (batch of 64 28x28 images, forward + backward) for every type measured side by side in one process,
alternating the types round after round, as milliseconds and relative to no attention.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from _environment import environment

from hf_attention import AttentionCNNConfig, AttentionCNNForImageClassification
from hf_attention.cli import build_parser, fit_attention_cnn
from hf_attention.configuration_attention_cnn import ATTENTION_CNN_TYPES


def side_by_side_step_ms(types: list[str], hidden_sizes: list[int], batch_size: int, rounds: int = 5) -> dict:
    """Median ms of one training step per type, the types alternating inside every round."""
    pixels, labels = torch.randn(batch_size, 3, 28, 28), torch.randint(0, 10, (batch_size,))
    models = {
        attention_type: AttentionCNNForImageClassification(
            AttentionCNNConfig(hidden_sizes=hidden_sizes, attention_type=attention_type, num_labels=10)
        ).train()
        for attention_type in types
    }
    times = {attention_type: [] for attention_type in types}
    for round_index in range(rounds + 1):
        for attention_type, model in models.items():
            start = time.perf_counter()
            model(pixels, labels=labels).loss.backward()
            if round_index:  # round 0 warms up
                times[attention_type].append(1000 * (time.perf_counter() - start))
    return {attention_type: round(statistics.median(values), 1) for attention_type, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--types", nargs="+", choices=ATTENTION_CNN_TYPES, default=list(ATTENTION_CNN_TYPES))
    parser.add_argument("--train-size", type=int, default=6_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", help="folder holding the Fashion-MNIST IDX files")
    parser.add_argument("--output-root", default="outputs/attention-cnn-table")
    parser.add_argument("--out", default="benchmarks/results/attention_cnn_fashion_mnist.json")
    parser.add_argument("--timing-only", action="store_true", help="only refresh the side-by-side step times")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.timing_only:
        report = json.loads(Path(args.out).read_text())
        report["side_by_side_ms_per_step"] = side_by_side_step_ms(args.types, args.hidden_sizes, args.batch_size)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print_table(report)
        return
    rows = []
    for attention_type in args.types:
        argv = ["train", "attention-cnn", "--attention", attention_type, "--dataset", "fashion-mnist"]
        argv += [
            "--train-size",
            str(args.train_size),
            "--epochs",
            str(args.epochs),
            "--batch-size",
            str(args.batch_size),
        ]
        argv += ["--hidden-sizes", *map(str, args.hidden_sizes)]
        argv += ["--output-dir", f"{args.output_root}/{attention_type}"]
        argv += ["--data-dir", args.data_dir] if args.data_dir else []
        summary = fit_attention_cnn(build_parser().parse_args(argv))
        rows.append(
            {
                "attention": attention_type,
                "test_accuracy": round(summary.accuracy, 4),
                "test_loss": round(summary.eval_loss, 4),
                "parameters": summary.num_parameters,
                "seconds_per_epoch": round(summary.train_seconds / summary.epochs, 1),
            }
        )
        print(rows[-1], flush=True)
    report = {
        "benchmark": "attention CNN on Fashion-MNIST, one attention block after each of 3 stages",
        "command": (
            f"python benchmarks/attention_cnn_table.py --train-size {args.train_size} --epochs {args.epochs} "
            f"--batch-size {args.batch_size} --hidden-sizes {' '.join(map(str, args.hidden_sizes))} "
            f"--threads {args.threads}"
        ),
        "setup": {
            "train_images": args.train_size,
            "test_images": 10_000,
            "epochs": args.epochs,
            "image_size": 28,
            "batch_size": args.batch_size,
            "hidden_sizes": args.hidden_sizes,
            **environment(args.threads),
            "note": "seconds per epoch include on-the-fly preprocessing",
            "test_accuracy_is_from": "the model after the last epoch, on the official 10,000 test images",
        },
        "results": rows,
        "side_by_side_ms_per_step": side_by_side_step_ms(args.types, args.hidden_sizes, args.batch_size),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)


def print_table(report: dict) -> None:
    step_ms = report["side_by_side_ms_per_step"]
    print("| attention | test accuracy | parameters | s / epoch (wall) | ms / step, side by side | vs none |")
    print("|---|---|---|---|---|---|")
    for row in report["results"]:
        ms = step_ms.get(row["attention"])
        relative = f"{ms / step_ms['none']:.2f}x" if ms and "none" in step_ms else "-"
        print(
            f"| {row['attention']} | {row['test_accuracy']:.4f} | {row['parameters']:,} | "
            f"{row['seconds_per_epoch']} | {ms} | {relative} |"
        )


if __name__ == "__main__":
    main()
