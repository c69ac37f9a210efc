"""Additive (Bahdanau) attention (modeling_additive) and the masked softmax it is built on."""

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError

from hf_attention import AdditiveAttention, AdditiveAttentionConfig, AdditiveAttentionModel
from hf_attention.masks import masked_softmax


def lengths_mask(lengths: list[int], max_length: int) -> torch.Tensor:
    return (torch.arange(max_length)[None, :] < torch.tensor(lengths)[:, None]).long()


# --- masked softmax -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_masked_softmax_keeps_only_valid_entries_and_gives_zero_rows(dtype):
    scores = torch.tensor([[3.0, 60000.0, -60000.0, 1.0], [2.0, 1.0, 0.0, -1.0]]).to(dtype)
    keep = torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0]])
    probs = masked_softmax(scores, keep)
    assert probs.dtype == dtype
    expected = torch.softmax(torch.tensor([3.0, -60000.0, 1.0]), dim=-1)
    torch.testing.assert_close(probs[0, [0, 2, 3]].float(), expected, atol=1e-3, rtol=1e-2)
    assert probs[0, 1] == 0 and (probs[1] == 0).all()


def test_masked_softmax_gradient_is_finite_for_a_fully_masked_row():
    scores = torch.randn(2, 3, requires_grad=True)
    masked_softmax(scores, torch.tensor([[1, 1, 0], [0, 0, 0]])).sum().backward()
    assert torch.isfinite(scores.grad).all() and (scores.grad[1] == 0).all()


def test_masked_softmax_rejects_a_mask_that_does_not_fit():
    with pytest.raises(ValueError, match=r"mask of shape \(2, 5\) does not broadcast to the scores of shape \(2, 4\)"):
        masked_softmax(torch.randn(2, 4), torch.ones(2, 5))
    with pytest.raises(ValueError, match="does not broadcast"):  # a mask may not enlarge the scores
        masked_softmax(torch.randn(1, 4), torch.ones(3, 4))


# --- additive attention ---------------------------------------------------------------------------------------------


def additive_formula(attention: AdditiveAttention, queries, keys, values, lengths):
    """w_v^T tanh(W_q q + W_k k) for each pair, softmax over the first `length` keys, weighted sum of the values."""
    w_q, w_k, w_v = attention.query_proj.weight, attention.key_proj.weight, attention.score_proj.weight[0]
    batch, num_queries, _ = queries.shape
    output = torch.zeros(batch, num_queries, values.shape[-1])
    for b in range(batch):
        for i in range(num_queries):
            scores = torch.stack([w_v @ torch.tanh(w_q @ queries[b, i] + w_k @ keys[b, j]) for j in range(lengths[b])])
            weights = torch.exp(scores - scores.max()) / torch.exp(scores - scores.max()).sum()
            output[b, i] = sum(weights[j] * values[b, j] for j in range(lengths[b]))
    return output


@torch.no_grad()
def test_additive_attention_matches_the_formula_with_queries_keys_and_values_of_different_widths():
    attention = AdditiveAttention(query_dim=6, key_dim=4, hidden_dim=8).eval()
    queries, keys, values = torch.randn(3, 2, 6), torch.randn(3, 5, 4), torch.randn(3, 5, 3)
    lengths = [5, 2, 3]
    output, weights = attention(queries, keys, values, lengths_mask(lengths, 5), output_attentions=True)
    torch.testing.assert_close(output, additive_formula(attention, queries, keys, values, lengths))
    assert weights.shape == (3, 1, 2, 5)  # (batch, one head, queries, keys)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 1, 2))
    assert (weights[1, ..., 2:] == 0).all() and (weights[2, ..., 3:] == 0).all()


@torch.no_grad()
def test_additive_attention_per_query_mask_and_fully_padded_rows_give_zeros():
    attention = AdditiveAttention(4, 4, 8).eval()
    queries, keys = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    output, _ = attention(queries, keys, attention_mask=lengths_mask([5, 0], 5))
    assert (output[1] == 0).all() and torch.isfinite(output).all()
    per_query = torch.ones(2, 3, 5, dtype=torch.bool)
    per_query[0, 1] = False  # query 1 of row 0 sees nothing
    output, weights = attention(queries, keys, attention_mask=per_query, output_attentions=True)
    assert (output[0, 1] == 0).all() and (weights[0, 0, 1] == 0).all()
    torch.testing.assert_close(weights[0, 0, 0].sum(), torch.tensor(1.0))


def test_additive_attention_dropout_acts_on_the_weights_in_training_only():
    attention = AdditiveAttention(4, 4, 8, dropout=0.5)
    queries, keys = torch.randn(2, 3, 4), torch.randn(2, 6, 4)
    attention.train()
    assert not torch.allclose(attention(queries, keys)[0], attention(queries, keys)[0])
    attention.eval()
    torch.testing.assert_close(attention(queries, keys)[0], attention(queries, keys)[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@torch.no_grad()
def test_additive_model_in_half_precision_masks_exactly(dtype):
    model = AdditiveAttentionModel(AdditiveAttentionConfig.tiny()).eval()
    inputs = model.dummy_inputs
    expected = model(**inputs, output_attentions=True)
    half = model.to(dtype)(**{k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()},
                           output_attentions=True)  # fmt: skip
    assert half.last_hidden_state.dtype == dtype and torch.isfinite(half.last_hidden_state).all()
    assert (half.attentions[0][1, ..., 3:] == 0).all()  # padded keys get exactly nothing
    torch.testing.assert_close(half.last_hidden_state.float(), expected.last_hidden_state, atol=3e-2, rtol=3e-2)


def test_additive_bad_inputs_raise_errors_that_name_the_problem():
    attention = AdditiveAttention(6, 4, 8)
    with pytest.raises(ValueError, match=r"queries of shape \(batch, length, 6\), got \(2, 3, 5\)"):
        attention(torch.randn(2, 3, 5), torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match=r"keys of shape \(batch=2, length, 4\), got \(3, 4, 4\)"):
        attention(torch.randn(2, 3, 6), torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match=r"values of shape \(batch, key_length\) = \(2, 4\)"):
        attention(torch.randn(2, 3, 6), torch.randn(2, 4, 4), torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"`attention_mask` must have shape \(batch_size, length\) = \(2, 4\)"):
        attention(torch.randn(2, 3, 6), torch.randn(2, 4, 4), attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"per-query `attention_mask` must have shape .* \(2, 3, 4\), got \(2, 3, 5\)"):
        attention(torch.randn(2, 3, 6), torch.randn(2, 4, 4), attention_mask=torch.ones(2, 3, 5))
    with pytest.raises(TypeError, match="`keys` must be a floating-point tensor"):
        attention(torch.randn(2, 3, 6), torch.ones(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="`keys` is an empty sequence"):
        attention(torch.randn(2, 3, 6), torch.randn(2, 0, 4))
    model = AdditiveAttentionModel(AdditiveAttentionConfig.tiny())
    with pytest.raises(ValueError, match="encoder_hidden_states .* are both required"):
        model(inputs_embeds=torch.randn(2, 3, 6))
    with pytest.raises(StrictDataclassClassValidationError, match=r"`key_size` must be positive, got 0"):
        AdditiveAttentionConfig(key_size=0)
    with pytest.raises(StrictDataclassClassValidationError, match=r"attention_dropout.*must be in \[0, 1\)"):
        AdditiveAttentionConfig(attention_dropout=1.0)


@torch.no_grad()
def test_nan_in_padded_keys_and_values_never_reaches_an_output():
    model = AdditiveAttentionModel(AdditiveAttentionConfig.tiny()).eval()
    inputs = model.dummy_inputs  # the second row keeps 3 of 5 keys
    clean = model(**inputs).last_hidden_state
    inputs["encoder_hidden_states"][1, 3:] = float("nan")
    torch.testing.assert_close(model(**inputs).last_hidden_state, clean, rtol=0, atol=0)


@torch.no_grad()
def test_float16_inputs_of_ten_thousand_score_in_float32_and_stay_finite():
    model = AdditiveAttentionModel(AdditiveAttentionConfig.tiny()).eval()
    inputs = {name: value * 1e4 if value.is_floating_point() else value for name, value in model.dummy_inputs.items()}
    expected = model(**inputs, output_attentions=True)
    half_inputs = {name: value.half() if value.is_floating_point() else value for name, value in inputs.items()}
    half = model.half()(**half_inputs, output_attentions=True)
    assert torch.isfinite(half.last_hidden_state).all() and torch.isfinite(half.attentions[0]).all()
    torch.testing.assert_close(half.attentions[0].float(), expected.attentions[0], atol=2e-2, rtol=0)


def test_the_old_name_of_qkv_bias_still_loads():
    config = AdditiveAttentionConfig.tiny(use_bias=True)  # the field was `use_bias` before issue 8
    assert config.qkv_bias and AdditiveAttentionModel(config).attention.query_proj.bias is not None
