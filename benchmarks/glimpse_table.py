"""Does hard attention do its job? The recurrent attention model (Mnih et al. 2014) on Fashion-MNIST, held-out test.

Three comparisons, every run through `hf-attention train glimpse` (Trainer, the model's own loss), same seed,
optimiser (AdamW, cosine schedule, lr 1e-3), batch size 64 and budget within a part:
1. "glimpses": 28x28 Fashion-MNIST, 8x8 retina, 1 scale: test error for 1, 2, 4, 6 and 8 glimpses, each with the
   learned policy and with random locations (the same model, locations uniform in [-1, 1]^2, no policy trained).
2. "translated": translated Fashion-MNIST (each image at a random place on a 60x60 canvas), 8 glimpses of 12x12 at
   3 scales, learned and random; and a two-layer MLP that sees the whole 60x60 image, its hidden width chosen so
   that it has the same number of parameters as the glimpse model (the paper's fully connected baseline).

Our data is Fashion-MNIST, not the paper's MNIST (harder: a good CNN gets about 93% where MNIST gives 99.5%), and
our budgets are a small fraction of the paper's, to fit a shared 2-core CPU: fixed random training subsets, few
epochs, torch on one thread. The defaults below are what the README reports; the JSON records them with the results.

    python benchmarks/glimpse_table.py --part glimpses      # 10 runs, about 40 min on a busy 2-core machine
    python benchmarks/glimpse_table.py --part translated    # 3 runs, about 30 min
    python benchmarks/glimpse_table.py --part translated --mlp-only   # only the full-image MLP again
    python benchmarks/glimpse_table.py --part glimpses --train-size 2000 --epochs 1 --glimpses 2 6   # a quick look
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from _environment import environment
from transformers import Trainer

from hf_attention.apps.cli import build_parser
from hf_attention.apps.data_glimpse import TRANSLATED_FASHION_MNIST, load_glimpse_dataset, prepare_glimpse_dataset
from hf_attention.apps.training import accuracy, collate, make_image_processor, training_arguments
from hf_attention.apps.training_glimpse import PICTURE_FILE, FullImageMLP, fit_glimpse

RESULTS = Path(__file__).parent / "results" / "glimpse_table.json"
PICTURE = Path(__file__).parent / "results" / "glimpse_paths_translated_fashion_mnist.png"
PAPER = {  # Mnih et al. 2014, test error (%) on MNIST, for reference only: a different, easier dataset
    "28x28 MNIST, RAM 6 glimpses 8x8": 1.29,
    "60x60 translated MNIST, RAM 8 glimpses 12x12 3 scales": 1.84,
}


def glimpse_arguments(dataset: str, options: argparse.Namespace, output_dir: Path, extra: list[str]):
    argv = ["train", "glimpse", "--dataset", dataset, "--epochs", str(options.epochs), "--output-dir", str(output_dir)]
    argv += ["--train-size", str(options.train_size), "--test-size", str(options.test_size), "--num-pictures", "0"]
    return build_parser().parse_args(argv + extra)


def record(results: dict, key: str, row: dict) -> None:
    """Merge one run into the JSON, re-read first: the two parts may run at the same time."""
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    saved.setdefault("runs", {})[key] = row
    saved.setdefault("setup", {}).update(results["setup"])
    saved["paper_mnist_error_percent"] = PAPER
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    print(f"{key}: test error {row['test_error_percent']:.2f}% ({row['train_seconds']:.0f} s)", flush=True)


def run_glimpse(results, key, dataset_name, dataset, options, extra, picture: bool = False):
    output_dir = Path(options.output_root) / key
    args = glimpse_arguments(dataset_name, options, output_dir, extra)
    if picture:
        args.num_pictures = 8
    summary, model = fit_glimpse(args, dataset)
    row = {
        "test_error_percent": 100 * (1 - summary.accuracy),
        "test_accuracy": summary.accuracy,
        "parameters": summary.num_parameters,
        "train_seconds": summary.train_seconds,
        "arguments": extra,
    }
    record(results, key, row)
    if picture:
        shutil.copy(output_dir / PICTURE_FILE, PICTURE)
    return model


def run_mlp(results, key, dataset_name, dataset, options, num_parameters: int, image_size: int):
    num_inputs, num_labels = 3 * image_size**2, 10
    hidden_size = round((num_parameters - num_labels) / (num_inputs + 1 + num_labels))
    torch.manual_seed(options.seed)
    model = FullImageMLP(num_inputs, (hidden_size,), num_labels, value_range=(-1.0, 1.0))  # the processor's [-1, 1]
    prepared = prepare_glimpse_dataset(dataset, dataset_name, make_image_processor(image_size), options.seed)
    args = glimpse_arguments(dataset_name, options, Path(options.output_root) / key, [])
    args.batch_size, args.learning_rate = 64, options.mlp_learning_rate
    trainer = Trainer(
        model=model,
        args=training_arguments(args, str(Path(options.output_root) / key)),
        train_dataset=prepared["train"],
        eval_dataset=prepared["test"],
        data_collator=collate,
        compute_metrics=accuracy,
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    metrics = trainer.evaluate()
    row = {
        "test_error_percent": 100 * (1 - metrics["eval_accuracy"]),
        "test_accuracy": metrics["eval_accuracy"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "hidden_size": hidden_size,
        "train_seconds": seconds,
    }
    record(results, key, row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("glimpses", "translated"), required=True)
    parser.add_argument("--train-size", type=int, help="default: 6000 (glimpses) / 10000 (translated)")
    parser.add_argument("--test-size", type=int, default=5000, help="a fixed random subset of the official 10,000")
    parser.add_argument("--epochs", type=float, help="default: 2")
    parser.add_argument("--glimpses", type=int, nargs="+", default=[1, 2, 4, 6, 8])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mlp-learning-rate", type=float, default=3e-4)
    parser.add_argument("--mlp-only", action="store_true", help="translated: rerun only the full-image MLP")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output-root", default="outputs/glimpse-table")
    options = parser.parse_args()
    translated = options.part == "translated"
    options.train_size = options.train_size or (10000 if translated else 6000)
    options.epochs = options.epochs or 2
    torch.set_num_threads(options.threads)
    results = {"setup": {}}
    results["setup"][options.part] = {
        "train_size": options.train_size,
        "test_size": options.test_size,
        "epochs": options.epochs,
        "batch_size": 64,
        "learning_rate": 1e-3,
        "mlp_learning_rate": options.mlp_learning_rate,
        "seed": options.seed,
        **environment(options.threads),
    }
    name = TRANSLATED_FASHION_MNIST if translated else "fashion-mnist"
    dataset = load_glimpse_dataset(name, seed=options.seed, train_size=options.train_size, test_size=options.test_size)
    if translated:
        retina = ["--num-glimpses", "8", "--patch-size", "12", "--num-scales", "3"]
        if options.mlp_only:
            size = json.loads(RESULTS.read_text())["runs"]["translated/learned"]["parameters"]
        else:
            model = run_glimpse(results, "translated/learned", name, dataset, options, retina, picture=True)
            run_glimpse(results, "translated/random", name, dataset, options, [*retina, "--location-policy", "random"])
            size = model.num_parameters()
        run_mlp(results, "translated/full-image-mlp", name, dataset, options, size, 60)
        return
    for count in options.glimpses:
        for policy in ("learned", "random"):
            extra = [
                "--num-glimpses",
                str(count),
                "--patch-size",
                "8",
                "--num-scales",
                "1",
                "--location-policy",
                policy,
            ]
            run_glimpse(results, f"28x28/{policy}/{count}", name, dataset, options, extra)


if __name__ == "__main__":
    main()
