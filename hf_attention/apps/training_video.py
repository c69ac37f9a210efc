"""`hf-attention train video`: an X-CLIP video classifier fine-tuned with `transformers.Trainer` on moving glyphs.

The default data are clips of a real glyph moving across a canvas (data_video.py); the label is the direction of
motion, which no single frame and no order-free summary of the frames reveals. The clips go through transformers'
`VideoMAEImageProcessor` (its PIL backend), which is saved next to the model so that
`pipeline("video-classification", model=output_dir)` classifies .mp4 files.

    hf-attention train video                                   # 8 directions of moving digits
    hf-attention train video --temporal-modeling none          # the same encoder without cross-frame attention
    hf-attention train video --from-pretrained xclip-b32       # fine-tune a converted X-CLIP checkpoint
    hf-attention train video --dataset distractor-fashion-mnist --num-layers 3   # a glyph and its jumping twin
    hf-attention train video --dataset distractor-fashion-mnist --num-layers 3 --no-wrap --twin-ramp-steps 1000 \
        --initializer-factor 2 --train-size 96000 --epochs 1   # the recipe of benchmarks/video_distractor.py

With `--dataset distractor-*` every clip shows two copies of one glyph, one moving, its twin jumping at random
(data_video.make_distractor_clips): training clips are drawn afresh for every batch in torch, straight to the pixel
values the saved processor would give. From scratch these clips sit on the ln 8 plateau unless the glyphs stay inside
the canvas (`--no-wrap`) and the initialisation is scaled up (`--initializer-factor 2`); `--twin-ramp-steps` phases the
twin in (see benchmarks/results/video_distractor.json).
"""

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from .training import TrainingSummary, save_for_pipeline, training_arguments

# defaults of the flags every `train` command shares, when not given
VIDEO_DEFAULTS = {"epochs": 20, "batch_size": 32, "learning_rate": 2e-3, "train_size": 4096}
VIDEO_DATASETS = ("digits", "fashion-mnist", "distractor-fashion-mnist", "distractor-digits")


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `train video` beyond the ones every `train` command shares."""
    from ..configuration_video import TEMPORAL_MODELING_TYPES, VIDEO_POOLING_TYPES

    parser.add_argument("--output-dir", default="outputs/video", help="where the model and processor are saved")
    parser.add_argument("--test-size", type=int, default=256, help="held-out clips (each also played backwards)")
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--mlp-size", type=int, default=64, help="width of the MLP hidden layer")
    parser.add_argument("--mit-mlp-size", type=int, help="width of the MIT's MLP hidden layer (default: --mlp-size)")
    parser.add_argument("--mit-layers", type=int, default=1, help="layers of the multi-frame integration transformer")
    parser.add_argument("--glyph-size", type=int, help="glyph size in pixels (default: half the canvas; 3/8 with two)")
    parser.add_argument(
        "--position-embedding-std",
        type=float,
        default=0.5,
        help="init std of the spatial position embeddings (X-CLIP's is 0.02; see the video page of the docs)",
    )
    parser.add_argument(
        "--initializer-factor",
        type=float,
        default=1.0,
        help="scale of X-CLIP's initialisation (config.initializer_factor): above 1, sharper attention at the start",
    )
    parser.add_argument(
        "--twin-ramp-steps",
        type=int,
        default=0,
        help="distractor clips: a curriculum, the chance a training clip shows the twin rising from 0 to 1 over the "
        "first this many steps (0: every clip has its twin from the start; held-out clips always have it)",
    )
    parser.add_argument(
        "--no-wrap",
        dest="wrap",
        action="store_false",
        help="distractor clips: keep both copies whole inside the canvas instead of wrapping around it (a torus)",
    )
    parser.add_argument(
        "--lr-scheduler",
        choices=("cosine", "linear", "constant_with_warmup"),
        default="cosine",
        help="learning-rate schedule after the warmup",
    )
    parser.add_argument("--temporal-modeling", choices=TEMPORAL_MODELING_TYPES, default="cross_frame")
    parser.add_argument("--video-pooling", choices=VIDEO_POOLING_TYPES, default="mit", help="MIT or plain mean")
    parser.add_argument("--from-pretrained", metavar="FOLDER", help="fine-tune a saved (e.g. converted X-CLIP) model")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (these models are small: 1 is fastest)"
    )


def processor_settings(image_size: int) -> dict:
    """Frames resized and centre-cropped to `image_size`, normalised to [-1, 1]."""
    crop_size = {"height": image_size, "width": image_size}
    return dict(size={"shortest_edge": image_size}, crop_size=crop_size, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def make_video_processor(image_size: int):
    """The models' video processor (the operations of transformers' `VideoMAEImageProcessorPil`), saved beside the
    model so that `pipeline("video-classification")` gets a video processor (an image processor there is
    deprecated)."""
    from ..video_processing_video import VideoTransformerVideoProcessor

    return VideoTransformerVideoProcessor(**processor_settings(image_size))


def make_frame_processor(image_size: int):
    """transformers' `VideoMAEImageProcessorPil` with the video processor's settings: saved beside it for readers that
    cannot load a video processor (transformers' `AutoVideoProcessor` and `AutoProcessor`'s video branch need
    torchvision), such as `hf-attention show` on a CPU-only torch."""
    from transformers import VideoMAEImageProcessorPil

    return VideoMAEImageProcessorPil(**processor_settings(image_size))


def preprocess_clips(dataset, processor):
    """uint8 clips -> pixel_values (frames, 3, H, W) once, held as one tensor: the processor would otherwise run
    again for every clip of every epoch, and reading Array4D rows back out of Arrow costs more than a training step."""
    import torch

    from .training import ProcessedImages

    def preprocess(batch):
        videos = [list(video) for video in batch["video"]]
        return {"pixel_values": processor(videos, return_tensors="np")["pixel_values"]}

    processed = dataset.with_format("numpy").map(
        preprocess, batched=True, batch_size=64, remove_columns=["video"], keep_in_memory=True
    )
    pixel_values = torch.from_numpy(processed.with_format("numpy")[:]["pixel_values"])
    return ProcessedImages(pixel_values, torch.tensor(processed["label"]))


def video_metrics(eval_prediction) -> dict[str, float]:
    """8-way accuracy; how often the true direction scores above its opposite (0.5 for any order-free model); and how
    often the prediction for a reversed clip is the opposite of the prediction for the clip (the held-out split holds
    every clip followed by itself reversed)."""
    import numpy as np

    from .data_video import opposite

    logits, labels = eval_prediction
    rows = np.arange(len(labels))
    opposites = np.array([opposite(int(label)) for label in labels])
    return {
        "accuracy": float((logits.argmax(axis=-1) == labels).mean()),
        "reversal_accuracy": float((logits[rows, labels] > logits[rows, opposites]).mean()),
        "paired_reversal_accuracy": paired_reversal_accuracy(logits.argmax(axis=-1)),
    }


def paired_reversal_accuracy(predictions) -> float:
    """Share of (clip, reversed clip) pairs, held as consecutive rows, whose second prediction is the opposite
    direction of the first."""
    from .data_video import opposite

    if len(predictions) % 2:
        raise ValueError(f"Predictions of (clip, reversed clip) pairs come in an even number, got {len(predictions)}.")
    pairs = [(int(a), int(b)) for a, b in zip(predictions[0::2], predictions[1::2], strict=True)]
    return sum(b == opposite(a) for a, b in pairs) / max(len(pairs), 1)


def build_video_model(args: argparse.Namespace, labels: dict):
    from ..configuration_video import VideoTransformerConfig
    from ..modeling_video import VideoTransformerForVideoClassification

    if args.from_pretrained:
        return VideoTransformerForVideoClassification.from_pretrained(
            args.from_pretrained, num_labels=len(labels["id2label"]), **labels
        )
    config = VideoTransformerConfig(
        image_size=args.image_size,
        patch_size=args.patch_size,
        num_frames=args.num_frames,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        intermediate_size=args.mlp_size,
        attention_dropout=args.dropout,
        temporal_modeling=args.temporal_modeling,
        position_embedding_std=args.position_embedding_std,
        initializer_factor=args.initializer_factor,
        projection_dim=args.hidden_size,
        video_pooling=args.video_pooling,
        mit_intermediate_size=args.mit_mlp_size or args.mlp_size,
        mit_num_hidden_layers=args.mit_layers,
        mit_num_attention_heads=args.num_heads,
        **labels,
    )
    return VideoTransformerForVideoClassification(config)


@dataclass
class VideoTrainingSummary(TrainingSummary):
    """`TrainingSummary` plus what a video run adds: the reversal test and the temporal model."""

    reversal_accuracy: float = 0.0
    paired_reversal_accuracy: float = 0.0
    temporal_modeling: str = ""
    video_pooling: str = ""

    def lines(self) -> list[str]:
        lines = super().lines()
        lines[1] += " clips"
        lines.insert(2, f"temporal model    {self.temporal_modeling} + {self.video_pooling}")
        accuracy = next(i for i, line in enumerate(lines) if line.startswith("test accuracy"))
        lines[accuracy] += " (8 directions, chance 0.125)"
        reversal = f"reversal accuracy {self.reversal_accuracy:.4f} (true direction above its opposite, chance 0.5)"
        lines.insert(accuracy + 1, reversal)
        paired = f"reversed pairs    {self.paired_reversal_accuracy:.4f} (reversed clip predicted as the opposite)"
        lines.insert(accuracy + 2, paired)
        return lines


def video_datasets(args: argparse.Namespace, canvas_size: int, processor):
    """(train, held-out) datasets of pixel values for `args.dataset`: one moving glyph (through `processor` once), or a
    glyph and its jumping twin (drawn in torch, fresh training clips every batch, when canvas and frames match)."""
    from .data_video import DISTRACTOR_DATASETS, load_distractor_clips, load_moving_glyphs

    settings = dict(train_size=args.train_size, test_size=args.test_size, num_frames=args.num_frames)
    settings |= dict(canvas_size=canvas_size, data_dir=args.data_dir, seed=args.seed)
    if args.dataset in DISTRACTOR_DATASETS:
        if canvas_size != args.image_size:
            raise ValueError(
                f"Distractor clips are drawn at the model's frame size: --image-size {canvas_size} differs from the "
                f"pretrained model's image_size={args.image_size}."
            )
        ramp = args.twin_ramp_steps * args.batch_size
        clips = load_distractor_clips(
            args.dataset,
            **settings,
            glyph_size=args.glyph_size or canvas_size * 3 // 8,
            twin_ramp_clips=ramp,
            wrap=args.wrap,
        )
        return clips["train"], clips["test"]
    if args.twin_ramp_steps or not args.wrap:
        flag = "--twin-ramp-steps" if args.twin_ramp_steps else "--no-wrap"
        raise ValueError(f"{flag} applies to distractor clips only, not --dataset {args.dataset!r}.")
    clips = load_moving_glyphs(args.dataset, **settings, glyph_size=args.glyph_size or canvas_size // 2)
    return preprocess_clips(clips["train"], processor), preprocess_clips(clips["test"], processor)


def fit_video(args: argparse.Namespace) -> VideoTrainingSummary:
    """Build the clips, train with Trainer, evaluate on held-out reversed pairs, save model + processor."""
    import torch
    from transformers import Trainer, set_seed

    from .data_video import DIRECTION_NAMES, DISTRACTOR_DATASETS

    for name, value in VIDEO_DEFAULTS.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if args.dataset not in VIDEO_DATASETS:
        raise ValueError(f"train video builds its clips from one of {VIDEO_DATASETS}, got --dataset {args.dataset!r}.")
    if getattr(args, "shift", 0.0):
        raise ValueError("--shift does not apply to train video: the clips already move the glyph.")
    if args.threads:
        torch.set_num_threads(args.threads)
    set_seed(args.seed)
    labels = {"id2label": dict(enumerate(DIRECTION_NAMES)), "label2id": {n: i for i, n in enumerate(DIRECTION_NAMES)}}
    canvas_size = args.image_size = args.image_size or 32
    model = build_video_model(args, labels)
    # a pretrained model's frames and clip length: the processor resizes the canvas to its frame size
    args.image_size, args.num_frames = model.config.image_size, model.config.num_frames
    processor = make_video_processor(args.image_size)
    train_dataset, eval_dataset = video_datasets(args, canvas_size, processor)
    model.set_attn_implementation(args.attn_implementation)
    training_args = training_arguments(
        args,
        args.output_dir,
        per_device_eval_batch_size=max(args.batch_size, 64),
        remove_unused_columns=True,
        lr_scheduler_type=args.lr_scheduler,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        compute_metrics=video_metrics,
    )
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    metrics = trainer.evaluate()
    save_for_pipeline(trainer, processor, args.output_dir)
    if trainer.is_world_process_zero():
        make_frame_processor(args.image_size).save_pretrained(args.output_dir)
    summary = VideoTrainingSummary(
        dataset=args.dataset if args.dataset in DISTRACTOR_DATASETS else f"moving-glyphs-{args.dataset}",
        train_size=len(train_dataset),
        eval_size=len(eval_dataset),
        accuracy=metrics["eval_accuracy"],
        reversal_accuracy=metrics["eval_reversal_accuracy"],
        paired_reversal_accuracy=metrics["eval_paired_reversal_accuracy"],
        eval_loss=metrics["eval_loss"],
        train_seconds=train_seconds,
        epochs=args.epochs,
        num_parameters=model.num_parameters(),
        temporal_modeling=model.config.temporal_modeling,
        video_pooling=model.config.video_pooling,
        output_dir=str(Path(args.output_dir).resolve()),
        num_processes=training_args.world_size,
    )
    if trainer.is_world_process_zero():
        summary.save()
    return summary


def train_video(args: argparse.Namespace) -> int:
    from .sharing import report

    return report("hf-attention train video", fit_video(args), args)


__all__ = [
    "add_video_arguments",
    "fit_video",
    "make_frame_processor",
    "make_video_processor",
    "paired_reversal_accuracy",
    "train_video",
    "video_metrics",
]
