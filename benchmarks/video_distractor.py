"""What cross-frame attention adds: MIT-only vs CFA + MIT on clips of a glyph and its jumping twin (issue 35, part 4).

Every clip shows two identical copies of one real glyph (Fashion-MNIST, held-out garments at test time): one moves
coherently (8 directions, 1-2 px a frame), its twin jumps to a random place every frame; the label is the coherent
glyph's direction. No frame tells the copies apart, so what a frame's class token must keep (where the mover is)
depends on the other frames: cross-frame attention lets the frames tell each other before the class tokens are
read out, while MIT-only encodes every frame alone and must keep both places for the MIT to sort out. Every test clip
is followed by itself played backwards ("reversal accuracy": the true direction scores above its opposite).

Both variants: a 3-layer encoder (CFA acts in every layer), X-CLIP's projection before the MIT; the MIT-only model's
MIT MLP is widened until its parameter count matches the CFA + MIT model's. Every run goes through
`hf-attention train video` (Trainer), one CPU thread, default nice, one run at a time.

    python benchmarks/video_distractor.py pilots            # gather the pilot runs (outputs/video_distractor/p2-*)
    python benchmarks/video_distractor.py table --steps 2400 --seeds 0 1 2   # the six runs, one after another
    python benchmarks/video_distractor.py picture           # CFA maps of a held-out distractor clip (PNG)

Each mode updates its own part of benchmarks/results/video_distractor.json; the first attempt's record (batch 16,
every run on the ln 8 plateau) is kept under `earlier_attempt`.
"""

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the package of this checkout, whatever is installed
# the runs use this checkout's package too (`hf-attention` is the console script of `pip install -e .`)
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
RESULT = Path("benchmarks/results/video_distractor.json")
PICTURE = Path("benchmarks/results/video_distractor_cfa_maps.png")
RUNS = Path("outputs/video_distractor")
DATASET = "distractor-fashion-mnist"
BATCH_SIZE = 32
TEST_SIZE = 256  # held-out clips, each also played backwards: 512 scored
CHANCE_LOSS = 2.0794  # ln 8
# the encoder both variants share; MIT-only gets no message tokens and a wider MIT MLP instead
SHARED = dict(num_layers=3, hidden_size=32, num_heads=4, mlp_size=64, learning_rate=2e-3)
# the training recipe both variants share, chosen by the pilots (see the JSON's `pilots` and `recipe`)
RECIPE = ["--no-wrap", "--twin-ramp-steps", "1000", "--initializer-factor", "2"]
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


def command(variant: str, seed: int, steps: int, mit_mlp_size: int, output_dir: Path) -> list[str]:
    """The `hf-attention train video` command of a table run: `steps` optimizer steps of batch 32 on fresh distractor
    clips (one epoch of steps * 32 clips), the shared recipe."""
    return [
        "hf-attention", "train", "video", "--dataset", DATASET, "--train-size", str(steps * BATCH_SIZE),
        "--epochs", "1", "--num-layers", str(SHARED["num_layers"]), "--hidden-size", str(SHARED["hidden_size"]),
        "--num-heads", str(SHARED["num_heads"]), "--mlp-size", str(SHARED["mlp_size"]),
        "--mit-mlp-size", str(mit_mlp_size), "--temporal-modeling", VARIANTS[variant],
        "--learning-rate", str(SHARED["learning_rate"]), "--batch-size", str(BATCH_SIZE),
        "--test-size", str(TEST_SIZE), *RECIPE, "--seed", str(seed), "--threads", "1", "--output-dir", str(output_dir),
    ]  # fmt: skip


def load_and_others() -> dict:
    """The 1/5/15-minute load and the busiest processes: what shared the cores with a run."""
    busiest = subprocess.run(["ps", "-eo", "pcpu,ni,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    return {
        "load_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "busiest": [line.strip()[:160] for line in busiest.splitlines()[1:5]],
    }


def loss_curve(log: Path) -> list[float]:
    """Trainer's logged training loss (every 50 steps) from a run's log."""
    return [float(value) for value in re.findall(r"'loss': '([0-9.]+)'", log.read_text())] if log.exists() else []


def left_plateau_at(curve: list[float]) -> int | None:
    """The first logged step whose training loss is 0.05 below ln 8 (None: the run never left the plateau)."""
    return next(((i + 1) * 50 for i, loss in enumerate(curve) if loss < CHANCE_LOSS - 0.05), None)


def summary_metrics(output_dir: Path) -> dict:
    """The run's own summary: the metrics `hf-attention train video` prints."""
    summary = json.loads((output_dir / "training_summary.json").read_text())
    return {
        "accuracy": summary["accuracy"],
        "reversal_accuracy": summary["reversal_accuracy"],
        "paired_reversal_accuracy": summary["paired_reversal_accuracy"],
        "eval_loss": round(summary["eval_loss"], 4),
        "train_seconds": round(summary["train_seconds"], 1),
        "parameters": summary["num_parameters"],
    }


def train(variant: str, seed: int, steps: int, mit_mlp_size: int) -> dict:
    """One table run; its row is also written to the run's folder as run.json."""
    output_dir = RUNS / f"table-{variant}-seed{seed}"
    argv = command(variant, seed, steps, mit_mlp_size, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    before, start = load_and_others(), time.perf_counter()
    with open(output_dir / "log.txt", "w") as log:  # Trainer's progress, readable while the run goes on
        returncode = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=ENV).returncode
    wall = time.perf_counter() - start
    if returncode:
        raise RuntimeError(f"{shlex.join(argv)} failed:\n{(output_dir / 'log.txt').read_text()[-3000:]}")
    row = {"variant": variant, "seed": seed, "command": shlex.join(argv), **summary_metrics(output_dir)}
    curve = loss_curve(output_dir / "log.txt")
    row |= {"steps": steps, "wall_seconds": round(wall, 1), "steps_per_second": round(steps / row["train_seconds"], 2)}
    row |= {"left_plateau_at_step": left_plateau_at(curve), "train_loss": curve, "machine_before": before}
    row |= {"machine_after": load_and_others(), **cfa_distance(output_dir)}
    (output_dir / "run.json").write_text(json.dumps(row, indent=1) + "\n")
    return row


def cfa_distance(output_dir: Path) -> dict:
    """Per encoder layer, the largest |p - 1/8| of any CFA weight over the held-out clips: 0 is a plain mean."""
    import torch

    from hf_attention.apps.data_video import load_distractor_clips
    from hf_attention.modeling_video import VideoTransformerForVideoClassification

    model = VideoTransformerForVideoClassification.from_pretrained(output_dir).eval()
    if model.config.temporal_modeling != "cross_frame":
        return {}
    test = load_distractor_clips(DATASET, train_size=1, test_size=TEST_SIZE, wrap="--no-wrap" not in RECIPE)["test"]
    with torch.no_grad():
        outputs = [model(pixel_values=batch, output_attentions=True) for batch in test.pixel_values.split(64)]
    maps = [torch.cat(layer) for layer in zip(*(output.cross_frame_attentions for output in outputs), strict=True)]
    return {"cfa_max_distance_from_uniform": [round(float((m - 1 / m.shape[-1]).abs().max()), 4) for m in maps]}


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


def table(seeds: list[int], steps: int) -> dict:
    """The six runs, seed after seed, CFA + MIT then MIT-only, one at a time in this process."""
    settings, rows = parameter_counts(), []
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for seed in seeds:
        for variant in VARIANTS:
            rows.append(train(variant, seed, steps, settings[variant]["mit_mlp_size"]))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "train_loss"}), flush=True)
    per_seed = criterion(rows, seeds)
    return {
        "command": f"python benchmarks/video_distractor.py table --steps {steps} --seeds {' '.join(map(str, seeds))}",
        "started_utc": started,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seeds": seeds,
        "steps": steps,
        "batch_size": BATCH_SIZE,
        "recipe": RECIPE,
        "rows": rows,
        "per_seed": per_seed,
        "criterion_met": all(seed["met"] for seed in per_seed.values()),
        "machine": machine(),
    }


def pilots() -> list[dict]:
    """Every pilot run (outputs/video_distractor/p2-<name>, run one at a time by a queue): its command, loss curve,
    where it left the plateau, its held-out metrics and the load around it."""
    found = []
    for folder in sorted(RUNS.glob("p2-*"), key=lambda path: path.stat().st_mtime):
        if not (folder / "training_summary.json").exists():
            continue
        curve = loss_curve(folder / "log.txt")
        machine_lines = (folder / "machine.txt").read_text().splitlines()
        found.append(
            {
                "name": folder.name.removeprefix("p2-"),
                "command": (folder / "command.txt").read_text().strip(),
                "steps": len(curve) * 50,
                **summary_metrics(folder),
                "left_plateau_at_step": left_plateau_at(curve),
                "train_loss": curve,
                "machine": [line.strip() for line in machine_lines if line.strip()],
            }
        )
    for pilot in found:
        pilot["steps_per_second"] = round(pilot["steps"] / pilot["train_seconds"], 2)
    return found


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load_average_1_5_15_at_write": [round(x, 2) for x in os.getloadavg()],
    }


DEFINITIONS = {
    "accuracy": "8-way accuracy on the 512 held-out clips (256 clips of test-split garments, each followed by itself "
    "played backwards; chance 0.125)",
    "reversal_accuracy": "the criterion's reversal accuracy: share of held-out clips whose true direction scores above "
    "its opposite (the same clip played backwards), as `hf-attention train video` prints it; 0.5 for any model that "
    "ignores frame order",
    "paired_reversal_accuracy": "share of the 256 (clip, clip played backwards) pairs whose second prediction is the "
    "opposite direction of the first (`train video` prints it as `reversed pairs`; 0 for a model that ignores frame "
    "order). The earlier attempt's JSON called this `reversal_accuracy` and the other `true_above_opposite`; its rows "
    "are renamed here so that one name means one thing",
    "eval_loss": "cross-entropy on the held-out clips (chance ln 8 = 2.079)",
    "left_plateau_at_step": "first logged step (every 50) whose training loss is 0.05 below ln 8; null: never",
    "cfa_max_distance_from_uniform": "per encoder layer, the largest |p - 1/8| of any cross-frame attention weight "
    "over the held-out clips and heads: 0 means CFA passed every frame the plain mean of the messages",
}


PILOT_NOTES = {
    "what": "pilots of the recipe, CFA + MIT unless named -mit (MIT-only, MIT MLP 311), seed 0, 1,500 steps of batch "
    "32 (a cosine schedule over 1,500 steps, warmup 0.1), one at a time, default nice; the held-out clips always "
    "carry the twin, so a solo pilot's accuracy is on the harder clips it never saw",
    "solo-base": "the first attempt's recipe on clips without the twin (--twin-ramp-steps 100000: the twin's chance "
    "stays under 1.5%): flat at ln 8 for all 1,500 steps",
    "solo-nodrop": "same, dropout 0 and weight decay 0: flat, the same curve to the third decimal",
    "solo-init2": "same, --initializer-factor 2: flat",
    "solo-nowrap": "same, --no-wrap (the glyph stays whole inside the canvas): leaves the plateau at ~850 steps, "
    "but learns the axis of motion only (held-out reversal accuracy 0.49)",
    "dist-nowrap-ramp1000-cfa": "the twin phased in over the first 1,000 steps, --no-wrap: leaves ln 8 at ~900 "
    "steps, axis only (accuracy 0.25, reversal accuracy 0.49)",
    "dist-nowrap-ramp1000-mit": "same for MIT-only: leaves it at ~500, axis only (0.34, 0.51)",
    "dist-nowrap-ramp1000-cfa-init2": "same with --initializer-factor 2: leaves it at ~500 steps and learns the sign "
    "too: accuracy 0.66, reversal accuracy 0.96",
    "dist-nowrap-ramp1000-mit-init2": "same for MIT-only: leaves it at ~150 steps, accuracy 0.70, reversal 0.97",
    "dist-nowrap-ramp1000-cfa-lr5e-3": "stopped after ~30 steps (not recorded): the init2 pilot had already shown "
    "the way and the table needed the CPU",
    "dist-wrap-ramp1000-cfa-init2": "after the table: the table's recipe on a torus (no --no-wrap): flat at ln 8 for "
    "all 1,500 steps, so the initialisation alone does not do it",
    "dist-wrap-ramp1000-mit-init2": "same for MIT-only: flat",
    "dist-nowrap-ramp1000-cfa-init2-hidden16": "after the table: the table's recipe at hidden size 16 (MLP 32), to "
    "test whether a narrower class token, which can hold less about two copies, makes CFA matter: accuracy 0.39, "
    "reversal accuracy 0.81",
    "dist-nowrap-ramp1000-mit-init2-hidden16": "same for MIT-only (MIT MLP widened to 159: 17,031 vs 17,016 "
    "parameters): accuracy 0.63, reversal accuracy 0.96: MIT-only still ahead, further ahead than at hidden 32",
    "long6000-cfa-seed0": "after the table: the table's command for CFA + MIT seed 0 at twice the budget (6,000 "
    "steps, --train-size 192000): accuracy 0.967, reversal accuracy 0.994, paired 0.980",
    "long6000-mit-seed0": "same for MIT-only: accuracy 0.947, reversal accuracy 0.992, paired 0.965: gains +0.020 "
    "and +0.002 at twice the budget, the verdict unchanged (one seed)",
}
NOTES = [
    "Result: with the recipe both variants leave the plateau within 200-350 steps and reach 0.83-0.89 accuracy and "
    "0.99 reversal accuracy in 3,000 steps, but CFA + MIT is not better than the matched MIT-only model (accuracy "
    "gain -0.049, +0.027, +0.027; reversal gain -0.004, -0.006, +0.010): the criterion fails on every seed. MIT-only "
    "leaves the plateau as early or earlier (seed 0: 200 vs 350 steps) and, in the 1,500-step pilots at hidden 32 "
    "and 16, leads. A reading, not measured: a frame's class token can carry both copies' places and the widened MIT "
    "finds the coherent track itself, so picking the mover before the read-out (what CFA adds) is not needed here; "
    "the hidden-16 pilots argue against the obvious capacity fix (MIT-only's lead grows when the token narrows).",
    "CFA is used: its first layer is a plain mean (max distance from uniform 0.0: every frame's class token is the "
    "same before any layer has run), its second and third are nearly one-hot (0.875 = 1 - 1/8) on the held-out clips.",
    "Why the plateau: at X-CLIP's initialisation a frame's class token hardly depends on the frame (`python "
    "benchmarks/video_probes.py init`, 128 held-out clips: its spread across clips is 2.7-2.9% of its size, so the "
    "video embedding is nearly a constant and the loss sits at ln 8 while only the label frequencies are fitted: the "
    "pilots at factor 1 print nearly the same losses for their first 300 steps, whatever else they change). "
    "--initializer-factor 2 (config.initializer_factor: every X-CLIP init std doubled, attention logits four times "
    "larger) raises that spread to 12-18%. This agrees with Gopalani and Hu (2025, 'What happens during the loss "
    "plateau?'): slow learning of the attention maps, with hidden states nearly parallel across inputs, makes the "
    "plateau, and acting on the attention shortens it.",
    "Why the torus mattered: on a torus the direction is a product of two frames' positions (where the glyph is now "
    "against where it was), a second-order function the MIT must build from near-uniform attention; with the glyph "
    "kept whole inside the canvas (--no-wrap) a frame's position is a straight line in time, and a difference of "
    "late and early frames (first order) tells the direction. The cost: the mover's first and last places lean "
    "towards the label's edges (a single frame hints at the direction, for both variants alike); a model that "
    "ignores frame order still scores exactly 0.5 reversal accuracy on the reversed pairs.",
    "The curriculum (--twin-ramp-steps 1000: the chance that a training clip shows the twin rises from 0 to 1 over "
    "the first 1,000 steps) gives both variants the same clip stream, seed for seed; held-out clips always show it.",
    "The training clips are drawn afresh for every batch (no clip is seen twice), so train loss is a held-out loss.",
    "parameters: the MIT-only model's MIT MLP is widened to 311 units, matching the CFA + MIT model's count "
    "(58,623 vs 58,600).",
    "steps_per_second: training steps over Trainer's training time, one thread, with the other helpers' and the "
    "lead's jobs on the same 2 cores (machine_before / machine_after in each row).",
]


def earlier_attempt(record: dict) -> dict:
    """The first attempt's record, its metrics renamed to this file's definitions."""
    earlier = {key: value for key, value in record.items() if key not in ("what", "definitions")}

    def rename(node) -> None:  # every record that held `true_above_opposite`, at any depth
        children = node if isinstance(node, list) else list(node.values()) if isinstance(node, dict) else []
        if isinstance(node, dict) and "true_above_opposite" in node:
            if "reversal_accuracy" in node:
                node["paired_reversal_accuracy"] = node.pop("reversal_accuracy")
            node["reversal_accuracy"] = node.pop("true_above_opposite")
        for child in children:
            rename(child)

    rename(earlier)
    earlier["note"] = (
        "batch 16 (speed rows 32), nice 15, up to 5,000 steps, two runs side by side on a crowded machine; every "
        "distractor run stayed on the ln 8 plateau. Its commands ran the script of that time (modes speed, pilot, "
        "full, long, control), whose clips wrapped around the canvas; held-out clips were drawn with one random draw "
        "fewer per clip than now (the twin's probability), so its test set differs from the current one."
    )
    return earlier


def update(part: dict) -> None:
    record = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    if record and "earlier_attempt" not in record:
        record = {"earlier_attempt": earlier_attempt(record)}
    record.update(part)
    if "table" in record:  # the result at the top, as every demonstration's JSON has it
        for key in ("command", "seeds", "steps", "rows", "per_seed", "criterion_met"):
            record[key] = record["table"][key]
    else:
        record |= {"command": None, "seeds": [], "rows": [], "criterion_met": False}
    record["criterion"] = "every seed: CFA + MIT reversal accuracy >= MIT-only + 0.15 and accuracy >= MIT-only + 0.10"
    record["what"] = __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1]
    record["definitions"] = DEFINITIONS
    record["pilot_notes"] = PILOT_NOTES
    record["notes"] = NOTES
    record["data"] = {
        "dataset": DATASET,
        "clip": "8 frames of 32x32, two copies of one Fashion-MNIST garment resized to 12x12, "
        + ("both kept whole inside the canvas (--no-wrap)" if "--no-wrap" in RECIPE else "on a torus canvas"),
        "train": "clips drawn afresh for every batch from the 60,000 training garments (no clip seen twice)",
        "test": f"{TEST_SIZE} clips of the 10,000 test garments, each followed by itself reversed ({2 * TEST_SIZE})",
        "chance": {"accuracy": 0.125, "reversal_accuracy": 0.5},
    }
    record["model"] = {**SHARED, "patch_size": 8, "projection_dim": SHARED["hidden_size"], "mit_layers": 1,
                       "dropout": 0.1, "variants": parameter_counts()}  # fmt: skip
    first = ("what", "command", "seeds", "steps", "criterion", "criterion_met", "per_seed", "rows", "definitions")
    last = ("pilots", "pilot_notes", "picture", "earlier_attempt")  # the table's evidence, then the first attempt
    order = [*first, *(key for key in record if key not in first + last), *last]
    record = {key: record[key] for key in order if key in record}
    RESULT.write_text(json.dumps(record, indent=2) + "\n")


def picture() -> None:
    """Write the first held-out distractor clip as an .mp4; draw the CFA + MIT model's maps with `hf-attention show`."""
    import numpy as np

    from hf_attention.apps.data_video import load_distractor_clips, write_mp4

    wrap = "--no-wrap" not in RECIPE
    clips = load_distractor_clips(DATASET, train_size=1, test_size=4, wrap=wrap)["test_clips"]
    frames = np.repeat((clips[0].numpy() * 255).round().astype(np.uint8)[..., None], 3, axis=-1)
    video = write_mp4(RUNS / "distractor_clip.mp4", frames)
    argv = ["hf-attention", "show", str(RUNS / "table-cfa+mit-seed0"), str(video), "--output", str(PICTURE)]
    subprocess.run(argv, check=True, env=ENV)
    update({"picture": {"command": shlex.join(argv), "file": str(PICTURE)}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("pilots", "table", "picture"))
    parser.add_argument("--steps", type=int, default=2400, help="optimizer steps of every table run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    options = parser.parse_args()
    if options.mode == "pilots":
        update({"pilots": pilots()})
    elif options.mode == "table":
        update({"table": table(options.seeds, options.steps)})
    else:
        picture()


if __name__ == "__main__":
    main()
