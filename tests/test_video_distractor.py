"""Distractor clips' curriculum (the twin phased in over the first training clips) and the `train video` flags of the
distractor comparison (issue 35, part 4)."""

import json

import pytest
import torch

from hf_attention import VideoTransformerForVideoClassification
from hf_attention.apps.cli import main
from hf_attention.apps.data_video import DistractorClips, make_distractor_clips


def glyph_mass(clips: torch.Tensor) -> torch.Tensor:
    """Total brightness of every frame (N, frames): on the torus one copy of a glyph keeps its mass in every frame."""
    return clips.flatten(2).sum(-1)


def test_twin_probability_keeps_the_draws_and_only_removes_the_twin():
    """Same generator seed: the mover (labels, places, glyph) is the same whatever the twin's probability; with 0 every
    frame holds exactly one glyph's mass, with 1 the twin adds to it wherever the copies do not overlap fully."""
    glyphs = torch.rand(5, 4, 4)
    draw = dict(num_frames=4, canvas_size=16)
    solo, solo_labels = make_distractor_clips(glyphs, 32, torch.Generator().manual_seed(3), **draw, twin_probability=0)
    pair, pair_labels = make_distractor_clips(glyphs, 32, torch.Generator().manual_seed(3), **draw)
    torch.testing.assert_close(solo_labels, pair_labels, atol=0, rtol=0)
    assert (pair >= solo).all()  # the brighter pixel wins: the twin only adds light
    per_frame = glyph_mass(solo)
    torch.testing.assert_close(per_frame, per_frame[:, :1].expand_as(per_frame))  # one glyph, never cut off
    assert (glyph_mass(pair) > per_frame + 1e-4).float().mean() > 0.9  # the twin mostly lands elsewhere
    with pytest.raises(ValueError, match=r"twin_probability is a probability, in \[0, 1\], got 1.5"):
        make_distractor_clips(glyphs, 4, torch.Generator(), **draw, twin_probability=1.5)


def test_curriculum_phases_the_twin_in_linearly_then_keeps_it():
    """`twin_ramp_clips=64`: the first batch has no twin, the batch drawn after 32 clips has it with chance 1/2 (a
    binomial count), every batch after 64 clips has it in every clip."""
    glyphs = torch.full(
        (7, 4, 4), 0.6
    )  # one glyph's mass is 9.6 in every frame; a twin adds to it unless they coincide
    clips = DistractorClips(glyphs, size=256, seed=0, twin_ramp_clips=64, num_frames=4, canvas_size=16)

    def twin_share(batch: list[dict]) -> float:
        frames = torch.stack([row["pixel_values"][:, 0] for row in batch]) * 0.5 + 0.5  # back to [0, 1]
        return float((glyph_mass(frames).max(dim=1).values > 9.6 + 1e-3).float().mean())

    assert clips.twin_probability() == 0.0 and twin_share(clips.__getitems__(list(range(32)))) == 0.0
    assert clips.twin_probability() == 0.5 and 0.25 < twin_share(clips.__getitems__(list(range(32)))) < 0.75
    assert clips.twin_probability() == 1.0 and twin_share(clips.__getitems__(list(range(64)))) > 0.9
    with pytest.raises(ValueError, match="twin_ramp_clips counts clips, >= 0, got -1"):
        DistractorClips(glyphs, size=4, seed=0, twin_ramp_clips=-1)


def test_train_video_distractor_flags_reach_the_model_and_the_schedule(tmp_path):
    """--initializer-factor lands in the saved config; --twin-ramp-steps, --no-wrap and --lr-scheduler run end to end;
    the ramp is refused for single-glyph clips with a message naming the flag."""
    output_dir = tmp_path / "distractor"
    argv = ["train", "video", "--dataset", "distractor-digits", "--train-size", "16", "--test-size", "4"]
    argv += ["--epochs", "1", "--batch-size", "8", "--num-frames", "3", "--image-size", "16", "--hidden-size", "16"]
    argv += ["--num-layers", "1", "--num-heads", "2", "--mlp-size", "16", "--initializer-factor", "2"]
    flags = [
        "--twin-ramp-steps",
        "1",
        "--no-wrap",
        "--lr-scheduler",
        "constant_with_warmup",
        "--output-dir",
        str(output_dir),
    ]
    assert main([*argv, *flags]) == 0
    model = VideoTransformerForVideoClassification.from_pretrained(output_dir)
    assert model.config.initializer_factor == 2.0
    assert json.loads((output_dir / "training_summary.json").read_text())["eval_size"] == 8
    single = ["train", "video", "--dataset", "digits", "--train-size", "16", "--epochs", "1", "--twin-ramp-steps", "3"]
    with pytest.raises(ValueError, match="--twin-ramp-steps applies to distractor clips only, not --dataset 'digits'"):
        main([*single, "--debug", "--output-dir", str(tmp_path / "single")])


def test_unwrapped_clips_keep_the_mover_whole_on_a_straight_path():
    """wrap=False: the mover (alone here) never crosses an edge; its centre moves by the label's step times one speed
    in every frame; a path longer than the canvas allows is refused with a message that names the sizes."""
    from hf_attention.apps.data_video import DIRECTIONS

    glyphs = torch.ones(2, 3, 3)
    clips, labels = make_distractor_clips(
        glyphs, 64, torch.Generator().manual_seed(1), num_frames=4, canvas_size=16, twin_probability=0, wrap=False
    )
    lit = clips > 0
    assert (lit.flatten(2).sum(-1) == 9).all()
    rows, cols = lit.any(-1), lit.any(-2)  # (N, frames, 16): which rows / columns hold the glyph
    assert (rows.sum(-1) == 3).all() and (cols.sum(-1) == 3).all()  # a 3x3 block, never split across an edge
    grid = torch.arange(16.0)
    centre = torch.stack([(rows * grid).sum(-1) / 3, (cols * grid).sum(-1) / 3], dim=-1)  # (N, frames, 2)
    moves = centre.diff(dim=1)  # (N, frames - 1, 2)
    step = torch.tensor(list(DIRECTIONS.values()), dtype=torch.float)[labels]
    speed = moves.abs().amax(dim=(1, 2))
    assert set(speed.tolist()) == {1.0, 2.0}
    torch.testing.assert_close(moves, (step * speed[:, None])[:, None].expand_as(moves))
    with pytest.raises(ValueError, match="A path of 14 px does not fit a canvas of canvas_size=16 with glyphs of 3 px"):
        make_distractor_clips(glyphs, 64, torch.Generator(), num_frames=8, canvas_size=16, wrap=False)
