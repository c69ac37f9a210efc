"""`hf_attention.apps.visualize` and `hf-attention show`: the numbers behind each picture, the PNG, the errors."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from hf_attention import (
    AttentionCNNConfig,
    AttentionCNNForImageClassification,
    MultiHeadAttentionConfig,
    MultiHeadAttentionModel,
    VisionTransformerConfig,
    VisionTransformerForImageClassification,
)
from hf_attention.apps.attention_maps import (
    attention_rollout,
    criss_cross_dense,
    criss_cross_maps,
    feature_cell,
    query_attention_map,
    record_feature_attention,
    vit_attention_maps,
)
from hf_attention.apps.cli import main
from hf_attention.apps.drawing import affine_source_points, overlay_attention
from hf_attention.apps.show import show
from hf_attention.apps.training import make_image_processor
from hf_attention.apps.visualize import draw_attention

pytest.importorskip("matplotlib")


def random_attention(batch, heads, tokens, generator):
    return torch.randn(batch, heads, tokens, tokens, generator=generator).softmax(dim=-1)


def save_with_processor(model, folder, image_size):
    model.save_pretrained(folder)
    make_image_processor(image_size).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def digit_png(tmp_path):
    pixels = np.zeros((12, 12), dtype=np.uint8)
    pixels[2:10, 5:7] = 255
    path = tmp_path / "digit.png"
    Image.fromarray(pixels, mode="L").save(path)
    return str(path)


def tiny_cnn(attention_type, **overrides):
    config = AttentionCNNConfig(
        hidden_sizes=[8, 16], depths=[1, 1], attention_type=attention_type, num_labels=3, reduction=2, **overrides
    )
    return AttentionCNNForImageClassification(config).eval()


# --- rollout and the ViT maps ----------------------------------------------------------------------------------


def test_rollout_rows_sum_to_one_and_follow_abnar_and_zuidema():
    generator = torch.Generator().manual_seed(0)
    layers = [random_attention(2, 3, 5, generator) for _ in range(3)]
    rollout = attention_rollout(layers)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2, 5))
    # by hand: A_l = (mean_heads + I) / 2 (rows of both sum to 1), rollout = A_3 A_2 A_1
    mixed = [(layer.mean(1) + torch.eye(5)) / 2 for layer in layers]
    torch.testing.assert_close(rollout, mixed[2] @ mixed[1] @ mixed[0])
    # attention that stays on each token leaves every token its own
    torch.testing.assert_close(attention_rollout([torch.eye(4).expand(1, 2, 4, 4)] * 2), torch.eye(4)[None])
    with pytest.raises(ValueError, match="self-attention maps"):
        attention_rollout([torch.rand(1, 2, 3, 5)])


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_vit_maps_are_the_models_attentions_for_the_pooled_query(pooling):
    model = VisionTransformerForImageClassification(VisionTransformerConfig.tiny(pooling=pooling)).eval()
    with torch.no_grad():
        attentions = model(**model.dummy_inputs, output_attentions=True).attentions
    maps = vit_attention_maps(attentions, (4, 4), pooling, index=1)
    last = attentions[-1][1]
    query_rows = last[:, 0] if pooling == "cls" else last[:, 1:].mean(dim=1)
    torch.testing.assert_close(maps.heads, query_rows[:, 1:].reshape(-1, 4, 4))
    torch.testing.assert_close(maps.class_token_share, query_rows[:, 0])
    rollout = attention_rollout(attentions)[1]
    rollout_row = rollout[0] if pooling == "cls" else rollout[1:].mean(dim=0)
    torch.testing.assert_close(maps.rollout, rollout_row[1:].reshape(4, 4))
    assert maps.query == ("class token" if pooling == "cls" else "mean of patches")


@pytest.mark.slow
def test_show_writes_a_png_of_the_panel_grid_and_reads_built_in_images(tmp_path, digit_png, capsys):
    model = VisionTransformerForImageClassification(VisionTransformerConfig.tiny(num_channels=3)).eval()
    folder = save_with_processor(model, tmp_path / "vit", 16)
    output = tmp_path / "out" / "vit.png"
    assert main(["show", folder, digit_png, "--output", str(output), "--panel-size", "100"]) == 0
    assert f"wrote {output}" in capsys.readouterr().out
    with Image.open(output) as picture:  # input, rollout, 4 heads: one row of 6 panels
        assert picture.format == "PNG" and picture.size == (600, 100)
    show(folder, "digits:5", tmp_path / "digit5.png", panel_size=80, dpi=50)
    with Image.open(tmp_path / "digit5.png") as picture:
        assert picture.size == (480, 80)


def test_overlay_keeps_each_cell_a_block_and_scales_the_map():
    heat = torch.tensor([[0.0, 1.0], [0.5, 0.25]])
    overlay = overlay_attention(Image.new("RGB", (4, 4), "white"), heat, alpha=1.0, size=8)
    pixels = np.asarray(overlay)
    assert overlay.size == (8, 8)
    np.testing.assert_array_equal(pixels[:4, :4], pixels[0, 0].reshape(1, 1, 3).repeat(4, 0).repeat(4, 1))
    assert pixels[0, 0].sum() < pixels[4, 0].sum() < pixels[0, 4].sum()  # 0 darkest, 1 brightest (inferno)
    with pytest.raises(ValueError, match="NaN"):
        overlay_attention(Image.new("RGB", (4, 4)), torch.tensor([[float("nan")]]))


# --- feature-map blocks ------------------------------------------------------------------------------------------


def test_query_map_is_the_row_of_that_query_and_cells_follow_the_resolution():
    attention = torch.rand(2, 1, 12, 6).softmax(-1)  # 3x4 queries, 2x3 keys
    torch.testing.assert_close(
        query_attention_map(attention, (1, 2), (3, 4), (2, 3), index=1), attention[1, 0, 6].reshape(2, 3)
    )
    assert feature_cell((27, 0), (28, 28), (7, 7)) == (6, 0) and feature_cell((14, 13), (28, 28), (14, 14)) == (7, 6)
    with pytest.raises(ValueError, match="outside the 28x28 input"):
        feature_cell((28, 3), (28, 28), (7, 7))
    with pytest.raises(ValueError, match="query grid"):
        query_attention_map(attention, (0, 0), (4, 4), (2, 3))


def test_criss_cross_maps_cover_the_cross_then_everything():
    height, width = 3, 4
    scores = torch.randn(1, height, width, height + width)
    own_column = torch.eye(height, dtype=torch.bool)[:, None, :].expand(height, width, height)
    scores[..., :height] = scores[..., :height].masked_fill(own_column, float("-inf"))
    passes = [scores.softmax(-1), scores.flip(1).softmax(-1)]
    dense = criss_cross_dense(passes[0])
    torch.testing.assert_close(dense.sum(-1), torch.ones(1, height * width))
    crosses, reach = criss_cross_maps(passes, (1, 2))
    on_cross = torch.zeros(height, width, dtype=torch.bool)
    on_cross[1, :], on_cross[:, 2] = True, True
    assert (crosses[0][~on_cross] == 0).all() and (crosses[0][on_cross] > 0).all()
    torch.testing.assert_close(crosses[0][0, 2], passes[0][0, 1, 2, 0])  # column entry: row g = 0 of column 2
    torch.testing.assert_close(crosses[0][1, 3], passes[0][0, 1, 2, height + 3])  # row entry: column 3
    assert (reach > 0).all() and torch.isclose(reach.sum(), torch.tensor(1.0))  # two passes reach every position


def wake_up(model):
    """The attention branches start switched off (gamma = 0); switch them on so the maps reach the output."""
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "gamma"):
                module.gamma.fill_(0.5)
    return model


@pytest.mark.parametrize("attention_type", ["non_local", "dual_attention"])
def test_drawn_query_maps_are_the_models_attentions_for_that_query(attention_type, tmp_path):
    from hf_attention.apps.visualize import _feature_attention_maps

    model = wake_up(tiny_cnn(attention_type))
    pixel_values = torch.randn(1, 3, 12, 12)
    with torch.no_grad():
        attentions = model(pixel_values=pixel_values, output_attentions=True).attentions
    maps = _feature_attention_maps(model, pixel_values, (12, 12), query_pixel=(7, 2))
    assert [label for label, _ in maps] == ["stage 0", "stage 1"]
    # stage 0 runs at 12x12 (pixel (7, 2) is cell (7, 2)), stage 1 at 6x6 (cell (3, 1))
    torch.testing.assert_close(maps[0][1], attentions[0][0, 0, 7 * 12 + 2].reshape(12, 12))
    torch.testing.assert_close(maps[1][1], attentions[1][0, 0, 3 * 6 + 1].reshape(6, 6))
    folder = save_with_processor(model, tmp_path / "cnn", 12)
    assert main(["show", folder, "digits:0", "--output", str(tmp_path / "q.png"), "--query", "7", "2",
                 "--panel-size", "64"]) == 0  # fmt: skip
    with Image.open(tmp_path / "q.png") as picture:  # input and one map per stage
        assert picture.size == (3 * 64, 64)


def test_drawn_criss_cross_is_the_models_attention_passes():
    from hf_attention.apps.visualize import _criss_cross_block_maps

    model = wake_up(tiny_cnn("criss_cross", attention_stages=[1]))
    pixel_values = torch.randn(1, 3, 8, 10)
    with torch.no_grad():
        attentions = model(pixel_values=pixel_values, output_attentions=True).attentions
    assert len(attentions) == 2  # one map per pass, (batch, 1, 4 * 5, 4 + 5) at stage 1
    [(label, cell, crosses, reach)] = _criss_cross_block_maps(model, pixel_values, query_pixel=(5, 9))
    assert label == "stage 1" and cell == (2, 4)
    passes = [attention.reshape(1, 4, 5, 9) for attention in attentions]
    expected_crosses, expected_reach = criss_cross_maps(passes, (2, 4))
    for cross, expected, attention in zip(crosses, expected_crosses, attentions, strict=True):
        torch.testing.assert_close(cross, expected)
        torch.testing.assert_close(
            cross[:, 4], attention[0, 0, 2 * 5 + 4, :4] + torch.eye(4)[2] * attention[0, 0, 14, 8]
        )
    torch.testing.assert_close(reach, expected_reach)


def test_recorded_se_gates_are_what_multiplies_the_channels():
    model = tiny_cnn("squeeze_excitation")
    block = model.cnn.stages[1].attention
    seen = {}
    block.register_forward_hook(lambda module, inputs, output: seen.update(input=inputs[0], output=output))
    pixel_values = torch.randn(2, 3, 8, 8)
    with torch.no_grad(), record_feature_attention(model) as records:
        model(pixel_values=pixel_values)
    assert [record.kind for record in records] == ["squeeze_excitation"] * 2 and records[1].value.shape == (2, 16)
    torch.testing.assert_close(seen["output"], seen["input"] * records[1].value[:, :, None, None])
    assert not block.fc2._forward_hooks  # hooks removed on exit


def test_a_model_loaded_with_remote_code_is_recorded_and_drawn(tmp_path, digit_png):
    """trust_remote_code gives the folder's copies of our classes: blocks and models are found by name, not class."""
    folder = save_with_processor(tiny_cnn("squeeze_excitation"), tmp_path / "se", 8)
    remote_class = get_class_from_dynamic_module(
        "modeling_attention_cnn.AttentionCNNForImageClassification", folder, trust_remote_code=True
    )
    remote = remote_class.from_pretrained(folder)
    assert type(remote) is not AttentionCNNForImageClassification  # the folder's class, not the package's
    with torch.no_grad(), record_feature_attention(remote) as records:
        remote(pixel_values=torch.randn(1, 3, 8, 8))
    assert [record.kind for record in records] == ["squeeze_excitation"] * 2
    image = Image.open(digit_png).convert("RGB").resize((8, 8))
    picture = draw_attention(remote, make_image_processor(8)(image, return_tensors="pt")["pixel_values"], image)
    assert picture is not None


def test_recorded_residual_mask_and_stn_transform_are_the_blocks_own(tmp_path):
    model = tiny_cnn("residual_attention")
    block = model.cnn.stages[0].attention
    hidden = torch.randn(1, 8, 8, 8)
    with torch.no_grad(), record_feature_attention(block) as records:
        block(hidden)
        mask = block.mask(block.pre(hidden))
    torch.testing.assert_close(records[0].value, mask)
    assert 0 <= float(mask.min()) and float(mask.max()) <= 1

    model = tiny_cnn("spatial_transformer")
    block = model.cnn.stages[0].attention
    with torch.no_grad():
        block.theta.bias.copy_(torch.tensor([0.8, 0.3, 0.1, -0.2, 0.9, 0.0]))
        with record_feature_attention(block) as records:
            block(hidden)
        theta = block.affine_transform(hidden)[0]
    torch.testing.assert_close(records[0].value[0], theta)
    # the drawn grid is where affine_grid samples
    grid = F.affine_grid(theta[None], [1, 1, 5, 6], align_corners=False)[0]
    xs, ys = (torch.arange(6) * 2 + 1) / 6 - 1, (torch.arange(5) * 2 + 1) / 5 - 1
    targets = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    torch.testing.assert_close(affine_source_points(theta, targets), grid.reshape(-1, 2))

    folder = save_with_processor(model, tmp_path / "stn", 8)
    show(folder, "digits:0", tmp_path / "stn.png", panel_size=64)
    with Image.open(tmp_path / "stn.png") as picture:  # input, then grid + warped input per stage
        assert picture.size == (5 * 64, 64)


# --- clear errors ------------------------------------------------------------------------------------------------


def test_what_cannot_be_drawn_says_why(tmp_path, digit_png):
    linformer = VisionTransformerForImageClassification(
        VisionTransformerConfig.tiny(num_channels=3, attention_type="linformer", linformer_k=4)
    )
    with pytest.raises(ValueError, match="projected keys"):
        show(save_with_processor(linformer, tmp_path / "lin", 16), digit_png, tmp_path / "x.png")
    plain = save_with_processor(tiny_cnn("none"), tmp_path / "none", 8)
    with pytest.raises(ValueError, match="attention_type='none' has no attention map"):
        show(plain, digit_png, tmp_path / "x.png")
    mha = MultiHeadAttentionModel(MultiHeadAttentionConfig.tiny())
    with pytest.raises(ValueError, match="Cannot draw the attention of a MultiHeadAttentionModel: it takes no image"):
        show(save_with_processor(mha, tmp_path / "mha", 8), digit_png, tmp_path / "x.png")
    no_processor = tmp_path / "bare"
    tiny_cnn("squeeze_excitation").save_pretrained(no_processor)
    with pytest.raises(ValueError, match="no saved processor"):
        show(str(no_processor), digit_png, tmp_path / "x.png")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        show(str(tmp_path / "missing"), digit_png, tmp_path / "x.png")
    with pytest.raises(FileNotFoundError, match="not a file, nor a built-in input"):
        show(plain, str(tmp_path / "nothing.png"), tmp_path / "x.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="not an image PIL can read"):
        show(plain, str(tmp_path / "text.png"), tmp_path / "x.png")
    with pytest.raises(ValueError, match="the digits test split has 360 items"):
        show(plain, "digits:360", tmp_path / "x.png")
    with pytest.raises(ValueError, match="--text is for image-text models; AttentionCNNForImageClassification"):
        show(plain, digit_png, tmp_path / "x.png", text="a caption")
    with pytest.raises(ValueError, match="must name a .png file"):
        show(plain, digit_png, tmp_path / "x.jpg")


# --- video, glimpse ----------------------------------------------------------------------------------------------


def write_mp4(path, frames):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=4)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def test_video_maps_are_the_models_class_token_and_cross_frame_attention(tmp_path):
    from transformers import VideoMAEImageProcessorPil

    from hf_attention import VideoTransformerConfig, VideoTransformerForVideoClassification
    from hf_attention.apps.attention_maps import video_attention_maps

    model = VideoTransformerForVideoClassification(VideoTransformerConfig.tiny()).eval()  # 3 frames, 2x2 patches
    with torch.no_grad():
        outputs = model(**model.dummy_inputs, output_attentions=True)
    maps = video_attention_maps(outputs.attentions, outputs.cross_frame_attentions, 3, (2, 2), index=1)
    last = outputs.attentions[-1].unflatten(0, (-1, 3))[1]  # clip 1: (frames, heads, class + 4 patches + message)
    torch.testing.assert_close(maps.frames, last[:, :, 0, 1:5].mean(1).reshape(3, 2, 2))
    torch.testing.assert_close(maps.message_share, last[:, :, 0, 5].mean(1))
    torch.testing.assert_close(maps.cross_frame, outputs.cross_frame_attentions[-1][1].mean(0))
    torch.testing.assert_close(maps.cross_frame.sum(-1), torch.ones(3))

    frames = [np.full((20, 20, 3), 40 * step, dtype=np.uint8) for step in range(5)]
    write_mp4(tmp_path / "clip.mp4", frames)
    model.save_pretrained(tmp_path / "video")
    processor = VideoMAEImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    processor.save_pretrained(tmp_path / "video")
    show(str(tmp_path / "video"), str(tmp_path / "clip.mp4"), tmp_path / "video.png", panel_size=64)
    with Image.open(tmp_path / "video.png") as picture:  # 3 frames and the cross-frame map
        assert picture.size == (4 * 64, 64)
    with pytest.raises(ValueError, match="holds 1 frame.s., not a video: the model reads 3 frames"):
        show(str(tmp_path / "video"), str(tmp_path / "video.png"), tmp_path / "x.png")


def test_glimpse_path_is_the_policys_mean_path(tmp_path, digit_png):
    from hf_attention import RecurrentAttentionConfig, RecurrentAttentionForImageClassification
    from hf_attention.apps.visualize import draw_glimpse
    from hf_attention.apps.visualize_glimpse import draw_glimpse_paths

    model = RecurrentAttentionForImageClassification(RecurrentAttentionConfig.tiny(num_channels=3)).eval()
    folder = save_with_processor(model, tmp_path / "glimpse", 16)
    show(folder, digit_png, tmp_path / "glimpse.png")
    pixel_values = make_image_processor(16)(Image.open(digit_png).convert("RGB"), return_tensors="pt")["pixel_values"]
    image = Image.new("RGB", (16, 16))
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values, sample_locations=False)
    caption = f"pred {model.config.id2label[int(outputs.logits.argmax())]}"
    expected = draw_glimpse_paths([image], outputs.glimpse_locations, 4, 2, [caption])
    np.testing.assert_array_equal(np.asarray(draw_glimpse(model, pixel_values, image)), np.asarray(expected))
    with Image.open(tmp_path / "glimpse.png") as picture:
        assert picture.size == expected.size


def test_image_text_word_maps_are_the_fusions_cross_attention(tmp_path, digit_png):
    from transformers import VisionTextDualEncoderProcessor

    from hf_attention import (
        VisionTextCrossAttentionConfig,
        VisionTextCrossAttentionForImageTextRetrieval,
        VisionTransformerConfig,
    )
    from hf_attention.apps.attention_maps import image_text_word_maps
    from hf_attention.apps.data_image_text import train_caption_tokenizer
    from hf_attention.apps.show import load_model_and_processor, tokenize_caption

    tokenizer = train_caption_tokenizer(["grinning face", "red apple", "face with tears of joy"], vocab_size=60)
    vision = VisionTransformerConfig.tiny(num_channels=3).to_dict()
    config = VisionTextCrossAttentionConfig.tiny(vision_config=vision)
    model = VisionTextCrossAttentionForImageTextRetrieval(config).eval()
    model.save_pretrained(tmp_path / "it")
    VisionTextDualEncoderProcessor(make_image_processor(16), tokenizer).save_pretrained(tmp_path / "it")

    model, processor = load_model_and_processor(str(tmp_path / "it"))
    image = Image.open(digit_png).convert("RGB")
    inputs, words, word_ids = tokenize_caption(str(tmp_path / "it"), processor, image, "grinning applesauce", None)
    assert list(words.values()) == ["grinning", "applesauce"] and word_ids[0] is None and word_ids[-1] is None
    with torch.no_grad():
        cross = model(**inputs, output_attentions=True).cross_attentions
    maps = image_text_word_maps(cross, word_ids, (4, 4))
    rows = cross[-1][0].mean(0)[:, 1:]  # text queries over the 16 patches (the class token dropped)
    pieces = [position for position, word in enumerate(word_ids) if word == 1]
    torch.testing.assert_close(maps[1], rows[pieces].mean(0).reshape(4, 4))

    show(str(tmp_path / "it"), digit_png, tmp_path / "it.png", text="grinning applesauce", panel_size=64)
    with Image.open(tmp_path / "it.png") as picture:  # the input and one panel per word
        assert picture.size == (3 * 64, 64)
    with pytest.raises(ValueError, match="pass --text CAPTION"):
        show(str(tmp_path / "it"), digit_png, tmp_path / "x.png")
