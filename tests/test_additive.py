"""Additive (Bahdanau) attention, the masked softmax it uses, and Nadaraya-Watson kernel regression."""

import math

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel

from hf_attention import (
    AdditiveAttention,
    AdditiveAttentionConfig,
    AdditiveAttentionModel,
    NadarayaWatsonAttention,
    NadarayaWatsonConfig,
    NadarayaWatsonModel,
)
from hf_attention.attention import masked_softmax


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
    assert weights.shape == (3, 2, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2))
    assert (weights[1, :, 2:] == 0).all() and (weights[2, :, 3:] == 0).all()


@torch.no_grad()
def test_additive_attention_per_query_mask_and_fully_padded_rows_give_zeros():
    attention = AdditiveAttention(4, 4, 8).eval()
    queries, keys = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    output, _ = attention(queries, keys, attention_mask=lengths_mask([5, 0], 5))
    assert (output[1] == 0).all() and torch.isfinite(output).all()
    per_query = torch.ones(2, 3, 5, dtype=torch.bool)
    per_query[0, 1] = False  # query 1 of row 0 sees nothing
    output, weights = attention(queries, keys, attention_mask=per_query, output_attentions=True)
    assert (output[0, 1] == 0).all() and (weights[0, 1] == 0).all()
    torch.testing.assert_close(weights[0, 0].sum(), torch.tensor(1.0))


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
    assert (half.attentions[0][1, :, 3:] == 0).all()  # padded keys get exactly nothing
    torch.testing.assert_close(half.last_hidden_state.float(), expected.last_hidden_state, atol=3e-2, rtol=3e-2)


def test_additive_model_save_load_round_trip_through_auto_classes(tmp_path):
    model = AdditiveAttentionModel(AdditiveAttentionConfig.tiny(attention_dropout=0.1)).eval()
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), AdditiveAttentionConfig)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is AdditiveAttentionModel and loaded.config.attention_dropout == 0.1
    saved = load_file(tmp_path / "model.safetensors")
    assert set(saved) == set(model.state_dict())
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**model.dummy_inputs)[0], model(**model.dummy_inputs)[0], rtol=0, atol=0)


@torch.no_grad()
def test_additive_model_outputs_attentions_and_tuples():
    model = AdditiveAttentionModel(AdditiveAttentionConfig.tiny()).eval()
    output = model(**model.dummy_inputs, output_attentions=True)
    assert output.last_hidden_state.shape == (2, 3, 4) and output.attentions[0].shape == (2, 3, 5)
    as_tuple = model(**model.dummy_inputs, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], output.last_hidden_state)


def test_additive_bad_inputs_raise_errors_that_name_the_problem():
    attention = AdditiveAttention(6, 4, 8)
    with pytest.raises(ValueError, match=r"queries of shape \(batch, length, 6\), got \(2, 3, 5\)"):
        attention(torch.randn(2, 3, 5), torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match=r"keys of shape \(batch=2, length, 4\), got \(3, 4, 4\)"):
        attention(torch.randn(2, 3, 6), torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match=r"values of shape \(batch, key_length\) = \(2, 4\)"):
        attention(torch.randn(2, 3, 6), torch.randn(2, 4, 4), torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="does not broadcast to the scores"):
        attention(torch.randn(2, 3, 6), torch.randn(2, 4, 4), attention_mask=torch.ones(2, 5))
    model = AdditiveAttentionModel(AdditiveAttentionConfig.tiny())
    with pytest.raises(ValueError, match="encoder_hidden_states .* are both required"):
        model(inputs_embeds=torch.randn(2, 3, 6))
    with pytest.raises(StrictDataclassClassValidationError, match=r"`key_size` must be positive, got 0"):
        AdditiveAttentionConfig(key_size=0)
    with pytest.raises(StrictDataclassClassValidationError, match=r"attention_dropout.*must be in \[0, 1\)"):
        AdditiveAttentionConfig(attention_dropout=1.0)


# --- Nadaraya-Watson ------------------------------------------------------------------------------------------------


def regression_problem(num_train: int = 50, seed: int = 0):
    """d2l's 1-D problem: y = 2 sin(x) + x^0.8 + noise(0.5) on 50 sorted points in [0, 5]."""
    generator = torch.Generator().manual_seed(seed)
    truth = lambda x: 2 * torch.sin(x) + x**0.8  # noqa: E731
    x_train, _ = torch.sort(torch.rand(num_train, generator=generator) * 5)
    y_train = truth(x_train) + 0.5 * torch.randn(num_train, generator=generator)
    x_test = torch.arange(0, 5, 0.1)
    return x_train, y_train, x_test, truth(x_test)


@torch.no_grad()
def test_nadaraya_watson_matches_the_gaussian_kernel_formula():
    attention = NadarayaWatsonAttention(initial_bandwidth=1.7)
    x_train, y_train, x_test, _ = regression_problem(num_train=7)
    prediction, weights = attention(x_test[None, :5], x_train[None], y_train[None], output_attentions=True)
    for i, x in enumerate(x_test[:5].tolist()):
        kernel = [math.exp(-(((x - x_i) * 1.7) ** 2) / 2) for x_i in x_train.tolist()]
        expected = sum(k * y for k, y in zip(kernel, y_train.tolist(), strict=True)) / sum(kernel)
        assert prediction[0, i].item() == pytest.approx(expected, rel=1e-5)
        assert weights[0, i].tolist() == pytest.approx([k / sum(kernel) for k in kernel], rel=1e-4, abs=1e-7)


def fit_bandwidth(model: NadarayaWatsonModel, x_train, y_train, steps: int) -> None:
    """Leave-one-out training (each point is predicted from the others), as the bandwidth would otherwise grow
    without bound to reproduce every training point from itself."""
    leave_one_out = ~torch.eye(len(x_train), dtype=torch.bool)[None]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        prediction = model(x_train[None], x_train[None], y_train[None], leave_one_out).last_hidden_state[0]
        torch.nn.functional.mse_loss(prediction, y_train).backward()
        optimizer.step()


def test_learned_bandwidth_beats_the_unparameterised_kernel_on_1d_regression():
    x_train, y_train, x_test, y_test = regression_problem()
    learned = NadarayaWatsonModel(NadarayaWatsonConfig())
    fit_bandwidth(learned, x_train, y_train, steps=10)
    fixed = NadarayaWatsonModel(NadarayaWatsonConfig(learnable_bandwidth=False))
    assert not fixed.attention.bandwidth.requires_grad and fixed.attention.bandwidth.item() == 1.0
    with torch.no_grad():
        errors = {
            name: torch.nn.functional.mse_loss(model(x_test[None], x_train[None], y_train[None])[0][0], y_test).item()
            for name, model in (("learned", learned), ("fixed", fixed))
        }
    # measured: bandwidth 1 -> 2.21, test MSE against the noiseless curve 0.43 -> 0.10
    assert learned.attention.bandwidth.item() == pytest.approx(2.21, abs=0.05)
    assert errors["fixed"] == pytest.approx(0.43, abs=0.02) and errors["learned"] < 0.12


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@torch.no_grad()
def test_nadaraya_watson_masks_in_half_precision_and_zeroes_empty_rows(dtype):
    model = NadarayaWatsonModel(NadarayaWatsonConfig.tiny()).eval()
    inputs = model.dummy_inputs
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[0, 4:], mask[1] = 0, 0
    expected = model(**inputs, attention_mask=mask, output_attentions=True)
    model.to(dtype)
    half = model(**{k: v.to(dtype) for k, v in inputs.items()}, attention_mask=mask, output_attentions=True)
    assert (half.attentions[0][0, :, 4:] == 0).all() and (half.last_hidden_state[1] == 0).all()
    assert (expected.last_hidden_state[1] == 0).all() and torch.isfinite(half.last_hidden_state).all()
    torch.testing.assert_close(half.last_hidden_state.float(), expected.last_hidden_state, atol=5e-2, rtol=5e-2)


@torch.no_grad()
def test_nadaraya_watson_pools_vector_values_over_vector_points():
    attention = NadarayaWatsonAttention(0.5)
    queries, keys, values = torch.randn(2, 3, 2), torch.randn(2, 4, 2), torch.randn(2, 4, 5)
    output, weights = attention(queries, keys, values, output_attentions=True)
    distances = ((queries[:, :, None] - keys[:, None]) ** 2).sum(-1)
    torch.testing.assert_close(weights, torch.softmax(-distances * 0.25 / 2, dim=-1))
    torch.testing.assert_close(output, weights @ values)


def test_nadaraya_watson_save_load_keeps_the_bandwidth_and_whether_it_learns(tmp_path):
    model = NadarayaWatsonModel(NadarayaWatsonConfig(learnable_bandwidth=False, initial_bandwidth=0.5))
    with torch.no_grad():
        model.attention.bandwidth.fill_(3.25)  # as if fitted: loading must not reset it to initial_bandwidth
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is NadarayaWatsonModel
    assert loaded.attention.bandwidth.item() == 3.25
    loaded.attention.bandwidth.requires_grad_(True)  # what from_pretrained does to every parameter
    prediction = loaded(**loaded.dummy_inputs).last_hidden_state
    assert not prediction.requires_grad  # still fixed: no gradient can reach it
    torch.testing.assert_close(load_file(tmp_path / "model.safetensors")["attention.bandwidth"], torch.tensor([3.25]))


def test_nadaraya_watson_bad_inputs_raise_errors_that_name_the_problem():
    attention = NadarayaWatsonAttention()
    with pytest.raises(ValueError, match=r"both be \(batch, n\) scalars or both \(batch, n, dim\) vectors"):
        attention(torch.randn(2, 3), torch.randn(2, 4, 1), torch.randn(2, 4))
    with pytest.raises(ValueError, match="queries and keys must have the same dim, got 2 and 3"):
        attention(torch.randn(2, 3, 2), torch.randn(2, 4, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"values must be .* \(batch, keys\) = \(2, 4\), got \(2, 5\)"):
        attention(torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 5))
    with pytest.raises(ValueError, match="does not broadcast"):
        attention(torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="query_points, key_points and key_values are all required"):
        NadarayaWatsonModel(NadarayaWatsonConfig())(torch.randn(2, 3))
    with pytest.raises(StrictDataclassClassValidationError, match=r"initial_bandwidth.*must be positive, got 0"):
        NadarayaWatsonConfig(initial_bandwidth=0)
    with pytest.raises(ValueError, match="must be positive, got -1"):
        NadarayaWatsonAttention(initial_bandwidth=-1)
