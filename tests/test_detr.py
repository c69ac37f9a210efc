"""The DETR transformer: layers agree with transformers' DETR (post-norm) and a pre-norm formula, and the model
handles padded images the way DETR must."""

import pytest
import torch
from padding_checks import MASK_IDS, NOT_ZERO_ONE, bad_masks
from transformers import DetrConfig
from transformers.models.detr.modeling_detr import DetrDecoderLayer, DetrEncoderLayer, DetrSinePositionEmbedding

from hf_attention import (
    DETRTransformerConfig,
    DETRTransformerDecoderLayer,
    DETRTransformerEncoderLayer,
    DETRTransformerModel,
    from_transformers,
)
from hf_attention.modeling_detr_transformer import sine_position_embeddings


def reference_config():
    return DetrConfig(
        d_model=16, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=32,
        dropout=0.0, use_timm_backbone=False, use_pretrained_backbone=False,
    )  # fmt: skip


def tiny_config(**overrides):
    settings = dict(decoder_layers=3, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    return DETRTransformerConfig.tiny(**{**settings, **overrides})


def additive_key_mask(keep, query_length):
    """transformers' DETR layers take padding as a (batch, 1, queries, keys) additive mask."""
    blocked = torch.zeros(keep.shape, dtype=torch.float32).masked_fill(keep == 0, torch.finfo(torch.float32).min)
    return blocked[:, None, None, :].expand(-1, 1, query_length, -1)


def keep_first(lengths, length):
    return (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()


@torch.no_grad()
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_encoder_layer_matches_transformers_detr_encoder_layer(implementation):
    reference = DetrEncoderLayer(reference_config()).eval()
    ours = from_transformers(reference)
    assert type(ours) is DETRTransformerEncoderLayer and not ours.normalize_before
    ours.self_attn.attn_implementation = implementation
    hidden, positions, keep = torch.randn(2, 12, 16), torch.randn(2, 12, 16), keep_first([12, 8], 12)
    expected = reference(hidden, additive_key_mask(keep, 12), spatial_position_embeddings=positions)
    torch.testing.assert_close(ours(hidden, keep, positions), expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_decoder_layer_matches_transformers_detr_decoder_layer(implementation):
    reference = DetrDecoderLayer(reference_config()).eval()
    ours = from_transformers(reference)
    assert type(ours) is DETRTransformerDecoderLayer
    ours.self_attn.attn_implementation = ours.cross_attn.attn_implementation = implementation
    queries, query_positions = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    memory, positions, keep = torch.randn(2, 12, 16), torch.randn(2, 12, 16), keep_first([12, 7], 12)
    expected = reference(
        queries,
        spatial_position_embeddings=positions,
        object_queries_position_embeddings=query_positions,
        encoder_hidden_states=memory,
        encoder_attention_mask=additive_key_mask(keep, 5),
    )
    got = ours(
        queries,
        memory,
        encoder_attention_mask=keep,
        position_embeddings=positions,
        query_position_embeddings=query_positions,
    )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def attention_formula(attention, queries, keys, values, keep=None):
    """softmax(Q K^T / sqrt(d)) V over heads, padded keys hidden, then the output projection."""
    heads = attention.num_heads
    query, key, value = (
        projection(states).unflatten(-1, (heads, -1)).transpose(1, 2)
        for projection, states in ((attention.q_proj, queries), (attention.k_proj, keys), (attention.v_proj, values))
    )
    scores = query @ key.transpose(-1, -2) * query.shape[-1] ** -0.5
    if keep is not None:
        scores = scores.masked_fill(keep[:, None, None, :] == 0, float("-inf"))
    return attention.out_proj((scores.softmax(-1) @ value).transpose(1, 2).flatten(2))


@torch.no_grad()
def test_pre_norm_layers_follow_the_formula():
    encoder_layer = DETRTransformerEncoderLayer(16, 4, 32, dropout=0.0, normalize_before=True).eval()
    hidden, positions, keep = torch.randn(2, 9, 16), torch.randn(2, 9, 16), keep_first([9, 4], 9)
    normed = encoder_layer.self_attn_norm(hidden)
    expected = hidden + attention_formula(encoder_layer.self_attn, normed + positions, normed + positions, normed, keep)
    expected = expected + encoder_layer.mlp(encoder_layer.mlp_norm(expected))
    torch.testing.assert_close(encoder_layer(hidden, keep, positions), expected, atol=1e-5, rtol=1e-5)

    decoder_layer = DETRTransformerDecoderLayer(16, 4, 32, dropout=0.0, normalize_before=True).eval()
    queries, query_positions = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    normed = decoder_layer.self_attn_norm(queries)
    attended = attention_formula(decoder_layer.self_attn, normed + query_positions, normed + query_positions, normed)
    expected = queries + attended
    normed = decoder_layer.cross_attn_norm(expected)
    expected = expected + attention_formula(
        decoder_layer.cross_attn, normed + query_positions, hidden + positions, hidden, keep
    )
    expected = expected + decoder_layer.mlp(decoder_layer.mlp_norm(expected))
    got = decoder_layer(
        queries, hidden, encoder_attention_mask=keep, position_embeddings=positions,
        query_position_embeddings=query_positions,
    )  # fmt: skip
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_sine_position_embeddings_match_transformers_detr():
    pixel_mask = torch.ones(2, 5, 7, dtype=torch.long)
    pixel_mask[1, 3:, :] = 0
    pixel_mask[1, :, 4:] = 0
    reference = DetrSinePositionEmbedding(num_position_features=8, normalize=True)
    expected = reference((2, 16, 5, 7), "cpu", torch.float32, mask=pixel_mask).flatten(2).transpose(1, 2)
    torch.testing.assert_close(sine_position_embeddings(pixel_mask, 16, 10000.0), expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_decoder_returns_every_layer_and_the_last_is_the_output():
    model = DETRTransformerModel(tiny_config()).eval()
    output = model(torch.randn(2, 8, 3, 4), output_attentions=True, output_hidden_states=True)
    assert output.last_hidden_state.shape == (2, 5, 16)
    assert output.intermediate_hidden_states.shape == (2, 3, 5, 16)  # batch first, as transformers' DETR
    torch.testing.assert_close(output.intermediate_hidden_states[:, -1], output.last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(
        output.intermediate_hidden_states[:, 0], model.decoder.norm(output.decoder_hidden_states[1]), rtol=0, atol=0
    )
    assert output.encoder_last_hidden_state.shape == (2, 12, 16)
    assert [weights.shape for weights in output.encoder_attentions] == [(2, 4, 12, 12)] * 2
    assert [weights.shape for weights in output.decoder_attentions] == [(2, 4, 5, 5)] * 3
    assert [weights.shape for weights in output.cross_attentions] == [(2, 4, 5, 12)] * 3
    assert len(output.encoder_hidden_states) == 3 and len(output.decoder_hidden_states) == 4
    model.config.return_intermediate = False
    assert model(torch.randn(2, 8, 3, 4)).intermediate_hidden_states is None


@torch.no_grad()
@pytest.mark.parametrize("normalize_before", [False, True])
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])  # flex: see test_every_backend_gives_the_same_outputs
def test_padding_an_image_does_not_change_what_the_model_sees(normalize_before, implementation):
    model = DETRTransformerModel(tiny_config(normalize_before=normalize_before)).eval()
    model.set_attn_implementation(implementation)
    image = torch.randn(1, 8, 3, 4)
    padded = torch.cat([image, 100 * torch.randn(1, 8, 3, 3)], dim=-1)  # garbage to the right of the image
    pixel_mask = torch.ones(1, 3, 7, dtype=torch.long)
    pixel_mask[:, :, 4:] = 0
    expected = model(image).intermediate_hidden_states
    torch.testing.assert_close(model(padded, pixel_mask).intermediate_hidden_states, expected, atol=1e-5, rtol=1e-5)


def test_pre_norm_adds_the_final_encoder_norm_of_the_seed():
    assert DETRTransformerModel(tiny_config()).encoder.norm is None
    assert isinstance(DETRTransformerModel(tiny_config(normalize_before=True)).encoder.norm, torch.nn.LayerNorm)


def test_bad_inputs_raise_errors_that_name_the_problem():
    model = DETRTransformerModel(tiny_config())
    with pytest.raises(
        ValueError, match=r"feature_map must have shape \(batch, 8, height, width\), got \(2, 3, 3, 4\)"
    ):
        model(torch.randn(2, 3, 3, 4))
    with pytest.raises(ValueError, match=r"pixel_mask must have the feature map's shape .* \(2, 3, 4\).*got shape"):
        model(torch.randn(2, 8, 3, 4), torch.ones(2, 4, 3))
    with pytest.raises(TypeError, match="`feature_map` must be a floating-point tensor"):
        model(torch.ones(2, 8, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="empty maps"):
        model(torch.randn(2, 8, 0, 4))
    with pytest.raises(ValueError, match=r"position_embeddings must have the shape .* \(2, 6, 16\), got \(2, 5, 16\)"):
        DETRTransformerEncoderLayer(16, 4, 32)(torch.randn(2, 6, 16), position_embeddings=torch.randn(2, 5, 16))


@torch.no_grad()
def test_an_image_that_is_all_padding_reads_nothing_and_stays_finite():
    model = DETRTransformerModel(tiny_config()).eval()
    pixel_mask = torch.ones(2, 3, 4, dtype=torch.long)
    pixel_mask[1] = 0
    output = model(torch.randn(2, 8, 3, 4), pixel_mask, output_attentions=True)
    assert all(weights[1].abs().max() == 0 for weights in output.cross_attentions + output.encoder_attentions)
    assert torch.isfinite(output.last_hidden_state).all() and torch.isfinite(output.encoder_last_hidden_state).all()


def tiny_reference_detr(**overrides):
    from transformers import DetrModel, ResNetConfig

    backbone = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], out_features=["stage2"], layer_type="basic"
    )
    settings = dict(
        use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone, d_model=16,
        encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=5, dropout=0.0,
    )  # fmt: skip
    settings.update(overrides)
    model = DetrModel(DetrConfig(**settings)).eval()
    with torch.no_grad():  # layer norms away from identity, so that a misplaced norm shows
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.5)
    return model


@torch.no_grad()
def test_detr_model_converts_and_gives_the_same_object_embeddings_on_padded_images():
    reference = tiny_reference_detr()
    ours = from_transformers(reference)
    assert type(ours) is DETRTransformerModel and ours.config.num_channels == 16
    pixels, pixel_mask = torch.randn(2, 3, 32, 40), torch.ones(2, 32, 40, dtype=torch.long)
    pixel_mask[1, :, 24:] = 0
    expected = reference(pixels, pixel_mask=pixel_mask)
    feature_map, feature_mask = reference.backbone(pixels, pixel_mask)[-1]
    got = ours(feature_map, feature_mask)
    for name in ("last_hidden_state", "encoder_last_hidden_state"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), atol=1e-5, rtol=1e-5, msg=name)


def test_detr_models_that_do_not_fit_the_config_are_refused():
    with pytest.raises(ValueError, match="one head count and one feed-forward width"):
        from_transformers(tiny_reference_detr(decoder_ffn_dim=64))
    with pytest.raises(ValueError, match="Only DETR's sine position embeddings convert, got .*'learned'"):
        from_transformers(tiny_reference_detr(position_embedding_type="learned"))


@pytest.mark.parametrize(("kind", "mask", "message"), bad_masks(2, 12), ids=MASK_IDS)
def test_pixel_masks_that_are_not_zero_one_are_refused(kind, mask, message):
    model = DETRTransformerModel(tiny_config())
    if mask.dim() != 2 or mask.shape[0] != 2:
        with pytest.raises(ValueError, match=r"pixel_mask must have the feature map's shape"):
            model(torch.randn(2, 8, 3, 4), mask)
        return
    with pytest.raises(ValueError, match=f"`pixel_mask` must hold {NOT_ZERO_ONE}"):
        model(torch.randn(2, 8, 3, 4), mask.view(2, 3, 4))


@torch.no_grad()
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_nan_in_padded_pixels_never_reaches_the_object_embeddings(implementation):
    model = DETRTransformerModel(tiny_config()).eval()
    model.set_attn_implementation(implementation)
    inputs = model.dummy_inputs  # the second map is padded to the right of column 3
    clean = model(**inputs)
    inputs["feature_map"][1, :, :, 3:] = float("nan")
    poisoned = model(**inputs)
    torch.testing.assert_close(poisoned.last_hidden_state, clean.last_hidden_state, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(
        poisoned.intermediate_hidden_states, clean.intermediate_hidden_states, atol=1e-6, rtol=1e-6
    )


def test_config_is_an_encoder_decoder_and_takes_detrs_name_for_the_activation():
    config = DETRTransformerConfig.tiny(activation_function="gelu")  # transformers' DetrConfig name, ours before
    assert config.is_encoder_decoder and config.hidden_act == "gelu"
    assert DETRTransformerModel(config).encoder.layers[0].mlp.activation_fn.__class__.__name__ == "GELUActivation"
