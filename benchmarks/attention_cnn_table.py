"""Fashion-MNIST: test accuracy, parameters and training time per epoch of the attention CNN, per attention type.

Every type trains the same network (widths 16-32-64, one basic block per stage, one attention block after each
stage, channel reduction 4) with the same seeds, data order, optimiser (AdamW, lr 2e-3, cosine) and batch size (64),
through `hf-attention train attention-cnn`; only `--attention` changes. The test set is the full official 10,000
images; each type's accuracy is the mean over `--seeds`, with the sample standard deviation and every seed's figure.
By default every type trains for one epoch on the whole training set (60,000 images), with seeds 0, 1 and 2; a
smaller `--train-size` trains on a fixed random subset, the same for every type. Each run uses `--threads` torch
threads (on a busy machine, thread barriers cost more than they gain) and `--jobs` runs go at once, in worker
processes. Seconds per epoch include the on-the-fly image preprocessing, the same for every type.

    python benchmarks/attention_cnn_table.py                        # the README table: 45 minutes on 2 cores
    python benchmarks/attention_cnn_table.py --epochs 2 --jobs 1    # on a GPU
    python benchmarks/attention_cnn_table.py --types none criss_cross --train-size 2000 --seeds 0   # a quick look
    python benchmarks/attention_cnn_table.py --timing-only      # refresh only the side-by-side step times
    python benchmarks/attention_cnn_table.py --update --types non_local   # train one row again, keep the others
    python benchmarks/attention_cnn_table.py --attention-stages 2 --out ...   # one block, after the last stage

Seconds per epoch are wall-clock under whatever else the machine runs, so the table also reports the time of one
training step (batch of 64 28x28 images, forward + backward) for every type measured side by side in one process,
alternating the types round after round, as milliseconds and relative to no attention.
"""

import argparse
import json
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from _environment import environment

from hf_attention import AttentionCNNConfig, AttentionCNNForImageClassification
from hf_attention.apps.cli import build_parser, fit_attention_cnn
from hf_attention.configuration_attention_cnn import ATTENTION_CNN_TYPES


def side_by_side_step_ms(args: argparse.Namespace, rounds: int = 5) -> dict:
    """Median ms of one training step per type, the types alternating inside every round."""
    pixels, labels = torch.randn(args.batch_size, 3, 28, 28), torch.randint(0, 10, (args.batch_size,))
    shape = dict(hidden_sizes=args.hidden_sizes, attention_stages=args.attention_stages, reduction=args.reduction)
    shape["num_labels"] = 10
    models = {
        attention_type: AttentionCNNForImageClassification(
            AttentionCNNConfig(attention_type=attention_type, **shape)
        ).train()
        for attention_type in args.types
    }
    times = {attention_type: [] for attention_type in args.types}
    for round_index in range(rounds + 1):
        for attention_type, model in models.items():
            start = time.perf_counter()
            model(pixels, labels=labels).loss.backward()
            if round_index:  # round 0 warms up
                times[attention_type].append(1000 * (time.perf_counter() - start))
    return {attention_type: round(statistics.median(values), 1) for attention_type, values in times.items()}


def train_one(attention_type: str, seed: int, args: argparse.Namespace) -> dict:
    """One `hf-attention train attention-cnn` run; returns its row (a worker process's whole job under --jobs)."""
    argv = ["train", "attention-cnn", "--attention", attention_type, "--dataset", "fashion-mnist"]
    argv += ["--train-size", str(args.train_size), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    argv += ["--hidden-sizes", *map(str, args.hidden_sizes), "--reduction", str(args.reduction)]
    argv += ["--attention-stages", *map(str, args.attention_stages)] if args.attention_stages else []
    argv += ["--seed", str(seed)]
    argv += ["--output-dir", f"{args.output_root}/{attention_type}-seed{seed}"]
    argv += ["--data-dir", args.data_dir] if args.data_dir else []
    torch.set_num_threads(args.threads)  # a spawned worker starts with torch's default
    summary = fit_attention_cnn(build_parser().parse_args(argv))
    row = {"attention": attention_type, "seed": seed, "test_accuracy": round(summary.accuracy, 4)}
    row |= {"test_loss": round(summary.eval_loss, 4), "parameters": summary.num_parameters}
    row["seconds_per_epoch"] = round(summary.train_seconds / summary.epochs, 1)
    print(row, flush=True)
    return row


def run_all(args: argparse.Namespace) -> list[dict]:
    """Every (type, seed) run, `args.jobs` at a time in worker processes (each on `args.threads` threads)."""
    runs = [(attention_type, seed) for seed in args.seeds for attention_type in args.types]
    if args.jobs == 1:
        return [train_one(attention_type, seed, args) for attention_type, seed in runs]
    # spawn, not fork: a forked child inherits the parent's OpenMP thread pool in a state it cannot use
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(train_one, *zip(*runs, strict=True), [args] * len(runs)))


def summarise(runs: list[dict], types: list[str]) -> list[dict]:
    """Per type: accuracy over seeds (mean, sample standard deviation, each seed's), mean loss and seconds per epoch."""
    rows = []
    for attention_type in types:
        own = [run for run in runs if run["attention"] == attention_type]
        accuracies = [run["test_accuracy"] for run in own]
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        rows.append(
            {
                "attention": attention_type,
                "test_accuracy": round(statistics.mean(accuracies), 4),
                "test_accuracy_std": round(spread, 4),
                "test_accuracy_per_seed": accuracies,
                "test_loss": round(statistics.mean(run["test_loss"] for run in own), 4),
                "parameters": own[0]["parameters"],
                "seconds_per_epoch": round(statistics.mean(run["seconds_per_epoch"] for run in own), 1),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--types", nargs="+", choices=ATTENTION_CNN_TYPES, default=list(ATTENTION_CNN_TYPES))
    parser.add_argument("--train-size", type=int, default=60_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--attention-stages", type=int, nargs="+", help="stages followed by a block (default: all)")
    # DANet's queries and keys divide its inner width (a quarter of the stage's): 4 channels at width 16
    parser.add_argument("--reduction", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per seed; mean and spread")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, in worker processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    parser.add_argument("--data-dir", help="folder holding the Fashion-MNIST IDX files")
    parser.add_argument("--output-root", default="outputs/attention-cnn-table")
    parser.add_argument("--out", default="benchmarks/results/attention_cnn_fashion_mnist.json")
    parser.add_argument("--timing-only", action="store_true", help="only refresh the side-by-side step times")
    parser.add_argument("--update", action="store_true", help="train only --types again; keep --out's other rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.timing_only:
        report = json.loads(Path(args.out).read_text())
        report["side_by_side_ms_per_step"] = side_by_side_step_ms(args)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print_table(report)
        return
    previous = previous_report(args) if args.update else None  # its settings are checked before any training
    runs = run_all(args)
    report = updated_report(previous, args, runs) if previous else new_report(args, runs)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)


def table_setup(args: argparse.Namespace) -> dict:
    """The settings every row of one table shares."""
    return {
        "train_images": args.train_size,
        "test_images": 10_000,
        "epochs": args.epochs,
        "image_size": 28,
        "batch_size": args.batch_size,
        "hidden_sizes": args.hidden_sizes,
        "attention_stages": args.attention_stages or "all",
        "reduction": args.reduction,
        "seeds": args.seeds,
    }


def new_report(args: argparse.Namespace, runs: list[dict]) -> dict:
    return {
        "benchmark": "attention CNN on Fashion-MNIST, one attention block after each chosen stage (default: all)",
        "command": (
            f"python benchmarks/attention_cnn_table.py --train-size {args.train_size} --epochs {args.epochs} "
            f"--batch-size {args.batch_size} --hidden-sizes {' '.join(map(str, args.hidden_sizes))} "
            f"--reduction {args.reduction} --seeds {' '.join(map(str, args.seeds))} --jobs {args.jobs} "
            f"--threads {args.threads}"
            + (f" --attention-stages {' '.join(map(str, args.attention_stages))}" if args.attention_stages else "")
        ),
        "setup": {
            **table_setup(args),
            "parallel_runs": args.jobs,
            **environment(args.threads),
            "note": "seconds per epoch include on-the-fly preprocessing and the other parallel runs' load",
            "test_accuracy_is_from": "the model after the last epoch, on the official 10,000 test images",
        },
        "results": summarise(runs, args.types),
        "runs": runs,
        "side_by_side_ms_per_step": side_by_side_step_ms(args),
    }


def previous_report(args: argparse.Namespace) -> dict:
    """The table in `args.out`, whose rows `--update` replaces; refused unless it was trained as `args` say."""
    report = json.loads(Path(args.out).read_text())
    setup = {key: report["setup"].get(key, "all") for key in table_setup(args)}  # older tables: every stage
    if setup != table_setup(args):
        raise ValueError(f"--update needs the settings of the table in {args.out}: {setup}, got {table_setup(args)}.")
    return report


def updated_report(report: dict, args: argparse.Namespace, runs: list[dict]) -> dict:
    """`report` with the rows of `args.types` trained again (`runs`); its other rows and step times are kept."""
    report["runs"] = [run for run in report["runs"] if run["attention"] not in args.types] + runs
    types = [row["attention"] for row in report["results"]]
    report["results"] = summarise(report["runs"], types + [name for name in args.types if name not in types])
    rerun = {"types": args.types, "date": time.strftime("%Y-%m-%d"), **environment(args.threads)}
    report["setup"]["rows_trained_again"] = [*report["setup"].get("rows_trained_again", []), rerun]
    return report


def print_table(report: dict) -> None:
    step_ms = report["side_by_side_ms_per_step"]
    print("| attention | test accuracy | per seed | parameters | s / epoch (wall) | ms / step side by side | vs none |")
    print("|---|---|---|---|---|---|---|")
    for row in report["results"]:
        ms = step_ms.get(row["attention"])
        relative = f"{ms / step_ms['none']:.2f}x" if ms and "none" in step_ms else "-"
        spread = f" ± {row['test_accuracy_std']:.4f}" if row.get("test_accuracy_std") else ""
        per_seed = " / ".join(f"{accuracy:.4f}" for accuracy in row.get("test_accuracy_per_seed", []))
        print(
            f"| {row['attention']} | {row['test_accuracy']:.4f}{spread} | {per_seed or '-'} | "
            f"{row['parameters']:,} | {row['seconds_per_epoch']} | {ms} | {relative} |"
        )


if __name__ == "__main__":
    main()
