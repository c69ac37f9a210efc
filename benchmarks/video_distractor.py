"""What cross-frame attention adds: MIT-only vs CFA + MIT on clips of a glyph and its jumping twin (issue 35, part 4).

Every clip shows two identical copies of one real glyph (Fashion-MNIST, held-out garments at test time): one moves
coherently (8 directions, 1-2 px a frame), its twin jumps to a random place every frame; the label is the coherent
glyph's direction. No frame tells the copies apart, so what a frame's class token must keep (where the mover is)
depends on the other frames: cross-frame attention lets the frames tell each other before the class tokens are
read out, while MIT-only encodes every frame alone and must keep both places for the MIT to sort out. Every test clip
is followed by itself played backwards ("reversal accuracy": the prediction for the reversed clip is the opposite
direction of the prediction for the clip).

Both variants: a 3-layer encoder (CFA acts in every layer), X-CLIP's projection before the MIT; the MIT-only model's
MIT MLP is widened until its parameter count matches the CFA + MIT model's. Every run goes through
`hf-attention train video` (Trainer), one CPU thread, `nice -n 15`, the two variants of a seed side by side.

    python benchmarks/video_distractor.py speed             # steps/s of each variant, alone, short
    python benchmarks/video_distractor.py pilot --steps 1500
    python benchmarks/video_distractor.py full --steps 4000 --seeds 0 1 2
    python benchmarks/video_distractor.py long --steps 5000 --seeds 0   # one seed, a longer budget: a diagnostic
    python benchmarks/video_distractor.py control --steps 1900 --seeds 0  # the same models on one moving garment
    python benchmarks/video_distractor.py picture           # CFA maps of a held-out distractor clip (PNG)

Each mode updates its own part of benchmarks/results/video_distractor.json.
"""

import argparse
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the package of this checkout, whatever is installed
# the runs use this checkout's package too (`hf-attention` is the console script of `pip install -e .`)
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
RESULT = Path("benchmarks/results/video_distractor.json")
PICTURE = Path("benchmarks/results/video_distractor_cfa_maps.png")
RUNS = Path("outputs/video_distractor")
DATASET = "distractor-fashion-mnist"
BATCH_SIZE = 16
TEST_SIZE = 256  # held-out clips, each also played backwards: 512 scored
# the encoder both variants share; MIT-only gets no message tokens and a wider MIT MLP instead
SHARED = dict(num_layers=3, hidden_size=32, num_heads=4, mlp_size=64, learning_rate=2e-3)
VARIANTS = {"cfa+mit": "cross_frame", "mit-only": "none"}


def parameter_counts() -> dict[str, dict]:
    """Each variant's settings and parameter count; the MIT-only model's MIT MLP is as wide as matches the CFA model."""
    from hf_attention.configuration_video import VideoTransformerConfig
    from hf_attention.modeling_video import VideoTransformerForVideoClassification

    def count(temporal_modeling: str, mit_mlp_size: int) -> int:
        config = VideoTransformerConfig(
            image_size=32, patch_size=8, num_frames=8, hidden_size=SHARED["hidden_size"],
            num_hidden_layers=SHARED["num_layers"], num_attention_heads=SHARED["num_heads"],
            intermediate_size=SHARED["mlp_size"], temporal_modeling=temporal_modeling,
            projection_dim=SHARED["hidden_size"], mit_intermediate_size=mit_mlp_size,
            mit_num_attention_heads=SHARED["num_heads"], num_labels=8,
        )  # fmt: skip
        return VideoTransformerForVideoClassification(config).num_parameters()

    cfa = count("cross_frame", SHARED["mlp_size"])
    per_unit = 2 * SHARED["hidden_size"] + 1  # one more MIT MLP unit: a row of fc1 with its bias, a column of fc2
    wide = SHARED["mlp_size"] + round((cfa - count("none", SHARED["mlp_size"])) / per_unit)
    return {
        "cfa+mit": {"mit_mlp_size": SHARED["mlp_size"], "parameters": cfa},
        "mit-only": {"mit_mlp_size": wide, "parameters": count("none", wide)},
    }


CONTROL_DATASET = "fashion-mnist"  # one moving garment, no twin (data_video.load_moving_glyphs)
CONTROL_TRAIN_SIZE = 4096  # clips drawn once and repeated over epochs (the processor runs once over them)


def command(variant: str, seed: int, steps: int, mit_mlp_size: int, output_dir: Path, control: bool = False):
    """The `hf-attention train video` command of a run: `steps` optimizer steps on fresh distractor clips, or (the
    control) on a fixed set of single moving garments, at the same batch size and model."""
    if control:
        dataset = ["--dataset", CONTROL_DATASET, "--train-size", str(CONTROL_TRAIN_SIZE)]
        dataset += ["--epochs", str(steps * BATCH_SIZE / CONTROL_TRAIN_SIZE)]
    else:  # one epoch of fresh clips
        dataset = ["--dataset", DATASET, "--train-size", str(steps * BATCH_SIZE), "--epochs", "1"]
    return [
        "nice", "-n", "15", "hf-attention", "train", "video", *dataset,
        "--num-layers", str(SHARED["num_layers"]), "--hidden-size", str(SHARED["hidden_size"]),
        "--num-heads", str(SHARED["num_heads"]), "--mlp-size", str(SHARED["mlp_size"]),
        "--mit-mlp-size", str(mit_mlp_size), "--temporal-modeling", VARIANTS[variant],
        "--learning-rate", str(SHARED["learning_rate"]), "--batch-size", str(BATCH_SIZE),
        "--test-size", str(TEST_SIZE), "--seed", str(seed),
        "--threads", "1", "--output-dir", str(output_dir),
    ]  # fmt: skip


def train(variant: str, seed: int, steps: int, settings: dict, tag: str) -> dict:
    """One `hf-attention train video` run; its row (summary, steps, wall time, the exact command) is also written to
    the run's folder as run.json, so `collect` can gather rows of runs started by other invocations."""
    output_dir = RUNS / f"{tag}-{variant}-seed{seed}"
    argv = command(variant, seed, steps, settings["mit_mlp_size"], output_dir, control=tag == "control")
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(output_dir / "log.txt", "w") as log:  # Trainer's progress, readable while the run goes on
        returncode = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=ENV).returncode
    wall = time.perf_counter() - start
    if returncode:
        raise RuntimeError(f"{shlex.join(argv)} failed:\n{(output_dir / 'log.txt').read_text()[-3000:]}")
    row = row_of(output_dir, variant, seed, shlex.join(argv), round(wall, 1))
    (output_dir / "run.json").write_text(json.dumps(row, indent=1) + "\n")
    return row


def row_of(output_dir: Path, variant: str, seed: int, command_line: str, wall_seconds: float | None) -> dict:
    summary = json.loads((output_dir / "training_summary.json").read_text())
    steps = math.ceil(summary["train_size"] / BATCH_SIZE * summary["epochs"])  # as Trainer counts them
    reversal = {"reversal_accuracy": summary["reversal_accuracy"]}  # `train video` before it printed reversed pairs
    if "paired_reversal_accuracy" in summary:
        reversal = {
            "reversal_accuracy": summary["paired_reversal_accuracy"],
            "true_above_opposite": summary["reversal_accuracy"],
        }
    return {
        "variant": variant,
        "seed": seed,
        "command": command_line,
        "accuracy": summary["accuracy"],
        **reversal,
        "eval_loss": summary["eval_loss"],
        "steps": steps,
        "train_seconds": round(summary["train_seconds"], 1),
        "wall_seconds": wall_seconds,
        "steps_per_second": round(steps / summary["train_seconds"], 2),
        "parameters": summary["num_parameters"],
    }


def collect(tag: str, seeds: list[int], steps: int, previous: list[dict]) -> list[dict]:
    """Rows of finished runs `tag`-*-seed*: the row already recorded, else their run.json, else rebuilt from their
    summary (wall time then unknown: None)."""
    settings, rows = parameter_counts(), []
    recorded = {(row["variant"], row["seed"]): row for row in previous}
    for seed in seeds:
        for variant in VARIANTS:
            output_dir = RUNS / f"{tag}-{variant}-seed{seed}"
            if (variant, seed) in recorded:
                rows.append(recorded[variant, seed])
                continue
            if (output_dir / "run.json").exists():
                rows.append(json.loads((output_dir / "run.json").read_text()))
                continue
            argv = command(variant, seed, steps, settings[variant]["mit_mlp_size"], output_dir)
            rows.append(row_of(output_dir, variant, seed, shlex.join(argv), None))
    return rows


def run_pairs(seeds: list[int], steps: int, tag: str, parallel: bool = False) -> list[dict]:
    """Both variants of a seed at once (one thread each, so they see the same machine), seed after seed; with
    `parallel`, every seed at once."""
    settings = parameter_counts()
    groups = [seeds] if parallel else [[seed] for seed in seeds]
    rows = []
    for group in groups:
        jobs = [(variant, seed) for seed in group for variant in VARIANTS]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            futures = [pool.submit(train, variant, seed, steps, settings[variant], tag) for variant, seed in jobs]
            rows += [future.result() for future in futures]
        print(json.dumps(rows[-len(jobs) :], indent=1), flush=True)
    return rows


def criterion(rows: list[dict], seeds: list[int]) -> dict:
    """Per seed: CFA + MIT reversal accuracy >= MIT-only + 0.15 and 8-way accuracy >= MIT-only + 0.10."""
    per_seed = {}
    for seed in seeds:
        cfa, mit = (next(r for r in rows if r["seed"] == seed and r["variant"] == v) for v in VARIANTS)
        reversal_gain = cfa["reversal_accuracy"] - mit["reversal_accuracy"]
        accuracy_gain = cfa["accuracy"] - mit["accuracy"]
        per_seed[str(seed)] = {
            "reversal_gain": round(reversal_gain, 4),
            "accuracy_gain": round(accuracy_gain, 4),
            "met": reversal_gain >= 0.15 and accuracy_gain >= 0.10,
        }
    return per_seed


def machine() -> dict:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load_average_1_5_15_at_write": [round(x, 2) for x in load],
    }


METRICS = {
    "accuracy": "8-way accuracy on the 512 held-out clips (chance 0.125)",
    "reversal_accuracy": "share of the 256 (clip, clip played backwards) pairs where the prediction for the reversed "
    "clip is the opposite direction of the prediction for the clip (the criterion's reversal accuracy)",
    "true_above_opposite": "share of clips whose true direction scores above its opposite (what `hf-attention train "
    "video` prints as reversal accuracy; 0.5 for any order-free model)",
    "eval_loss": "cross-entropy on the held-out clips (chance ln 8 = 2.079)",
    "cfa_max_distance_from_uniform": "per encoder layer, the largest |p - 1/8| of any cross-frame attention weight "
    "over the held-out clips and heads: 0 means CFA passed every frame the plain mean of the messages",
}
NOTES = [
    "Batch size: the speed rows ran at batch 32; the pilot, full and long runs at batch 16 (twice the optimizer steps "
    "for the same clips, chosen after the speed rows showed how little CPU time a nice-15 job gets here).",
    "The training clips are drawn afresh for every batch (no clip is seen twice), so train loss is a held-out loss.",
    "train_loss: Trainer's logged training loss every 50 steps, read from each run's log; chance is ln 8 = 2.079.",
    "reversal_accuracy and true_above_opposite are computed after training from each saved model (evaluate()), on the "
    "same held-out clips as Trainer's accuracy, which the re-evaluation reproduces.",
    "parameters: the MIT-only model's MIT MLP is widened (mit_mlp_size) until it matches the CFA + MIT model's count.",
]


def loss_curve(output_dir: Path) -> list[float]:
    """Trainer's logged training loss (every 50 steps) from a run's log."""
    log = output_dir / "log.txt"
    return [float(value) for value in re.findall(r"'loss': '([0-9.]+)'", log.read_text())] if log.exists() else []


def evaluate(output_dir: Path) -> dict:
    """The saved model on the held-out pairs (the same 512 clips for every seed): accuracy, reversal accuracy (the
    prediction for a reversed clip is the opposite of the prediction for the clip) and how often the true direction
    scores above its opposite (what `train video` prints as "reversal accuracy")."""
    import numpy as np
    import torch

    from hf_attention.apps.data_video import load_distractor_clips, opposite
    from hf_attention.apps.training_video import paired_reversal_accuracy
    from hf_attention.modeling_video import VideoTransformerForVideoClassification

    torch.set_num_threads(1)
    test = load_distractor_clips(DATASET, train_size=1, test_size=TEST_SIZE)["test"]
    model = VideoTransformerForVideoClassification.from_pretrained(output_dir).eval()
    with torch.no_grad():
        outputs = [model(pixel_values=batch, output_attentions=True) for batch in test.pixel_values.split(64)]
    logits = torch.cat([output.logits for output in outputs]).numpy()
    labels = test.labels.numpy()
    rows, opposites = np.arange(len(labels)), np.array([opposite(int(label)) for label in labels])
    evaluated = {
        "accuracy": float((logits.argmax(-1) == labels).mean()),
        "reversal_accuracy": paired_reversal_accuracy(logits.argmax(-1)),
        "true_above_opposite": float((logits[rows, labels] > logits[rows, opposites]).mean()),
    }
    if outputs[0].cross_frame_attentions:  # how far each layer's CFA is from a plain mean over the frames
        layers = zip(*(output.cross_frame_attentions for output in outputs), strict=True)
        maps = [torch.cat(layer) for layer in layers]
        evaluated["cfa_max_distance_from_uniform"] = [round(float((m - 1 / m.shape[-1]).abs().max()), 4) for m in maps]
    return evaluated


def complete(part: dict, mode: str) -> None:
    """Every row of a part with its training loss curve and the brief's reversal accuracy (evaluated once from the
    saved model), and the part's criterion from them."""
    for row in part.get("rows", []):
        output_dir = RUNS / f"{mode}-{row['variant']}-seed{row['seed']}"
        row["train_loss"] = loss_curve(output_dir)
        if "true_above_opposite" not in row:
            evaluated = evaluate(output_dir)
            if abs(evaluated["accuracy"] - row["accuracy"]) > 1e-6:
                raise RuntimeError(f"{output_dir}: re-evaluated accuracy {evaluated} differs from the run's {row}.")
            row.update(evaluated)
    if part.get("rows") and mode != "control":
        part["per_seed"] = criterion(part["rows"], part["seeds"])
        part["criterion_met"] = all(seed["met"] for seed in part["per_seed"].values())


def update(part: dict) -> None:
    record = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    record.update(part)
    record["notes"] = NOTES
    record["definitions"] = METRICS
    record.pop("metrics", None)
    for mode in ("pilot", "full", "long", "control"):
        complete(record.get(mode, {}), mode)
    if record.get("full", {}).get("rows"):  # the result, at the top: the full runs (the other parts explain it)
        for key in ("command", "seeds", "criterion", "criterion_met", "rows"):
            record[key] = record["full"][key]
    record["what"] = __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1]
    record["data"] = {
        "dataset": DATASET,
        "clip": "8 frames of 32x32, two copies of one Fashion-MNIST garment resized to 12x12 on a torus canvas",
        "train": "clips drawn afresh for every batch from the 60,000 training garments (no clip seen twice)",
        "test": f"{TEST_SIZE} clips of the 10,000 test garments, each followed by itself reversed ({2 * TEST_SIZE})",
        "chance": {"accuracy": 0.125, "reversal_accuracy": 0.5},
    }
    record["model"] = {**SHARED, "patch_size": 8, "projection_dim": SHARED["hidden_size"], "mit_layers": 1,
                       "dropout": 0.1, "variants": parameter_counts()}  # fmt: skip
    RESULT.write_text(json.dumps(record, indent=2) + "\n")


def speed(steps: int) -> None:
    """Steps per second of each variant alone (one thread), short: the budget of the full runs comes from it."""
    settings = parameter_counts()
    rows = [train(variant, 0, steps, settings[variant], "speed") for variant in VARIANTS]
    update({"speed": {"note": "each variant alone, one thread, nice 15, the cores shared with other jobs",
                      "machine": machine(), "rows": rows}})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("speed", "pilot", "full", "long", "control", "collect", "picture"))
    parser.add_argument("--parallel", action="store_true", help="train every seed at once, not pair after pair")
    parser.add_argument("--tag", default="full", help="collect: the runs to gather (their mode)")
    parser.add_argument("--steps", type=int, default=4000, help="optimizer steps of every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--others", default="", help="what else ran on the machine, recorded as given")
    options = parser.parse_args()
    if options.mode == "speed":
        return speed(options.steps)
    if options.mode == "picture":
        return picture()
    seeds = options.seeds if options.mode in ("full", "collect") else options.seeds[:1]
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    mode = options.tag if options.mode == "collect" else options.mode
    record = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    previous = record.get(mode, {})
    if options.mode == "collect":
        rows = collect(mode, seeds, options.steps, previous.get("rows", []))
    else:
        rows = run_pairs(seeds, options.steps, options.mode, options.parallel)
    part = {
        "command": f"python benchmarks/video_distractor.py {mode} --steps {options.steps} --seeds "
        + " ".join(map(str, seeds)),
        "started_utc": previous.get("started_utc", started) if options.mode == "collect" else started,
        "seeds": seeds,
        "steps": options.steps,
        "rows": rows,
        "criterion": "every seed: CFA + MIT reversal accuracy >= MIT-only + 0.15 and accuracy >= MIT-only + 0.10",
        "machine": machine(),
        **(
            {
                "what": "a control, no criterion: the same models and budget on one moving garment with no twin "
                "(--dataset fashion-mnist: 4,096 fixed clips repeated over epochs), to tell whether anything is "
                "learned at this budget at all"
            }
            if mode == "control"
            else {}
        ),
        "others_running": options.others or previous.get("others_running", ""),
    }
    update({mode: part})


def picture() -> None:
    """Write the first held-out distractor clip as an .mp4; draw the CFA + MIT model's maps with `hf-attention show`."""
    import numpy as np

    from hf_attention.apps.data_video import load_distractor_clips, write_mp4

    clips = load_distractor_clips(DATASET, train_size=1, test_size=4)["test_clips"]
    frames = np.repeat((clips[0].numpy() * 255).round().astype(np.uint8)[..., None], 3, axis=-1)
    video = write_mp4(RUNS / "distractor_clip.mp4", frames)
    model = RUNS / "full-cfa+mit-seed0"
    argv = ["hf-attention", "show", str(model), str(video), "--output", str(PICTURE)]
    subprocess.run(argv, check=True, env=ENV)
    update({"picture": {"command": shlex.join(argv), "file": str(PICTURE)}})


if __name__ == "__main__":
    main()
