"""Cross-attention from a feature map to a token context (modeling_feature_map_cross_attention)."""

import pytest
import torch
from padding_checks import keep_first

from hf_attention import FeatureMapCrossAttention, FeatureMapCrossAttentionConfig, FeatureMapCrossAttentionModel


def formula(layer: FeatureMapCrossAttention, feature_map, context, keep):
    """proj_out(out_proj(softmax(Q K^T / sqrt(d)) V)) with Q from the pixels, K and V from the context."""
    attention, heads = layer.attention, layer.attention.num_heads
    pixels = torch.nn.functional.conv2d(feature_map, layer.proj_in.weight, layer.proj_in.bias)
    pixels = pixels.flatten(2).transpose(1, 2)  # (batch, h*w, embed)
    query, key, value = (
        projection(states).unflatten(-1, (heads, -1)).transpose(1, 2)
        for projection, states in ((attention.q_proj, pixels), (attention.k_proj, context), (attention.v_proj, context))
    )
    scores = torch.einsum("bnid,bnjd->bnij", query, key) / query.shape[-1] ** 0.5
    weights = scores.masked_fill(keep[:, None, None, :] == 0, float("-inf")).softmax(-1).nan_to_num(0.0)
    attended = attention.out_proj(torch.einsum("bnij,bnjd->bind", weights, value).flatten(2))
    attended = attended.transpose(1, 2).unflatten(-1, feature_map.shape[-2:])
    output = torch.nn.functional.conv2d(attended, layer.proj_out.weight, layer.proj_out.bias)
    return output * keep.any(-1)[:, None, None, None], weights  # nothing to read: no output, not proj_out's bias


@torch.no_grad()
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])  # flex: the contract test compares it with eager
def test_matches_the_formula_and_a_context_of_padding_only_gives_zeros(implementation):
    layer = FeatureMapCrossAttention(3, 16, 4, context_dim=8, attn_implementation=implementation).eval()
    feature_map, context, keep = torch.randn(3, 3, 4, 5), torch.randn(3, 6, 8), keep_first([6, 2, 0], 6)
    output, weights = layer(feature_map, context, keep, output_attentions=True)
    expected, expected_weights = formula(layer, feature_map, context, keep)
    assert output.shape == (3, 3, 4, 5) and weights.shape == (3, 4, 20, 6)
    torch.testing.assert_close(weights, expected_weights, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    assert output[2].abs().max() == 0 and weights[2].abs().max() == 0


@torch.no_grad()
def test_nan_in_padded_context_tokens_never_reaches_the_feature_map():
    model = FeatureMapCrossAttentionModel(FeatureMapCrossAttentionConfig.tiny()).eval()
    inputs = model.dummy_inputs  # the second context is padded after 2 tokens
    clean = model(**inputs, output_hidden_states=True)
    inputs["encoder_hidden_states"][1, 2:] = float("nan")
    for implementation in ("eager", "sdpa"):
        model.set_attn_implementation(implementation)
        torch.testing.assert_close(model(**inputs).last_hidden_state, clean.last_hidden_state, atol=1e-6, rtol=1e-6)
    assert [state.shape for state in clean.hidden_states] == [(2, 3, 4, 5)] * 2, "the map before and after"


def test_bad_inputs_raise_errors_that_name_the_problem():
    layer = FeatureMapCrossAttention(3, 16, 4, context_dim=8)
    with pytest.raises(ValueError, match=r"feature map of shape \(batch, 3, height, width\), got \(2, 4, 4, 4\)"):
        layer(torch.randn(2, 4, 4, 4), torch.randn(2, 6, 8))
    with pytest.raises(ValueError, match=r"context of shape \(batch=2, length, width\), got \(3, 6, 8\)"):
        layer(torch.randn(2, 3, 4, 4), torch.randn(3, 6, 8))
    with pytest.raises(ValueError, match="width 16, expected key_dim=8"):
        layer(torch.randn(2, 3, 4, 4), torch.randn(2, 6, 16))
    with pytest.raises(TypeError, match="`feature_map` must be a floating-point tensor .* got dtype uint8"):
        layer(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.randn(2, 6, 8))
    with pytest.raises(ValueError, match="feature map is empty"):
        layer(torch.randn(2, 3, 0, 4), torch.randn(2, 6, 8))
    with pytest.raises(ValueError, match="`key_value_states` is an empty sequence"):
        layer(torch.randn(2, 3, 4, 4), torch.randn(2, 0, 8))
    model = FeatureMapCrossAttentionModel(FeatureMapCrossAttentionConfig.tiny())
    with pytest.raises(ValueError, match="feature_map .* and encoder_hidden_states .* are both required"):
        model(torch.randn(2, 3, 4, 4))
