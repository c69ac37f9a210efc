"""Two probes behind the README's account of the video ablation (hand-written loops on purpose: they isolate one
part of the model, which `hf-attention train video` cannot).

    python benchmarks/video_probes.py mit                 # the MIT alone, fed exact glyph positions (~10 s)
    python benchmarks/video_probes.py encoder             # the whole classifier, spatial positions at std 0.5 (~4 min)
    python benchmarks/video_probes.py encoder --position-embedding-std 0.02   # X-CLIP's init
    python benchmarks/video_probes.py encoder --speeds 3 4                     # faster motion
    python benchmarks/video_probes.py init                # how much a frame's class token depends on the frame (~10 s)

`mit`: per frame, the cos/sin of the glyph's coordinates on the 32-pixel torus, projected to 32 dims, go through
our `MultiFrameIntegrationTransformer` and a linear head: if it learns the 8 directions, the data and the MIT are
sound, and what a full model needs on top is a frame encoder that says where the glyph is.
`encoder`: CFA + MIT on 2,048 moving-digit clips, AdamW with a one-cycle schedule and no gradient clipping; prints
the 8-way and the reversal accuracy on held-out reversed pairs every 250 steps.
"""

import argparse
import math
import time

import torch

from hf_attention.apps.data_video import DIRECTIONS, load_moving_glyphs, opposite
from hf_attention.apps.training_video import make_video_processor, preprocess_clips
from hf_attention.configuration_video import VideoTransformerConfig
from hf_attention.modeling_video import MultiFrameIntegrationTransformer, VideoTransformerForVideoClassification


def exact_positions(num_clips: int, num_frames: int = 8, canvas_size: int = 32):
    """(clips, frames, 4) cos/sin of each frame's glyph coordinates on the torus, and the direction labels."""
    labels = torch.randint(0, len(DIRECTIONS), (num_clips,))
    steps = torch.tensor(list(DIRECTIONS.values()), dtype=torch.float)[labels] * torch.randint(1, 3, (num_clips, 1))
    times = torch.arange(num_frames, dtype=torch.float)[None, :, None]
    positions = (torch.rand(num_clips, 1, 2) * canvas_size + times * steps[:, None]) % canvas_size
    angles = positions * 2 * math.pi / canvas_size
    return torch.cat([angles.cos(), angles.sin()], dim=-1), labels


def probe_mit(args) -> None:
    projection = torch.randn(4, 32)
    mit = MultiFrameIntegrationTransformer(32, 4, 64, 1, 8)
    torch.nn.init.normal_(mit.position_embedding, std=1.0)  # X-CLIP's init of the temporal positions
    head = torch.nn.Linear(32, len(DIRECTIONS))
    optimizer = torch.optim.AdamW([*mit.parameters(), *head.parameters()], lr=3e-3)
    test_positions, test_labels = exact_positions(1024)
    for step in range(args.steps + 1):
        if step % 250 == 0:
            with torch.no_grad():
                logits = head(mit(test_positions @ projection)[1])
            print(f"step {step:5d}  8-way accuracy {(logits.argmax(-1) == test_labels).float().mean():.3f}", flush=True)
        positions, labels = exact_positions(64)
        loss = torch.nn.functional.cross_entropy(head(mit(positions @ projection)[1]), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def probe_encoder(args) -> None:
    dataset = load_moving_glyphs("digits", train_size=2048, test_size=128, speeds=tuple(args.speeds))
    processor = make_video_processor(32)
    train, test = preprocess_clips(dataset["train"], processor), preprocess_clips(dataset["test"], processor)
    config = VideoTransformerConfig(
        image_size=32, patch_size=8, num_frames=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, projection_dim=32, mit_intermediate_size=64, mit_num_attention_heads=4, num_labels=8,
        position_embedding_std=args.position_embedding_std,
    )  # fmt: skip
    model = VideoTransformerForVideoClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=args.steps, pct_start=0.1)
    opposites = torch.tensor([opposite(int(label)) for label in test.labels])
    start = time.perf_counter()
    for step in range(args.steps + 1):
        if step % 250 == 0:
            with torch.no_grad():
                logits = model.eval()(pixel_values=test.pixel_values).logits
            rows = torch.arange(len(test.labels))
            accuracy = (logits.argmax(-1) == test.labels).float().mean()
            reversal = (logits[rows, test.labels] > logits[rows, opposites]).float().mean()
            print(f"step {step:5d}  8-way {accuracy:.3f}  reversal {reversal:.3f}  {time.perf_counter() - start:.0f} s")
            model.train()
        if step == args.steps:
            break
        batch = torch.randint(0, len(train.labels), (32,))
        loss = model(pixel_values=train.pixel_values[batch], labels=train.labels[batch]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()


def probe_init(args) -> None:
    """At initialisation, on 128 held-out distractor clips: the spread of each frame's class token across clips over
    its size (root mean square), for X-CLIP's init scaled by `initializer_factor` 1, 2 and 3. Near 0, the video
    embedding is nearly a constant and training can only fit the label frequencies (the ln 8 plateau)."""
    from hf_attention.apps.data_video import load_distractor_clips

    pixel_values = load_distractor_clips("distractor-fashion-mnist", train_size=1, test_size=64)["test"].pixel_values
    for temporal_modeling, mit_mlp_size in (("cross_frame", 64), ("none", 311)):
        for factor in (1.0, 2.0, 3.0):
            torch.manual_seed(0)
            config = VideoTransformerConfig(
                image_size=32, patch_size=8, num_frames=8, hidden_size=32, num_hidden_layers=3,
                num_attention_heads=4, intermediate_size=64, temporal_modeling=temporal_modeling, projection_dim=32,
                mit_intermediate_size=mit_mlp_size, mit_num_attention_heads=4, num_labels=8,
                position_embedding_std=args.position_embedding_std, initializer_factor=factor,
            )  # fmt: skip
            with torch.no_grad():
                outputs = VideoTransformerForVideoClassification(config).eval().video_model(pixel_values=pixel_values)
            spread = {
                "class token": outputs.last_hidden_state[:, :, 0],
                "frame embedding": outputs.frame_embeds,
                "video embedding": outputs.pooler_output,
            }
            ratios = "  ".join(
                f"{name} {(x.std(0).square().mean() / x.square().mean()).sqrt():.3f}" for name, x in spread.items()
            )
            print(f"{temporal_modeling:11s} initializer_factor {factor}: spread over size  {ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("probe", choices=("mit", "encoder", "init"))
    parser.add_argument("--steps", type=int, help="default: 1,000 (mit), 3,000 (encoder)")
    parser.add_argument("--position-embedding-std", type=float, default=0.5)
    parser.add_argument("--speeds", type=int, nargs="+", default=[1, 2], help="pixels per frame (encoder probe)")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    args.steps = args.steps or (1000 if args.probe == "mit" else 3000)
    {"mit": probe_mit, "encoder": probe_encoder, "init": probe_init}[args.probe](args)


if __name__ == "__main__":
    main()
