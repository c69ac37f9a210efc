"""Token-sequence attention blocks: multi-head attention, feature-map cross-attention, CLIP residual blocks.

The model contract (Auto round trip, backends, half precision, padding) is checked for every block here, DETR
included; DETR's own parity tests are in test_detr.py.
"""

import pytest
import torch
from conftest import BACKENDS
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, CLIPTextConfig, CLIPVisionConfig
from transformers.models.clip.modeling_clip import CLIPEncoder, CLIPEncoderLayer

from hf_attention import (
    CLIPResidualAttentionBlock,
    CLIPResidualTransformerConfig,
    CLIPResidualTransformerModel,
    DETRTransformerConfig,
    DETRTransformerModel,
    FeatureMapCrossAttention,
    FeatureMapCrossAttentionConfig,
    FeatureMapCrossAttentionModel,
    MultiHeadAttentionConfig,
    MultiHeadAttentionModel,
    from_transformers,
)


def padding_mask(batch_lengths, length):
    """1 for the first `n` tokens of each sample, 0 after; a length of 0 is a fully padded sample."""
    return (torch.arange(length)[None, :] < torch.tensor(batch_lengths)[:, None]).long()


def mha_self_case():
    inputs = {"inputs_embeds": torch.randn(3, 5, 16), "attention_mask": padding_mask([5, 3, 0], 5)}
    return MultiHeadAttentionModel(MultiHeadAttentionConfig.tiny(qkv_bias=True)), inputs


def mha_cross_case():
    inputs = {
        "inputs_embeds": torch.randn(3, 4, 16),
        "encoder_hidden_states": torch.randn(3, 6, 8),
        "encoder_attention_mask": padding_mask([6, 2, 0], 6),
    }
    return MultiHeadAttentionModel(MultiHeadAttentionConfig.tiny(encoder_hidden_size=8)), inputs


def feature_map_case():
    inputs = {
        "feature_map": torch.randn(3, 3, 4, 5),
        "encoder_hidden_states": torch.randn(3, 6, 8),
        "encoder_attention_mask": padding_mask([6, 2, 0], 6),
    }
    return FeatureMapCrossAttentionModel(FeatureMapCrossAttentionConfig.tiny()), inputs


def clip_case():
    inputs = {"inputs_embeds": torch.randn(3, 5, 16), "attention_mask": padding_mask([5, 3, 0], 5)}
    return CLIPResidualTransformerModel(CLIPResidualTransformerConfig.tiny(is_causal=True)), inputs


def detr_case():
    config = DETRTransformerConfig.tiny(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    pixel_mask = torch.ones(3, 3, 4, dtype=torch.long)
    pixel_mask[1, :, 2:] = 0  # an image padded on the right
    pixel_mask[2] = 0  # nothing at all
    return DETRTransformerModel(config), {"feature_map": torch.randn(3, 8, 3, 4), "pixel_mask": pixel_mask}


CASES = {
    "mha_self": mha_self_case,
    "mha_cross": mha_cross_case,
    "feature_map": feature_map_case,
    "clip": clip_case,
    "detr": detr_case,
}


def make_case(name):
    torch.manual_seed(0)
    model, inputs = CASES[name]()
    return model.eval(), inputs


@pytest.mark.parametrize("name", CASES)
def test_save_load_round_trip_through_auto_model_keeps_every_weight(tmp_path, name):
    model, inputs = make_case(name)
    model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is type(model.config)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    saved = load_file(tmp_path / "model.safetensors")
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for weight_name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, expected[weight_name], rtol=0, atol=0, msg=weight_name)
        torch.testing.assert_close(tensor, saved[weight_name], rtol=0, atol=0, msg=weight_name)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(**inputs).last_hidden_state, model(**inputs).last_hidden_state, rtol=0, atol=0
        )


@torch.no_grad()
@pytest.mark.parametrize("name", CASES)
def test_every_backend_gives_the_same_outputs(name):
    model, inputs = make_case(name)
    outputs = {}
    for implementation in BACKENDS:
        model.set_attn_implementation(implementation)
        outputs[implementation] = model(**inputs).last_hidden_state
    for implementation in BACKENDS[1:]:
        torch.testing.assert_close(outputs[implementation], outputs["eager"], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(outputs["eager"]).all()


@torch.no_grad()
@pytest.mark.parametrize("name", ["mha_self", "mha_cross", "feature_map"])
def test_a_fully_padded_sample_gives_zeros_not_nan(name):
    model, inputs = make_case(name)
    output = model(**inputs, output_attentions=True)
    assert output.last_hidden_state[2].abs().max() == 0 and not output.last_hidden_state.isnan().any()
    assert output.attentions[0][2].abs().max() == 0


@torch.no_grad()
@pytest.mark.parametrize("name", CASES)
def test_return_dict_false_gives_the_same_values_as_a_tuple(name):
    model, inputs = make_case(name)
    as_tuple = model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], model(**inputs).last_hidden_state, rtol=0, atol=0)


@torch.no_grad()
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float16, 5e-3), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("name", CASES)
def test_half_precision_masks_stay_finite_and_close(name, dtype, tolerance):
    model, inputs = make_case(name)
    expected = model(**inputs).last_hidden_state
    model.to(dtype)
    half_inputs = {key: value.to(dtype) if value.is_floating_point() else value for key, value in inputs.items()}
    for implementation in ("eager", "sdpa"):
        model.set_attn_implementation(implementation)
        got = model(**half_inputs).last_hidden_state
        assert got.dtype == dtype and torch.isfinite(got).all()
        torch.testing.assert_close(got.float(), expected, atol=tolerance * expected.abs().max(), rtol=tolerance)


@pytest.mark.parametrize("name", CASES)
def test_every_parameter_is_initialised_and_reached_by_gradients(name):
    model, inputs = make_case(name)
    model.train()
    output = model(**inputs).last_hidden_state
    output.pow(2).mean().backward()
    for weight_name, parameter in model.named_parameters():
        assert torch.isfinite(parameter).all(), weight_name
        if parameter.dim() > 1:
            assert parameter.std() > 0, f"{weight_name} left uninitialised"
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), weight_name


@pytest.mark.parametrize("name", ["clip", "detr"])
def test_gradient_checkpointing_gives_the_same_gradients(name):
    model, inputs = make_case(name)  # the tiny configs have no dropout, so a recomputed forward is the same
    model.train()
    model(**inputs).last_hidden_state.pow(2).mean().backward()
    expected = {weight_name: parameter.grad.clone() for weight_name, parameter in model.named_parameters()}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    model(**inputs).last_hidden_state.pow(2).mean().backward()
    for weight_name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, expected[weight_name], atol=1e-6, rtol=1e-5, msg=weight_name)


# --- multi-head attention -------------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("is_causal", [False, True])
def test_self_attention_matches_torch_multihead_attention_on_unpadded_rows(is_causal):
    config = MultiHeadAttentionConfig(hidden_size=16, num_attention_heads=4, qkv_bias=True, is_causal=is_causal)
    ours = MultiHeadAttentionModel(config).eval()
    reference = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    query_weight, key_weight, value_weight = reference.in_proj_weight.chunk(3)
    query_bias, key_bias, value_bias = reference.in_proj_bias.chunk(3)
    attention = ours.attention
    for projection, weight, bias in (
        (attention.q_proj, query_weight, query_bias),
        (attention.k_proj, key_weight, key_bias),
        (attention.v_proj, value_weight, value_bias),
    ):
        projection.weight.copy_(weight)
        projection.bias.copy_(bias)
    attention.out_proj.load_state_dict(reference.out_proj.state_dict())
    hidden, keep = torch.randn(2, 6, 16), padding_mask([6, 4], 6)
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1) if is_causal else None
    expected, expected_weights = reference(
        hidden, hidden, hidden, key_padding_mask=keep == 0, attn_mask=causal, average_attn_weights=False
    )
    output = ours(hidden, attention_mask=keep, output_attentions=True)
    rows = keep.bool()
    torch.testing.assert_close(output.last_hidden_state[rows], expected[rows], atol=1e-5, rtol=1e-5)
    got_weights = output.attentions[0].transpose(1, 2)[rows]
    torch.testing.assert_close(got_weights, expected_weights.transpose(1, 2)[rows], atol=1e-5, rtol=1e-5)
    assert output.last_hidden_state[1, 4:].abs().max() == 0, "padded queries output nothing"


@torch.no_grad()
def test_cross_attention_matches_torch_multihead_attention_with_other_key_width():
    config = MultiHeadAttentionConfig(hidden_size=16, num_attention_heads=2, encoder_hidden_size=8, qkv_bias=True)
    ours = MultiHeadAttentionModel(config).eval()
    reference = torch.nn.MultiheadAttention(16, 2, kdim=8, vdim=8, batch_first=True).eval()
    attention = ours.attention
    attention.q_proj.weight.copy_(reference.q_proj_weight)
    attention.k_proj.weight.copy_(reference.k_proj_weight)
    attention.v_proj.weight.copy_(reference.v_proj_weight)
    for projection, bias in zip(
        (attention.q_proj, attention.k_proj, attention.v_proj), reference.in_proj_bias.chunk(3), strict=True
    ):
        projection.bias.copy_(bias)
    attention.out_proj.load_state_dict(reference.out_proj.state_dict())
    queries, context, keep = torch.randn(2, 3, 16), torch.randn(2, 7, 8), padding_mask([7, 2], 7)
    expected, _ = reference(queries, context, context, key_padding_mask=keep == 0)
    got = ours(queries, encoder_hidden_states=context, encoder_attention_mask=keep).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_single_head_is_the_seed_formula():
    model = MultiHeadAttentionModel(MultiHeadAttentionConfig(hidden_size=12, num_attention_heads=1)).eval()
    attention = model.attention
    hidden, keep = torch.randn(2, 5, 12), padding_mask([5, 3], 5)
    query, key, value = attention.q_proj(hidden), attention.k_proj(hidden), attention.v_proj(hidden)
    scores = (query @ key.transpose(1, 2) / 12**0.5).masked_fill(keep[:, None, :] == 0, float("-inf"))
    expected = attention.out_proj(scores.softmax(-1) @ value) * keep[:, :, None]
    torch.testing.assert_close(model(hidden, attention_mask=keep).last_hidden_state, expected, atol=1e-5, rtol=1e-5)
    assert attention.q_proj.bias is None, "the seed's Q/K/V projections have no bias"


def test_attention_dropout_acts_on_the_weights_in_training_only():
    config = MultiHeadAttentionConfig(hidden_size=16, num_attention_heads=4, attention_dropout=0.5)
    model = MultiHeadAttentionModel(config)
    model.set_attn_implementation("eager")
    hidden = torch.randn(2, 5, 16)
    train_weights = model.train()(hidden, output_attentions=True).attentions[0]
    assert (train_weights == 0).float().mean() > 0.2
    eval_weights = model.eval()(hidden, output_attentions=True).attentions[0]
    torch.testing.assert_close(eval_weights.sum(-1), torch.ones(2, 4, 5))


def test_multi_head_attention_bad_inputs_raise_errors_that_name_the_problem():
    model = MultiHeadAttentionModel(MultiHeadAttentionConfig(hidden_size=16, num_attention_heads=4))
    with pytest.raises(ValueError, match="encoder_attention_mask was given without encoder_hidden_states"):
        model(torch.randn(2, 5, 16), encoder_attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"hidden_states of shape \(batch, length, 16\)"):
        model(torch.randn(2, 5, 12))
    with pytest.raises(ValueError, match=r"key_padding_mask.*\(2, 5\).*got shape \(2, 4\)"):
        model(torch.randn(2, 5, 16), attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="only 0 .padding. and 1 .keep."):
        model(torch.randn(2, 5, 16), attention_mask=torch.full((2, 5), 2))
    with pytest.raises(ValueError, match="inputs_embeds is required"):
        model()
    causal = MultiHeadAttentionModel(MultiHeadAttentionConfig(hidden_size=16, num_attention_heads=4, is_causal=True))
    with pytest.raises(ValueError, match="is_causal=True applies to self-attention only"):
        causal(torch.randn(2, 5, 16), encoder_hidden_states=torch.randn(2, 3, 16))


@pytest.mark.parametrize(
    ("config_class", "overrides", "message"),
    [
        (MultiHeadAttentionConfig, {"hidden_size": 30}, r"hidden size \(30\) is not a multiple of .* heads \(8\)"),
        (MultiHeadAttentionConfig, {"attention_dropout": 1.0}, r"attention_dropout.*must be in \[0, 1\), got 1.0"),
        (MultiHeadAttentionConfig, {"encoder_hidden_size": 0}, "encoder_hidden_size.*must be positive, got 0"),
        (FeatureMapCrossAttentionConfig, {"num_channels": 0}, "num_channels.*must be positive, got 0"),
        (CLIPResidualTransformerConfig, {"hidden_act": "swoosh"}, "hidden_act.*ACT2FN, got 'swoosh'"),
        (CLIPResidualTransformerConfig, {"num_hidden_layers": 0}, "num_hidden_layers.*must be positive"),
        (DETRTransformerConfig, {"hidden_size": 18, "num_attention_heads": 2}, "multiple of 4 .* sine .* got 18"),
        (DETRTransformerConfig, {"dropout": -0.1}, r"dropout.*must be in \[0, 1\), got -0.1"),
        (DETRTransformerConfig, {"num_queries": 0}, "num_queries.*must be positive, got 0"),
    ],
)
def test_impossible_configs_fail_at_construction(config_class, overrides, message):
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        config_class(**overrides)


# --- cross-attention over a feature map -----------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("implementation", BACKENDS)
def test_feature_map_cross_attention_matches_the_formula(implementation):
    layer = FeatureMapCrossAttention(3, 16, 4, context_dim=8, attn_implementation=implementation).eval()
    feature_map, context, keep = torch.randn(3, 3, 4, 5), torch.randn(3, 6, 8), padding_mask([6, 2, 0], 6)
    output, weights = layer(feature_map, context, keep, output_attentions=True)

    attention = layer.attention
    pixels = torch.nn.functional.conv2d(feature_map, layer.proj_in.weight, layer.proj_in.bias)
    pixels = pixels.flatten(2).transpose(1, 2)  # (batch, h*w, 16)
    query = attention.q_proj(pixels).unflatten(-1, (4, 4)).transpose(1, 2)
    key = attention.k_proj(context).unflatten(-1, (4, 4)).transpose(1, 2)
    value = attention.v_proj(context).unflatten(-1, (4, 4)).transpose(1, 2)
    scores = torch.einsum("bnid,bnjd->bnij", query, key) / 4**0.5
    expected_weights = scores.masked_fill(keep[:, None, None, :] == 0, float("-inf")).softmax(-1).nan_to_num(0.0)
    attended = attention.out_proj(torch.einsum("bnij,bnjd->bind", expected_weights, value).flatten(2))
    attended = attended.transpose(1, 2).unflatten(-1, (4, 5))
    expected = torch.nn.functional.conv2d(attended, layer.proj_out.weight, layer.proj_out.bias)
    expected[2] = 0.0  # nothing to read: no output, not proj_out's bias

    assert output.shape == (3, 3, 4, 5) and weights.shape == (3, 4, 20, 6)
    torch.testing.assert_close(weights, expected_weights, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)


def test_feature_map_cross_attention_bad_inputs_raise_errors_that_name_the_problem():
    layer = FeatureMapCrossAttention(3, 16, 4, context_dim=8)
    with pytest.raises(ValueError, match=r"feature map of shape \(batch, 3, height, width\), got \(2, 4, 4, 4\)"):
        layer(torch.randn(2, 4, 4, 4), torch.randn(2, 6, 8))
    with pytest.raises(ValueError, match=r"context of shape \(batch=2, length, width\), got \(3, 6, 8\)"):
        layer(torch.randn(2, 3, 4, 4), torch.randn(3, 6, 8))
    with pytest.raises(ValueError, match="width 16, expected key_dim=8"):
        layer(torch.randn(2, 3, 4, 4), torch.randn(2, 6, 16))
    with pytest.raises(ValueError, match=r"key_padding_mask.*\(2, 6\).*got shape \(2, 16\)"):
        layer(torch.randn(2, 3, 4, 4), torch.randn(2, 6, 8), torch.ones(2, 16))
    model = FeatureMapCrossAttentionModel(FeatureMapCrossAttentionConfig(num_channels=3, hidden_size=16))
    with pytest.raises(ValueError, match="feature_map .* and encoder_hidden_states .* are both required"):
        model(torch.randn(2, 3, 4, 4))


# --- CLIP residual attention block ----------------------------------------------------------------------------


def clip_reference_config(config_class, **overrides):
    settings = dict(
        hidden_size=16, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2, hidden_act="quick_gelu"
    )
    settings.update(overrides)
    config = config_class(**settings)
    config._attn_implementation = "eager"
    return config


def causal_additive_mask(length):
    return torch.full((length, length), torch.finfo(torch.float32).min).triu(1)[None, None]


@torch.no_grad()
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("is_causal", [False, True])
def test_clip_block_matches_transformers_clip_encoder_layer(is_causal, implementation):
    config_class = CLIPTextConfig if is_causal else CLIPVisionConfig
    reference = CLIPEncoderLayer(clip_reference_config(config_class)).eval()
    block = from_transformers(reference)
    assert type(block) is CLIPResidualAttentionBlock and block.attn.is_causal == is_causal
    block.attn.attn_implementation = implementation
    hidden = torch.randn(2, 7, 16)
    mask = causal_additive_mask(7) if is_causal else None
    torch.testing.assert_close(block(hidden), reference(hidden, mask), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_clip_text_encoder_converts_into_a_causal_stack_with_the_same_hidden_states():
    reference = CLIPEncoder(clip_reference_config(CLIPTextConfig)).eval()
    ours = from_transformers(reference)
    assert type(ours) is CLIPResidualTransformerModel and ours.config.is_causal
    hidden = torch.randn(2, 6, 16)
    expected_states = [hidden]
    for layer in reference.layers:  # transformers' CLIPEncoder leaves recording hidden states to its caller
        expected_states.append(layer(expected_states[-1], causal_additive_mask(6)))
    expected = reference(hidden, attention_mask=causal_additive_mask(6)).last_hidden_state
    got = ours(hidden, output_hidden_states=True)
    torch.testing.assert_close(got.last_hidden_state, expected, atol=1e-5, rtol=1e-5)
    assert len(got.hidden_states) == 3
    for got_state, expected_state in zip(got.hidden_states, expected_states, strict=True):
        torch.testing.assert_close(got_state, expected_state, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_clip_block_is_the_seed_formula_with_quick_gelu():
    block = CLIPResidualAttentionBlock(16, 4, attn_implementation="eager").eval()
    hidden = torch.randn(2, 5, 16)
    attended = block.attn(block.ln_1(hidden))[0]
    middle = hidden + attended
    fc = block.mlp.c_fc(block.ln_2(middle))
    expected = middle + block.mlp.c_proj(fc * torch.sigmoid(1.702 * fc))
    torch.testing.assert_close(block(hidden), expected, atol=1e-6, rtol=1e-6)
    assert block.mlp.c_fc.out_features == 64, "the MLP widens 4x by default, as in CLIP"


@torch.no_grad()
def test_clip_stack_padding_hides_padded_tokens_and_is_causal():
    model, inputs = make_case("clip")
    output = model(**inputs, output_attentions=True)
    weights = output.attentions[0]
    assert weights[1, :, :, 3:].abs().max() == 0, "padded keys get no weight"
    assert weights[0].triu(1).abs().max() == 0, "no token sees a later one"
    assert weights[2].abs().max() == 0 and torch.isfinite(output.last_hidden_state).all()


def test_clip_stack_bad_inputs_raise_errors_that_name_the_problem():
    model, _ = make_case("clip")
    with pytest.raises(ValueError, match=r"inputs_embeds must have shape \(batch, length, 16\), got \(2, 5, 8\)"):
        model(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=r"key_padding_mask.*\(2, 5\).*got shape \(2, 6\)"):
        model(torch.randn(2, 5, 16), attention_mask=torch.ones(2, 6))
    with pytest.raises(ValueError, match="only 0 .padding. and 1 .keep."):
        model(torch.randn(2, 5, 16), attention_mask=torch.full((2, 5), 0.5))


@torch.no_grad()
@pytest.mark.parametrize("name", ["mha_self", "mha_cross", "feature_map", "clip"])
def test_torch_compile_fullgraph_matches_eager_with_padding(name):
    model, inputs = make_case(name)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    expected = model(**inputs).last_hidden_state
    torch.testing.assert_close(compiled(**inputs).last_hidden_state, expected, atol=1e-5, rtol=1e-5)
