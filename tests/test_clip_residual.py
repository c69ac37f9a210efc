"""CLIP's residual attention block and the stack of them (modeling_clip_residual): parity with transformers' CLIP,
the seed's formula, padding and bad input."""

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from padding_checks import keep_first
from transformers import CLIPTextConfig, CLIPVisionConfig
from transformers.models.clip.modeling_clip import CLIPEncoder, CLIPEncoderLayer

from hf_attention import (
    CLIPResidualAttentionBlock,
    CLIPResidualTransformerConfig,
    CLIPResidualTransformerModel,
    from_transformers,
)


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
    assert type(block) is CLIPResidualAttentionBlock and block.self_attn.is_causal == is_causal
    block.self_attn.attn_implementation = implementation
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
    attended = block.self_attn(block.layer_norm1(hidden))[0]
    middle = hidden + attended
    fc = block.mlp.fc1(block.layer_norm2(middle))
    expected = middle + block.mlp.fc2(fc * torch.sigmoid(1.702 * fc))
    torch.testing.assert_close(block(hidden), expected, atol=1e-6, rtol=1e-6)
    assert block.mlp.fc1.out_features == 64, "the MLP widens 4x by default, as in CLIP"


def causal_stack() -> CLIPResidualTransformerModel:
    return CLIPResidualTransformerModel(CLIPResidualTransformerConfig.tiny(is_causal=True)).eval()


@torch.no_grad()
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_padding_hides_padded_tokens_the_mask_is_causal_and_nan_in_padding_stays_there(implementation):
    model = causal_stack()
    model.set_attn_implementation(implementation)
    hidden, keep = torch.randn(3, 5, 16), keep_first([5, 3, 0], 5)
    output = model(hidden, keep, output_attentions=True)
    weights = output.attentions[0]
    assert weights[1, :, :, 3:].abs().max() == 0, "padded keys get no weight"
    assert weights[0].triu(1).abs().max() == 0, "no token sees a later one"
    assert weights[2].abs().max() == 0 and torch.isfinite(output.last_hidden_state).all()
    poisoned = hidden.clone()
    poisoned[1, 3:] = float("nan")
    got = model(poisoned, keep).last_hidden_state
    torch.testing.assert_close(got[1, :3], output.last_hidden_state[1, :3], atol=1e-6, rtol=1e-6)


def test_bad_inputs_and_settings_raise_errors_that_name_the_problem():
    model = causal_stack()
    with pytest.raises(ValueError, match=r"inputs_embeds must have shape \(batch, length, 16\), got \(2, 5, 8\)"):
        model(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=r"`attention_mask` must have shape .* = \(2, 5\) .* got shape \(2, 6\)"):
        model(torch.randn(2, 5, 16), attention_mask=torch.ones(2, 6))
    with pytest.raises(TypeError, match="`inputs_embeds` must be a floating-point tensor"):
        model(torch.ones(2, 5, 16, dtype=torch.int32))
    with pytest.raises(ValueError, match="empty sequence"):
        model(torch.randn(2, 0, 16))
    with pytest.raises(StrictDataclassClassValidationError, match="hidden_act.*'swoosh' is not a known activation"):
        CLIPResidualTransformerConfig(hidden_act="swoosh")
    with pytest.raises(StrictDataclassClassValidationError, match="num_hidden_layers.*must be positive"):
        CLIPResidualTransformerConfig(num_hidden_layers=0)
    with pytest.raises(StrictDataclassClassValidationError, match="layer_norm_eps.*must be positive"):
        CLIPResidualTransformerConfig(layer_norm_eps=0.0)
