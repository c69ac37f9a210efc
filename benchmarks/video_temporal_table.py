"""Does cross-frame attention do its job? The four temporal variants of the X-CLIP video classifier on moving glyphs.

Every variant trains the same encoder (frames of 32x32, patches 16x16, width 32, 2 layers, 4 heads by default) with
the same seed, clips, data order, optimiser and budget through `hf-attention train video`; only how frames talk
changes:

    none + mean   `temporal_modeling="none"`, `video_pooling="mean"`: frames encoded alone, averaged (order-free)
    MIT only      `temporal_modeling="none"`, `video_pooling="mit"`
    CFA only      `temporal_modeling="cross_frame"`, `video_pooling="mean"`
    CFA + MIT     `temporal_modeling="cross_frame"`, `video_pooling="mit"` (X-CLIP)

The test split holds held-out glyphs, each clip followed by itself played backwards (the opposite label), so an
order-free model scores exactly 0.5 on "reversal accuracy" (true direction above its opposite) and at most 0.5 on
the 8-way accuracy (it can find the axis of motion, not its sign).

    python benchmarks/video_temporal_table.py                         # all four, ~the README's budget
    python benchmarks/video_temporal_table.py --variants cfa+mit --epochs 2 --train-size 256   # a quick look
"""

import argparse
import json
import platform
from pathlib import Path

import torch
import transformers

from hf_attention.cli import build_parser
from hf_attention.training_video import fit_video

VARIANTS = {
    "none+mean": ("none", "mean"),
    "mit": ("none", "mit"),
    "cfa": ("cross_frame", "mean"),
    "cfa+mit": ("cross_frame", "mit"),
}
TITLES = {"none+mean": "no temporal modelling, mean over frames", "mit": "MIT only", "cfa": "CFA only",
          "cfa+mit": "CFA + MIT (X-CLIP)"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--dataset", default="digits", choices=("digits", "fashion-mnist"))
    parser.add_argument("--train-size", type=int, default=1024)
    parser.add_argument("--test-size", type=int, default=256)
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default="benchmarks/results/video_temporal.json")
    options = parser.parse_args()
    rows = {}
    for variant in options.variants:
        temporal_modeling, video_pooling = VARIANTS[variant]
        argv = ["train", "video", "--dataset", options.dataset, "--train-size", str(options.train_size)]
        argv += ["--test-size", str(options.test_size), "--epochs", str(options.epochs)]
        argv += ["--num-layers", str(options.num_layers), "--learning-rate", str(options.learning_rate)]
        argv += ["--hidden-size", str(options.hidden_size), "--patch-size", str(options.patch_size)]
        argv += ["--mlp-size", str(2 * options.hidden_size), "--num-heads", "4"]
        argv += ["--temporal-modeling", temporal_modeling, "--video-pooling", video_pooling]
        argv += ["--threads", str(options.threads), "--output-dir", f"outputs/video-{variant.replace('+', '-')}"]
        summary = fit_video(build_parser().parse_args(argv))
        rows[variant] = {
            "title": TITLES[variant],
            "temporal_modeling": temporal_modeling,
            "video_pooling": video_pooling,
            "accuracy": round(summary.accuracy, 4),
            "reversal_accuracy": round(summary.reversal_accuracy, 4),
            "eval_loss": round(summary.eval_loss, 4),
            "parameters": summary.num_parameters,
            "train_seconds": round(summary.train_seconds, 1),
        }
        print(json.dumps({variant: rows[variant]}))
    record = {
        "setup": {
            "dataset": f"moving glyphs ({options.dataset}), 8 directions, 8 frames of 32x32",
            "train_clips": options.train_size,
            "test_clips": 2 * options.test_size,
            "epochs": options.epochs,
            "num_layers": options.num_layers,
            "hidden_size": options.hidden_size,
            "patch_size": options.patch_size,
            "learning_rate": options.learning_rate,
            "threads": options.threads,
            "machine": f"{platform.processor() or platform.machine()}, shared by other jobs",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "results": rows,
    }
    output = Path(options.output)
    if output.exists():  # keep variants measured in an earlier run
        record["results"] = {**json.loads(output.read_text()).get("results", {}), **rows}
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(markdown_table(record["results"]))


def markdown_table(results: dict) -> str:
    lines = ["| variant | test accuracy (8 directions) | reversal accuracy | parameters | training time |"]
    lines.append("|---|---|---|---|---|")
    for variant in VARIANTS:
        if variant in results:
            row = results[variant]
            lines.append(
                f"| {row['title']} | {row['accuracy']:.3f} | {row['reversal_accuracy']:.3f} | "
                f"{row['parameters']:,} | {row['train_seconds']:.0f} s |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
