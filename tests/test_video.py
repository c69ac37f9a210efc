"""X-CLIP video family: cross-frame attention, conversion parity with transformers' X-CLIP, frames, losses, data, the
`train video` job and the video-classification pipeline. The REGISTRY-wide contract tests cover the rest."""

import json
import logging
import warnings

import numpy as np
import pytest
import torch
import transformers
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import (
    VideoMAEImageProcessorPil,
    XCLIPConfig,
    XCLIPModel,
    XCLIPVisionConfig,
    XCLIPVisionModel,
    pipeline,
)
from transformers.utils import is_torchvision_available

from hf_attention import (
    CrossFrameAttentionLayer,
    VideoTextTransformerConfig,
    VideoTextTransformerModel,
    VideoTransformerConfig,
    VideoTransformerForVideoClassification,
    VideoTransformerModel,
    VideoTransformerVideoProcessor,
    from_transformers,
)
from hf_attention.apps.cli import main
from hf_attention.apps.data_video import (
    DIRECTIONS,
    make_clips,
    make_distractor_clips,
    opposite,
    to_pixel_values,
    with_reversed,
    write_mp4,
)
from hf_attention.apps.training_video import make_video_processor, paired_reversal_accuracy

XCLIP_VISION = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=16, patch_size=8,
    num_frames=3, mit_hidden_size=8, mit_intermediate_size=16, mit_num_attention_heads=2, mit_num_hidden_layers=1,
)  # fmt: skip
XCLIP_TEXT = dict(
    vocab_size=50, hidden_size=12, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
    max_position_embeddings=8,
)  # fmt: skip


def padded_texts():
    """Three texts, two right-padded with XCLIP's pad id 1; the end-of-text token (49, the highest id) ends each."""
    input_ids = torch.randint(3, 40, (3, 6))
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])
    input_ids = input_ids.masked_fill(attention_mask == 0, 1)
    for row, end in enumerate((5, 2, 4)):
        input_ids[row, end] = 49
    return input_ids, attention_mask


def test_cross_frame_attention_lets_frames_talk_and_returns_both_maps():
    clips = torch.randn(2, 3, 5, 16)
    changed = clips.clone()
    changed[:, 2] += 1.0  # only the last frame changes
    for cross_frame, first_frame_moves in ((True, True), (False, False)):
        layer = CrossFrameAttentionLayer(16, 2, 32, cross_frame=cross_frame, attn_implementation="eager").eval()
        before, after = layer(clips), layer(changed)
        assert not torch.equal(before[:, 2], after[:, 2])
        assert (not torch.allclose(before[:, 0], after[:, 0])) == first_frame_moves
    model = VideoTransformerModel(VideoTransformerConfig.tiny()).eval()
    outputs = model(**model.dummy_inputs, output_attentions=True)
    assert len(outputs.cross_frame_attentions) == len(outputs.attentions) == 2
    for cfa, ifa in zip(outputs.cross_frame_attentions, outputs.attentions, strict=True):
        assert cfa.shape == (2, 2, 3, 3)  # (batch, heads, frames, frames)
        assert ifa.shape == (2 * 3, 2, 5 + 1, 5 + 1)  # (batch * frames, heads, tokens + message, tokens + message)
        torch.testing.assert_close(cfa.sum(-1), torch.ones(2, 2, 3))
        torch.testing.assert_close(ifa.sum(-1), torch.ones(6, 2, 6))
    ablated = VideoTransformerModel(VideoTransformerConfig.tiny(temporal_modeling="none")).eval()
    ablated_outputs = ablated(**ablated.dummy_inputs, output_attentions=True)
    assert ablated_outputs.cross_frame_attentions == () and ablated_outputs.attentions[0].shape == (6, 2, 5, 5)


def test_every_map_is_per_layer_with_frames_in_the_batch_and_is_the_tensor_the_output_came_from():
    """Intra-frame maps (batch * frames, heads, q, k) per layer, as transformers' X-CLIP vision model returns them
    (equal to its maps after conversion); CFA (batch, heads, frames, frames) and MIT (batch, mit heads, frames,
    frames) maps per layer; a loss on the output gives every one of them a gradient (they are not views made
    afterwards)."""
    reference = XCLIPVisionModel(XCLIPVisionConfig(**XCLIP_VISION)).eval()
    reference.set_attn_implementation("eager")
    clips = torch.randn(2, 3, 3, 16, 16)
    with torch.no_grad():
        expected = reference(clips.flatten(0, 1), output_attentions=True).attentions
        converted = from_transformers(reference)(clips, output_attentions=True).attentions
    for mine, theirs in zip(converted, expected, strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)
    model = VideoTransformerForVideoClassification(VideoTransformerConfig.tiny(mit_num_hidden_layers=2))
    outputs = model(**model.dummy_inputs, output_attentions=True)  # 2 clips of 3 frames, 2x2 patches, 2 heads
    assert [tuple(a.shape) for a in outputs.attentions] == [(2 * 3, 2, 6, 6)] * 2
    assert [tuple(a.shape) for a in outputs.cross_frame_attentions] == [(2, 2, 3, 3)] * 2
    assert [tuple(a.shape) for a in outputs.mit_attentions] == [(2, 2, 3, 3)] * 2
    maps = [*outputs.attentions, *outputs.cross_frame_attentions, *outputs.mit_attentions]
    for attention in maps:
        attention.retain_grad()
    outputs.logits[:, 0].sum().backward()
    assert all(attention.grad is not None and attention.grad.abs().sum() > 0 for attention in maps)


def test_without_the_mit_nothing_tells_the_frame_order():
    """CFA has no temporal positions (as in X-CLIP): it is permutation-equivariant over frames, so with a plain mean
    the logits cannot depend on the order; the MIT's temporal position embeddings make them depend on it."""
    clips = torch.randn(2, 3, 3, 16, 16) * torch.tensor([0.1, 1.0, 3.0])[None, :, None, None, None]
    order = [2, 0, 1]
    model = VideoTransformerModel(VideoTransformerConfig.tiny(video_pooling="mean")).eval()
    with torch.no_grad():
        outputs, shuffled = model(clips), model(clips[:, order])
    assert (outputs.frame_embeds[:, 0] - outputs.frame_embeds[:, 2]).abs().max() > 1e-3  # the frames differ
    torch.testing.assert_close(shuffled.frame_embeds, outputs.frame_embeds[:, order])  # CFA: equivariant
    torch.testing.assert_close(shuffled.pooler_output, outputs.pooler_output)  # + a mean: order-free
    mit = VideoTransformerModel(VideoTransformerConfig.tiny()).eval().mit
    frame_embeds = torch.randn(2, 3, 8)
    with torch.no_grad():
        difference = (mit(frame_embeds)[1] - mit(frame_embeds[:, order])[1]).abs().max()
    assert difference > 1e-3  # the MIT's temporal positions make the video embedding depend on the order


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_xclip_vision_model_converts_with_the_same_outputs(implementation):
    reference = XCLIPVisionModel(XCLIPVisionConfig(**XCLIP_VISION)).eval()
    reference.set_attn_implementation(implementation)
    ours = from_transformers(reference)
    assert ours.config.video_pooling == "mean" and ours.visual_projection is None  # XCLIPVisionModel has no MIT
    clips = torch.randn(2, 3, 3, 16, 16)
    with torch.no_grad():
        expected = reference(clips.flatten(0, 1), output_hidden_states=True)
        actual = ours(clips, output_hidden_states=True)
    torch.testing.assert_close(actual.last_hidden_state.flatten(0, 1), expected.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(actual.frame_embeds.flatten(0, 1), expected.pooler_output, atol=1e-5, rtol=0)
    for mine, theirs in zip(actual.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(mine.flatten(0, 1), theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_xclip_model_converts_with_the_same_logits_padded_texts_included(implementation):
    config = XCLIPConfig(text_config=XCLIP_TEXT, vision_config=XCLIP_VISION, projection_dim=8, prompt_layers=1)
    reference = XCLIPModel(XCLIPConfig(**{**config.to_dict(), "prompt_num_attention_heads": 2})).eval()
    reference.set_attn_implementation(implementation)
    ours = from_transformers(reference)
    input_ids, attention_mask = padded_texts()
    clips = torch.randn(2, 3, 3, 16, 16)
    with torch.no_grad():
        expected = reference(input_ids=input_ids, pixel_values=clips, attention_mask=attention_mask)
        actual = ours(input_ids=input_ids, pixel_values=clips, attention_mask=attention_mask)
        expected_video = reference.get_video_features(clips).pooler_output
        expected_text = reference.get_text_features(input_ids, attention_mask).pooler_output
        actual_video = ours.get_video_features(clips).pooler_output
        actual_text = ours.get_text_features(input_ids, attention_mask).pooler_output
    torch.testing.assert_close(actual.logits_per_video, expected.logits_per_video, atol=1e-5, rtol=0)
    torch.testing.assert_close(actual.text_embeds, expected.text_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(actual_video, expected_video, atol=1e-5, rtol=0)
    torch.testing.assert_close(actual_text, expected_text, atol=1e-5, rtol=0)


def test_a_saved_video_text_model_fine_tunes_as_a_classifier(tmp_path):
    video_text = VideoTextTransformerModel(VideoTextTransformerConfig.tiny()).eval()
    video_text.save_pretrained(tmp_path)
    classifier = VideoTransformerForVideoClassification.from_pretrained(tmp_path, num_labels=4).eval()
    assert classifier.config.num_labels == 4 and classifier.classifier.out_features == 4
    clips = video_text.dummy_inputs["pixel_values"]
    with torch.no_grad():
        torch.testing.assert_close(
            classifier.video_model(clips).pooler_output, video_text.video_model(clips).pooler_output
        )
    classifier.train()
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=1e-2)
    labels = torch.tensor([0, 3])
    losses = []
    for _ in range(5):
        loss = classifier(clips, labels=labels).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < losses[0]


def test_frame_counts_layouts_and_sizes_are_checked():
    model = VideoTransformerForVideoClassification(VideoTransformerConfig.tiny()).eval()
    with pytest.raises(ValueError, match=r"\(batch, frames, channels, height, width\).*4-D"):
        model(torch.randn(6, 3, 16, 16))
    with pytest.raises(ValueError, match="4 frames but the model was built for num_frames=3.*interpolate_pos_encoding"):
        model(torch.randn(2, 4, 3, 16, 16))
    with pytest.raises(ValueError, match="1 channels but the model expects num_channels=3"):
        model(torch.randn(2, 3, 1, 16, 16))
    with pytest.raises(ValueError, match="24x24 don't match the model's 16x16"):
        model(torch.randn(2, 3, 3, 24, 24))
    with pytest.raises(TypeError, match="image processor"):
        model(torch.randint(0, 255, (2, 3, 3, 16, 16), dtype=torch.uint8))
    longer = torch.randn(2, 5, 3, 24, 24)
    with torch.no_grad():
        logits = model(longer, interpolate_pos_encoding=True).logits
        alone = model(longer[:1], interpolate_pos_encoding=True).logits
    assert logits.shape == (2, 3)
    torch.testing.assert_close(alone, logits[:1])  # never split: clip 0 is the same alone or in the batch
    positions = model.video_model.mit.temporal_positions(5, interpolate_pos_encoding=True)
    trained = model.video_model.mit.position_embedding
    torch.testing.assert_close(positions[:, [0, 2, 4]], trained)  # 3 -> 5 frames: the trained ones stay, in between


def test_position_embedding_std_sets_only_the_spatial_positions_and_is_validated():
    """`None` keeps X-CLIP's init (initializer_range * initializer_factor); a value replaces it for the spatial
    positions alone, in the classifier and in the video-text model, and survives a save / load of the config."""
    torch.manual_seed(0)
    wide = dict(hidden_size=64, num_attention_heads=2, image_size=32, patch_size=4)
    x_clip = VideoTransformerModel(VideoTransformerConfig.tiny(**wide))
    scaled = VideoTransformerModel(VideoTransformerConfig.tiny(**wide, position_embedding_std=0.5))
    assert abs(x_clip.embeddings.position_embedding.std().item() - 0.02) < 0.003
    assert abs(scaled.embeddings.position_embedding.std().item() - 0.5) < 0.05
    assert abs(scaled.embeddings.patch_embedding.weight.std().item() - 0.02) < 0.003  # the patches keep X-CLIP's
    video_config = VideoTransformerConfig.tiny(**wide, position_embedding_std=0.5).to_dict()
    video_text = VideoTextTransformerModel(VideoTextTransformerConfig(video_config=video_config))
    assert abs(video_text.video_model.embeddings.position_embedding.std().item() - 0.5) < 0.05
    with pytest.raises(StrictDataclassClassValidationError, match="`position_embedding_std` must be positive, got 0.0"):
        VideoTransformerConfig.tiny(position_embedding_std=0.0)


def test_video_text_losses_follow_their_formulas_and_refuse_mismatched_counts():
    model = VideoTextTransformerModel(VideoTextTransformerConfig.tiny()).eval()
    inputs = model.dummy_inputs  # 2 videos, 3 texts
    labels = torch.tensor([2, 0])
    outputs = model(**inputs, labels=labels)
    torch.testing.assert_close(outputs.loss, torch.nn.functional.cross_entropy(outputs.logits_per_video, labels))
    assert outputs.logits_per_video.shape == (2, 3) and torch.equal(outputs.logits_per_text, outputs.logits_per_video.T)
    with pytest.raises(ValueError, match="needs as many texts as videos, got 3 texts for 2 videos.*labels"):
        model(**inputs, return_loss=True)
    with pytest.raises(ValueError, match="index the 3 texts"):
        model(**inputs, labels=torch.tensor([3, 0]))
    with pytest.raises(ValueError, match=r"shape \(batch_size,\) = \(2,\)"):
        model(**inputs, labels=torch.tensor([0, 1, 2]))
    two = {**inputs, "input_ids": inputs["input_ids"][:2], "attention_mask": inputs["attention_mask"][:2]}
    logits = model(**two).logits_per_video
    symmetric = model(**two, return_loss=True).loss
    targets = torch.arange(2)
    expected = (
        torch.nn.functional.cross_entropy(logits, targets) + torch.nn.functional.cross_entropy(logits.T, targets)
    ) / 2
    torch.testing.assert_close(symmetric, expected)
    assert model(**inputs, labels=torch.tensor([-100, -100])).loss.item() == 0.0


def test_a_fully_padded_text_gets_zero_logits_never_nan():
    model = VideoTextTransformerModel(VideoTextTransformerConfig.tiny())
    inputs = model.dummy_inputs
    inputs["attention_mask"][1] = 0
    outputs = model(**inputs, labels=torch.tensor([0, 2]))
    assert torch.equal(outputs.logits_per_video[:, 1], torch.zeros(2))
    assert torch.equal(outputs.text_embeds[:, 1], torch.zeros(2, 8))
    outputs.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_moving_glyphs_hide_the_label_from_single_frames_and_order_free_summaries():
    glyphs = np.random.default_rng(0).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    clips, labels = make_clips(glyphs, 16, num_frames=4, canvas_size=16, glyph_size=8, with_reversed=True)
    assert clips.shape == (32, 4, 16, 16, 3) and np.bincount(labels, minlength=8).tolist() == [4] * 8
    for index in range(0, 32, 2):
        forward, backward = clips[index], clips[index + 1]
        assert labels[index + 1] == opposite(labels[index]) != labels[index]
        np.testing.assert_array_equal(backward, forward[::-1])  # the same frames: a mean cannot tell them apart
        assert not np.array_equal(forward[0], forward[1])  # but the glyph does move
        assert forward[0].sum() == forward[-1].sum()  # wrapping around the canvas: never cut off at an edge


def test_distractor_clips_hold_a_coherent_glyph_and_a_jumping_twin_and_pair_with_their_reverse():
    """One-pixel glyphs make the two copies readable: in every clip some lit pixel moves by the label's direction at
    one speed through all frames (the mover); the pixel values are what the saved video processor gives."""
    glyphs = torch.ones(3, 1, 1)
    clips, labels = make_distractor_clips(glyphs, 64, torch.Generator().manual_seed(0), num_frames=5, canvas_size=12)
    assert clips.shape == (64, 5, 12, 12) and set(labels.tolist()) == set(range(8))
    assert ((clips > 0).flatten(2).sum(-1) <= 2).all() and ((clips > 0).flatten(2).sum(-1) >= 1).all()
    for clip, label in zip(clips, labels.tolist(), strict=True):
        lit = [set(map(tuple, (frame > 0).nonzero().tolist())) for frame in clip]
        dy, dx = list(DIRECTIONS.values())[label]
        on_track = [
            all(((y + t * speed * dy) % 12, (x + t * speed * dx) % 12) in lit[t] for t in range(5))
            for (y, x) in lit[0]
            for speed in (1, 2)
        ]
        assert any(on_track)
    # (right, left), (down, down), (up-left, down-right): two of three pairs predicted as opposites
    assert paired_reversal_accuracy(np.array([0, 4, 2, 2, 5, 1])) == pytest.approx(2 / 3)
    paired, paired_labels = with_reversed(clips[:4], labels[:4])
    torch.testing.assert_close(paired[1], clips[0].flip(0))
    assert paired_labels[1] == opposite(int(labels[0])) and paired_labels[0] == labels[0]
    uint8 = (clips[:2] * 255).round().to(torch.uint8)[..., None].expand(-1, -1, -1, -1, 3).numpy()
    processed = make_video_processor(12)(list(uint8), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(to_pixel_values(clips[:2]), processed, atol=1e-6, rtol=0)


def test_train_video_saves_a_video_processor_the_pipeline_runs_on_an_mp4_without_warnings(tmp_path, capsys):
    output_dir = tmp_path / "video"
    argv = ["train", "video", "--train-size", "16", "--test-size", "4", "--epochs", "1", "--batch-size", "8"]
    argv += ["--num-frames", "3", "--image-size", "16", "--hidden-size", "16", "--num-layers", "1", "--num-heads", "2"]
    assert main([*argv, "--mlp-size", "16", "--output-dir", str(output_dir)]) == 0
    printed = capsys.readouterr().out
    assert "reversal accuracy" in printed and "reversed pairs" in printed and "test accuracy" in printed
    summary = json.loads((output_dir / "training_summary.json").read_text())
    assert summary["eval_size"] == 8 and 0.0 <= summary["reversal_accuracy"] <= 1.0
    assert summary["paired_reversal_accuracy"] in (0.0, 0.25, 0.5, 0.75, 1.0)  # 4 pairs
    saved = json.loads((output_dir / "video_preprocessor_config.json").read_text())
    assert saved["video_processor_type"] == "VideoTransformerVideoProcessor"
    assert saved["auto_map"]["AutoVideoProcessor"] == "video_processing_video.VideoTransformerVideoProcessor"
    assert (output_dir / "video_processing_video.py").exists()  # shipped with its code, as the model is
    frames = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    for t in range(3):
        frames[t, 8:16, 4 + 6 * t : 12 + 6 * t] = 255  # a square moving right
    video_file = write_mp4(tmp_path / "clip.mp4", frames)
    processor = VideoTransformerVideoProcessor.from_pretrained(output_dir)
    pixel_values = processor(frames, return_tensors="pt")["pixel_values"]
    legacy = VideoMAEImageProcessorPil.from_pretrained(output_dir)([list(frames)], return_tensors="pt")
    torch.testing.assert_close(pixel_values, legacy["pixel_values"], atol=0, rtol=0)  # VideoMAE's operations
    recorded = RecordedLogs()
    pipeline_logger = transformers.logging.get_logger("transformers.pipelines")
    pipeline_logger.addHandler(recorded)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # where torchvision is installed AutoVideoProcessor finds it from the folder; everywhere it can be given
            given = {} if is_torchvision_available() else {"video_processor": processor}
            classify = pipeline("video-classification", model=str(output_dir), **given)
            predictions = classify(str(video_file), top_k=8)
    finally:
        pipeline_logger.removeHandler(recorded)
    assert type(classify.video_processor).__name__ == "VideoTransformerVideoProcessor"  # not the deprecated path
    assert [str(w.message) for w in caught] == [] and recorded.messages == []
    model = VideoTransformerForVideoClassification.from_pretrained(output_dir).eval()
    with torch.no_grad():
        probabilities = model(pixel_values).logits.softmax(-1)[0]
    assert len(predictions) == 8
    for prediction in predictions:  # the pipeline decoded the mp4 to (within codec rounding) the frames written
        assert abs(prediction["score"] - probabilities[model.config.label2id[prediction["label"]]].item()) < 1e-3


class RecordedLogs(logging.Handler):
    """The messages of the loggers it is added to (transformers' loggers do not propagate to pytest's caplog)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.messages.append(record.getMessage())


def test_the_video_text_models_text_config_has_the_vocabulary_size(tmp_path):
    model = VideoTextTransformerModel(VideoTextTransformerConfig.tiny())
    assert model.config.get_text_config().vocab_size == 50 == model.text_model.token_embedding.num_embeddings
    model.save_pretrained(tmp_path)
    assert VideoTextTransformerConfig.from_pretrained(tmp_path).get_text_config().vocab_size == 50


@pytest.mark.parametrize("reference_class", [XCLIPVisionModel, XCLIPModel])
def test_a_fresh_model_gets_x_clip_initialisation_in_every_tensor(reference_class):
    """Tensor by tensor, the spread of a freshly built model's weights is the spread of transformers' freshly built
    X-CLIP of the same config (wide enough for stable estimates). transformers skips `_init_weights` on custom-code
    modules that hold no parameters of their own: attention blocks and MLPs once kept the 0.02 default that way."""
    vision = dict(XCLIP_VISION, hidden_size=96, intermediate_size=192, num_attention_heads=4, mit_hidden_size=96,
                  mit_intermediate_size=192)  # fmt: skip
    if reference_class is XCLIPVisionModel:
        config = XCLIPVisionConfig(**vision)
    else:
        text = dict(XCLIP_TEXT, hidden_size=96, intermediate_size=192, vocab_size=200)
        config = XCLIPConfig(text_config=text, vision_config=vision, projection_dim=96, prompt_layers=1)
    torch.manual_seed(0)
    theirs = from_transformers(reference_class(config)).state_dict()  # their init, under our names
    torch.manual_seed(1)
    converted = from_transformers(reference_class(config))
    ours = type(converted)(converted.config).state_dict()
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        if not tensor.is_floating_point():
            continue
        expected = theirs[name].float()
        if name.startswith("prompts_generator.layers.") and name.endswith("weight") and expected.dim() == 2:
            # transformers draws these linears with std initializer_factor (1.0); X-CLIP's code, and we, with 0.02
            assert tensor.std() == pytest.approx(0.02, rel=0.2), name
        elif expected.numel() < 256 or expected.std() == 0:
            torch.testing.assert_close(tensor.float().mean(), expected.mean(), atol=0.05, rtol=0, msg=name)
        else:
            assert tensor.float().std() == pytest.approx(float(expected.std()), rel=0.2), name
