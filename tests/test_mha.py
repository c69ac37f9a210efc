"""Multi-head scaled dot-product attention (modeling_mha): parity with torch, the seed's formula, bad input.

The model contract (outputs, backends, save/load, empty batches, ...) is tests/test_modeling_common.py's.
"""

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from padding_checks import MASK_IDS, bad_masks, keep_first

from hf_attention import MultiHeadAttentionConfig, MultiHeadAttentionModel


def copy_torch_projections(ours: MultiHeadAttentionModel, reference: torch.nn.MultiheadAttention) -> None:
    attention = ours.attention
    if reference._qkv_same_embed_dim:
        weights = reference.in_proj_weight.chunk(3)
    else:
        weights = (reference.q_proj_weight, reference.k_proj_weight, reference.v_proj_weight)
    projections = (attention.q_proj, attention.k_proj, attention.v_proj)
    for projection, weight, bias in zip(projections, weights, reference.in_proj_bias.chunk(3), strict=True):
        projection.weight.copy_(weight)
        projection.bias.copy_(bias)
    attention.out_proj.load_state_dict(reference.out_proj.state_dict())


@torch.no_grad()
@pytest.mark.parametrize("is_causal", [False, True])
def test_self_attention_matches_torch_multihead_attention_on_unpadded_rows(is_causal):
    config = MultiHeadAttentionConfig(hidden_size=16, num_attention_heads=4, qkv_bias=True, is_causal=is_causal)
    ours = MultiHeadAttentionModel(config).eval()
    reference = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    copy_torch_projections(ours, reference)
    hidden, keep = torch.randn(2, 6, 16), keep_first([6, 4], 6)
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1) if is_causal else None
    expected, expected_weights = reference(
        hidden, hidden, hidden, key_padding_mask=keep == 0, attn_mask=causal, average_attn_weights=False
    )
    output = ours(hidden, attention_mask=keep, output_attentions=True, output_hidden_states=True)
    rows = keep.bool()
    torch.testing.assert_close(output.last_hidden_state[rows], expected[rows], atol=1e-5, rtol=1e-5)
    got_weights = output.attentions[0].transpose(1, 2)[rows]
    torch.testing.assert_close(got_weights, expected_weights.transpose(1, 2)[rows], atol=1e-5, rtol=1e-5)
    assert output.last_hidden_state[1, 4:].abs().max() == 0, "padded queries output nothing"
    assert output.hidden_states[0] is hidden and output.hidden_states[1] is output.last_hidden_state


@torch.no_grad()
def test_cross_attention_matches_torch_multihead_attention_with_other_key_width():
    config = MultiHeadAttentionConfig(hidden_size=16, num_attention_heads=2, encoder_hidden_size=8, qkv_bias=True)
    ours = MultiHeadAttentionModel(config).eval()
    reference = torch.nn.MultiheadAttention(16, 2, kdim=8, vdim=8, batch_first=True).eval()
    copy_torch_projections(ours, reference)
    queries, context, keep = torch.randn(2, 3, 16), torch.randn(2, 7, 8), keep_first([7, 2], 7)
    expected, _ = reference(queries, context, context, key_padding_mask=keep == 0)
    got = ours(queries, encoder_hidden_states=context, encoder_attention_mask=keep).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_single_head_is_the_seed_formula():
    model = MultiHeadAttentionModel(MultiHeadAttentionConfig(hidden_size=12, num_attention_heads=1)).eval()
    attention = model.attention
    hidden, keep = torch.randn(2, 5, 12), keep_first([5, 3], 5)
    query, key, value = attention.q_proj(hidden), attention.k_proj(hidden), attention.v_proj(hidden)
    scores = (query @ key.transpose(1, 2) / 12**0.5).masked_fill(keep[:, None, :] == 0, float("-inf"))
    expected = attention.out_proj(scores.softmax(-1) @ value) * keep[:, :, None]
    torch.testing.assert_close(model(hidden, attention_mask=keep).last_hidden_state, expected, atol=1e-5, rtol=1e-5)
    assert attention.q_proj.bias is None, "the seed's Q/K/V projections have no bias"


def test_attention_dropout_acts_on_the_weights_in_training_only():
    model = MultiHeadAttentionModel(MultiHeadAttentionConfig.tiny(attention_dropout=0.5))
    model.set_attn_implementation("eager")
    hidden = torch.randn(2, 5, 16)
    train_weights = model.train()(hidden, output_attentions=True).attentions[0]
    assert (train_weights == 0).float().mean() > 0.2
    eval_weights = model.eval()(hidden, output_attentions=True).attentions[0]
    torch.testing.assert_close(eval_weights.sum(-1), torch.ones(2, 4, 5))


@torch.no_grad()
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])  # flex: the keys are zeroed before any kernel runs
def test_nan_in_padded_tokens_never_reaches_real_tokens(implementation):
    self_attention = MultiHeadAttentionModel(MultiHeadAttentionConfig.tiny(qkv_bias=True)).eval()
    cross_attention = MultiHeadAttentionModel(MultiHeadAttentionConfig.tiny(encoder_hidden_size=8)).eval()
    hidden, context = torch.randn(2, 5, 16), torch.randn(2, 6, 8)
    keep, context_keep = keep_first([5, 3], 5), keep_first([6, 2], 6)
    poisoned, poisoned_context = hidden.clone(), context.clone()
    poisoned[1, 3:], poisoned_context[1, 2:] = float("nan"), float("inf")
    for model in (self_attention, cross_attention):
        model.set_attn_implementation(implementation)
    clean = self_attention(hidden, keep).last_hidden_state
    got = self_attention(poisoned, keep).last_hidden_state
    torch.testing.assert_close(got[keep.bool()], clean[keep.bool()], atol=1e-6, rtol=1e-6)
    clean = cross_attention(hidden, encoder_hidden_states=context, encoder_attention_mask=context_keep)[0]
    got = cross_attention(hidden, encoder_hidden_states=poisoned_context, encoder_attention_mask=context_keep)[0]
    torch.testing.assert_close(got, clean, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(("kind", "mask", "message"), bad_masks(2, 5), ids=MASK_IDS)
@pytest.mark.parametrize("name", ["attention_mask", "encoder_attention_mask"])
def test_masks_that_are_not_zero_one_of_batch_by_length_are_refused(name, kind, mask, message):
    model = MultiHeadAttentionModel(MultiHeadAttentionConfig.tiny(encoder_hidden_size=8))
    inputs = {"inputs_embeds": torch.randn(2, 5, 16), "encoder_hidden_states": torch.randn(2, 5, 8), name: mask}
    with pytest.raises(ValueError, match=f"`{name}` {message}" if "shape" in message else message):
        model(**inputs)


def test_bad_inputs_raise_errors_that_name_the_problem():
    model = MultiHeadAttentionModel(MultiHeadAttentionConfig.tiny())
    with pytest.raises(ValueError, match="encoder_attention_mask was given without encoder_hidden_states"):
        model(torch.randn(2, 5, 16), encoder_attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"hidden_states of shape \(batch, length, 16\)"):
        model(torch.randn(2, 5, 12))
    with pytest.raises(ValueError, match=r"`attention_mask` must have shape .* = \(2, 5\) .* got shape \(2, 4\)"):
        model(torch.randn(2, 5, 16), attention_mask=torch.ones(2, 4))
    with pytest.raises(TypeError, match="`hidden_states` must be a floating-point tensor .* got dtype int64"):
        model(torch.ones(2, 5, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="empty sequence"):
        model(torch.randn(2, 0, 16))
    with pytest.raises(ValueError, match="inputs_embeds is required"):
        model()
    causal = MultiHeadAttentionModel(MultiHeadAttentionConfig.tiny(is_causal=True))
    with pytest.raises(ValueError, match="is_causal=True applies to self-attention only"):
        causal(torch.randn(2, 5, 16), encoder_hidden_states=torch.randn(2, 3, 16))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": 30}, r"hidden size \(30\) is not a multiple of .* heads \(8\)"),
        ({"attention_dropout": 1.0}, r"attention_dropout.*must be in \[0, 1\), got 1.0"),
        ({"encoder_hidden_size": 0}, "encoder_hidden_size.*must be positive, got 0"),
        ({"initializer_range": float("nan")}, "initializer_range.*finite"),
    ],
)
def test_impossible_configs_fail_at_construction(overrides, message):
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        MultiHeadAttentionConfig(**overrides)
