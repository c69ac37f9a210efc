"""Does cross-frame attention do its job? The four temporal variants of the X-CLIP video classifier on moving glyphs.

Every variant trains the same encoder (frames of 32x32, patches 8x8, width 32, 2 layers, 4 heads: the defaults of
`hf-attention train video`) with the same seed, clips, data order, optimiser and budget through
`hf-attention train video`; only how frames talk changes:

    none + mean   `temporal_modeling="none"`, `video_pooling="mean"`: frames encoded alone, averaged (order-free)
    MIT only      `temporal_modeling="none"`, `video_pooling="mit"`
    CFA only      `temporal_modeling="cross_frame"`, `video_pooling="mean"`
    CFA + MIT     `temporal_modeling="cross_frame"`, `video_pooling="mit"` (X-CLIP)

The test split holds held-out glyphs, each clip followed by itself played backwards (the opposite label), so an
order-free model scores exactly 0.5 on "reversal accuracy" (true direction above its opposite) and at most 0.5 on
the 8-way accuracy (it can find the axis of motion, not its sign).

    python benchmarks/video_temporal_table.py                         # all four, two at a time (~9 min, 2 cores)
    python benchmarks/video_temporal_table.py --variants cfa+mit --epochs 2 --train-size 256   # a quick look
"""

import argparse
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from _environment import environment

from hf_attention.apps.cli import build_parser
from hf_attention.apps.training_video import fit_video

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
    parser.add_argument("--train-size", type=int, default=4096)
    parser.add_argument("--test-size", type=int, default=256)
    parser.add_argument("--epochs", type=float, default=20)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--jobs", type=int, default=2, help="variants trained at once, one CPU thread each")
    parser.add_argument("--output", default="benchmarks/results/video_temporal.json")
    options = parser.parse_args()
    # spawned, not forked: a fork of a process that has started torch's thread pools can hang
    with ProcessPoolExecutor(max_workers=options.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        trained = pool.map(train_variant, options.variants, [options] * len(options.variants))
        rows = dict(zip(options.variants, trained, strict=True))
    record = {
        "setup": {
            "dataset": f"moving glyphs ({options.dataset}), 8 directions, 8 frames of 32x32",
            "train_clips": options.train_size,
            "test_clips": 2 * options.test_size,
            "epochs": options.epochs,
            "learning_rate": options.learning_rate,
            "model": "hf-attention train video defaults: patches 8x8, width 32, 2 layers, 4 heads, "
            "position_embedding_std 0.5",
            "variants_at_once": options.jobs,
            **environment(1),
        },
        "results": rows,
    }
    output = Path(options.output)
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(markdown_table(record["results"]))


def train_variant(variant: str, options: argparse.Namespace) -> dict:
    """Train one variant with `hf-attention train video`'s defaults (one thread) and return its table row."""
    temporal_modeling, video_pooling = VARIANTS[variant]
    argv = ["train", "video", "--dataset", options.dataset, "--train-size", str(options.train_size)]
    argv += ["--test-size", str(options.test_size), "--epochs", str(options.epochs)]
    argv += ["--learning-rate", str(options.learning_rate), "--threads", "1"]
    argv += ["--temporal-modeling", temporal_modeling, "--video-pooling", video_pooling]
    argv += ["--output-dir", f"outputs/video-{variant.replace('+', '-')}"]
    summary = fit_video(build_parser().parse_args(argv))
    row = {
        "title": TITLES[variant],
        "temporal_modeling": temporal_modeling,
        "video_pooling": video_pooling,
        "accuracy": round(summary.accuracy, 4),
        "reversal_accuracy": round(summary.reversal_accuracy, 4),
        "eval_loss": round(summary.eval_loss, 4),
        "parameters": summary.num_parameters,
        "train_seconds": round(summary.train_seconds, 1),
    }
    print(json.dumps({variant: row}), flush=True)
    return row


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
