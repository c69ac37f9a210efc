"""The attention core: every backend gives the same numbers, masks are exact, empty rows give zeros."""

import copy

import pytest
import torch
from conftest import BACKENDS
from transformers import AttentionInterface

from hf_attention import MultiHeadAttention, build_attention_mask
from hf_attention.attention import eager_attention_forward


def reference_attention(query, key, value, allowed):
    """softmax(QK^T/sqrt(d)) V written out, with rows that have no key set to zero."""
    scores = query @ key.transpose(-1, -2) / query.shape[-1] ** 0.5
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return probs @ value, probs


def padded_cross_inputs(batch=3, queries=5, keys=7, width=16, context_width=8):
    hidden = torch.randn(batch, queries, width)
    context = torch.randn(batch, keys, context_width)
    mask = torch.ones(batch, keys, dtype=torch.long)
    mask[1, 4:] = 0  # partly padded
    mask[2] = 0  # fully padded: every query of this sample has nothing to attend to
    return hidden, context, mask


@torch.no_grad()
@pytest.mark.parametrize("implementation", BACKENDS)
def test_cross_attention_matches_formula_with_padding(implementation):
    hidden, context, mask = padded_cross_inputs()
    attention = MultiHeadAttention(16, 4, key_dim=8, attn_implementation=implementation).eval()
    output, probs = attention(hidden, context, attention_mask=mask, output_attentions=True)

    query = attention.q_proj(hidden).view(3, 5, 4, 4).transpose(1, 2)
    key = attention.k_proj(context).view(3, 7, 4, 4).transpose(1, 2)
    value = attention.v_proj(context).view(3, 7, 4, 4).transpose(1, 2)
    allowed = mask.bool()[:, None, None, :]
    expected, expected_probs = reference_attention(query, key, value, allowed)
    expected = attention.out_proj(expected.transpose(1, 2).flatten(2))
    expected[2] = 0.0  # a query with no key outputs nothing

    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs, expected_probs, atol=1e-5, rtol=1e-5)
    assert probs[1, :, :, 4:].abs().max() == 0
    assert output[2].abs().max() == 0 and not output.isnan().any()


@torch.no_grad()
@pytest.mark.parametrize("is_causal", [False, True])
def test_every_backend_gives_the_same_self_attention(is_causal):
    hidden = torch.randn(3, 6, 16)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, :2] = False  # left padding: under a causal mask the first two queries see no key at all
    mask[1, 5:] = False
    attention = MultiHeadAttention(16, 4, is_causal=is_causal).eval()
    results = {}
    for implementation in BACKENDS:
        attention.attn_implementation = implementation
        results[implementation] = (attention(hidden, attention_mask=mask)[0], attention(hidden)[0])
    for implementation in BACKENDS[1:]:
        for got, expected in zip(results[implementation], results["eager"], strict=True):
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    padded_output = results["sdpa"][0]
    assert padded_output[0, :2].abs().max() == 0 and padded_output[1, 5:].abs().max() == 0


@torch.no_grad()
def test_matches_torch_multihead_attention_on_unpadded_rows():
    torch_attention = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    ours = MultiHeadAttention(16, 4).eval()
    for projection, weight, bias in zip(
        (ours.q_proj, ours.k_proj, ours.v_proj),
        torch_attention.in_proj_weight.chunk(3),
        torch_attention.in_proj_bias.chunk(3),
        strict=True,
    ):
        projection.weight.copy_(weight)
        projection.bias.copy_(bias)
    ours.out_proj.load_state_dict(torch_attention.out_proj.state_dict())
    hidden = torch.randn(2, 5, 16)
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    expected, expected_probs = torch_attention(hidden, hidden, hidden, key_padding_mask=keep == 0)
    output, probs = ours(hidden, attention_mask=keep, output_attentions=True)
    rows = keep.bool()
    torch.testing.assert_close(output[rows], expected[rows], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs.mean(1)[rows], expected_probs[rows], atol=1e-5, rtol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_masks_stay_exact_in_half_precision(dtype, implementation):
    hidden, context, mask = padded_cross_inputs()
    attention = MultiHeadAttention(16, 4, key_dim=8, attn_implementation=implementation).eval()
    expected, expected_probs = attention(hidden, context, attention_mask=mask, output_attentions=True)
    half = attention.to(dtype)
    output, probs = half(hidden.to(dtype), context.to(dtype), attention_mask=mask, output_attentions=True)
    assert not output.isnan().any() and not probs.isnan().any()
    assert probs[1, :, :, 4:].abs().max() == 0, "padding must get exactly zero weight, not a tiny one"
    assert output[2].abs().max() == 0
    tolerance = 2e-3 if dtype == torch.float16 else 2e-2
    torch.testing.assert_close(output.float(), expected, atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(probs.float(), expected_probs, atol=tolerance, rtol=tolerance)


@torch.no_grad()
@pytest.mark.parametrize("implementation", ["sdpa", "flex_attention"])
def test_output_attentions_gives_real_probabilities_on_fused_backends(implementation):
    hidden = torch.randn(2, 5, 16)
    attention = MultiHeadAttention(16, 4, attn_implementation=implementation).eval()
    output, probs = attention(hidden, output_attentions=True)
    attention.attn_implementation = "eager"
    expected_output, expected_probs = attention(hidden, output_attentions=True)
    assert probs is not None and probs.shape == (2, 4, 5, 5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 5))
    torch.testing.assert_close(probs, expected_probs)
    torch.testing.assert_close(output, expected_output)


@torch.no_grad()
def test_a_user_registered_backend_is_called_with_a_boolean_mask():
    calls = []

    def recording_attention(module, query, key, value, attention_mask, **kwargs):
        calls.append(attention_mask)
        return eager_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("recording_test_backend", recording_attention)
    hidden, context, mask = padded_cross_inputs()
    attention = MultiHeadAttention(16, 4, key_dim=8, attn_implementation="recording_test_backend").eval()
    output = attention(hidden, context, attention_mask=mask)[0]
    attention.attn_implementation = "eager"
    torch.testing.assert_close(output, attention(hidden, context, attention_mask=mask)[0])
    assert len(calls) == 1 and calls[0].dtype == torch.bool and calls[0].shape == (3, 1, 5, 7)


def test_attention_dropout_is_applied_in_training_only():
    attention = MultiHeadAttention(16, 4, dropout=0.5, attn_implementation="eager")
    hidden = torch.randn(2, 5, 16)
    _, train_probs = attention.train()(hidden, output_attentions=True)
    _, eval_probs = attention.eval()(hidden, output_attentions=True)
    assert (train_probs == 0).float().mean() > 0.2  # about half the weights are dropped...
    torch.testing.assert_close(eval_probs.sum(-1), torch.ones(2, 4, 5))  # ...and none at inference


def test_wrong_mask_shape_names_the_expected_shape():
    attention = MultiHeadAttention(16, 4, key_dim=8)
    hidden, context, _ = padded_cross_inputs()
    with pytest.raises(ValueError, match=r"key_padding_mask.*\(3, 7\).*got shape \(3, 5\)"):
        attention(hidden, context, attention_mask=torch.ones(3, 5))


def test_additive_masks_are_refused_with_an_explanation():
    attention = MultiHeadAttention(16, 4)
    mask = torch.zeros(2, 5)
    mask[:, -1] = float("-inf")
    with pytest.raises(ValueError, match="only 0 .padding. and 1 .keep."):
        attention(torch.randn(2, 5, 16), attention_mask=mask)


def test_wrong_widths_and_heads_are_reported():
    with pytest.raises(
        ValueError, match=r"hidden size \(30\) is not a multiple of the number of attention heads \(4\)"
    ):
        MultiHeadAttention(30, 4)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        MultiHeadAttention(16, 4, dropout=1.0)
    attention = MultiHeadAttention(16, 4, key_dim=8)
    with pytest.raises(ValueError, match="width 16, expected key_dim=8"):
        attention(torch.randn(2, 5, 16), torch.randn(2, 7, 16))
    with pytest.raises(ValueError, match=r"hidden_states of shape \(batch, length, 16\)"):
        attention(torch.randn(2, 5, 12))


def test_flash_refuses_padded_cross_attention_instead_of_answering_wrongly():
    with pytest.raises(ValueError, match="flash_attention_2 cannot mask padded keys in cross-attention"):
        build_attention_mask(
            "flash_attention_2", torch.zeros(2, 3, 1), torch.zeros(2, 5, 1), key_padding_mask=torch.ones(2, 5)
        )


@torch.no_grad()
@pytest.mark.parametrize("implementation", BACKENDS)
def test_a_structural_pattern_combines_with_padding(implementation):
    hidden = torch.randn(2, 6, 16)
    window = (torch.arange(6)[:, None] - torch.arange(6)[None, :]).abs() <= 1  # attend to neighbours only
    padding = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    attention = MultiHeadAttention(16, 2, attn_implementation=implementation).eval()
    mask = build_attention_mask(
        implementation, hidden, key_padding_mask=padding, query_padding_mask=padding, pattern=window,
    )  # fmt: skip
    output, probs = attention(hidden, attention_mask=mask, output_attentions=True)
    query, key, value = (
        projection(hidden).view(2, 6, 2, 8).transpose(1, 2)
        for projection in (attention.q_proj, attention.k_proj, attention.v_proj)
    )
    allowed = window[None, None] & padding.bool()[:, None, None, :]
    expected, expected_probs = reference_attention(query, key, value, allowed)
    expected = attention.out_proj(expected.transpose(1, 2).flatten(2)) * padding[:, :, None]
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs, expected_probs * padding[:, None, :, None], atol=1e-5, rtol=1e-5)


def test_separate_value_inputs_and_their_errors():
    attention = MultiHeadAttention(16, 4, key_dim=8, value_dim=12).eval()
    hidden, context, values = torch.randn(2, 3, 16), torch.randn(2, 5, 8), torch.randn(2, 5, 12)
    output, _ = attention(hidden, context, value_states=values)
    assert output.shape == (2, 3, 16)
    with pytest.raises(ValueError, match=r"value_states of shape \(batch=2, length=5, 12\), got \(2, 4, 12\)"):
        attention(hidden, context, value_states=torch.randn(2, 4, 12))
    with pytest.raises(ValueError, match="value_states have width 8, expected value_dim=12"):
        attention(hidden, context, value_states=context)
    with pytest.raises(TypeError, match="`pattern` must be a bool tensor"):
        build_attention_mask("sdpa", hidden, context, pattern=torch.ones(3, 5))


def test_flash_gets_its_two_dimensional_padding_mask_with_empty_rows_opened():
    padding = torch.tensor([[1, 1, 0], [0, 0, 0]])
    mask = build_attention_mask(
        "flash_attention_2", torch.zeros(2, 3, 1), key_padding_mask=padding, query_padding_mask=padding,
    )  # fmt: skip
    # flash unpads by this (batch, length) mask; an all-padding sample is opened so no kernel row is empty...
    assert mask.backend_mask.tolist() == [[True, True, False], [True, True, True]]
    # ...and its outputs are zeroed afterwards, like every padded query's
    assert mask.query_keeps.tolist() == [[True, True, False], [False, False, False]]


@torch.no_grad()
def test_column_sharded_projections_run_their_local_heads_as_a_tensor_parallel_plan_needs():
    """colwise q/k/v and rowwise out_proj, as transformers' tensor-parallel plans shard them: each shard holds half the
    heads, and the shards' partial outputs sum to the full one."""
    attention = MultiHeadAttention(16, 4).eval()
    hidden, mask = torch.randn(2, 5, 16), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    expected = attention(hidden, attention_mask=mask)[0]
    partial = []
    for rows in (slice(0, 8), slice(8, 16)):  # heads 0-1, then heads 2-3
        shard = copy.deepcopy(attention)
        for projection in (shard.q_proj, shard.k_proj, shard.v_proj):
            projection.weight = torch.nn.Parameter(projection.weight[rows])
            projection.bias = torch.nn.Parameter(projection.bias[rows])
        shard.out_proj.weight = torch.nn.Parameter(shard.out_proj.weight[:, rows])
        shard.out_proj.bias = torch.nn.Parameter(torch.zeros(16))  # a rowwise layer adds its bias once
        partial.append(shard(hidden, attention_mask=mask)[0])
    torch.testing.assert_close(partial[0] + partial[1] + attention.out_proj.bias * mask[:, :, None], expected)
