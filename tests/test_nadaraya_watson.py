"""Nadaraya-Watson kernel regression as attention pooling (modeling_nadaraya_watson)."""

import math

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors.torch import load_file
from test_modeling_common import float_inputs
from transformers import AutoModel

from hf_attention import NadarayaWatsonAttention, NadarayaWatsonConfig, NadarayaWatsonModel


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
        assert weights[0, 0, i].tolist() == pytest.approx([k / sum(kernel) for k in kernel], rel=1e-4, abs=1e-7)


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


@pytest.mark.slow
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
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[0, 4:], mask[1] = 0, 0
    inputs = {**model.dummy_inputs, "attention_mask": mask}
    expected = model(**inputs, output_attentions=True)
    model.to(dtype)
    half = model(**float_inputs(inputs, dtype), output_attentions=True)
    assert (half.attentions[0][0, ..., 4:] == 0).all() and (half.last_hidden_state[1] == 0).all()
    assert (expected.last_hidden_state[1] == 0).all() and torch.isfinite(half.last_hidden_state).all()
    torch.testing.assert_close(half.last_hidden_state.float(), expected.last_hidden_state, atol=5e-2, rtol=5e-2)


@torch.no_grad()
def test_nadaraya_watson_pools_vector_values_over_vector_points():
    attention = NadarayaWatsonAttention(0.5)
    queries, keys, values = torch.randn(2, 3, 2), torch.randn(2, 4, 2), torch.randn(2, 4, 5)
    output, weights = attention(queries, keys, values, output_attentions=True)
    distances = ((queries[:, :, None] - keys[:, None]) ** 2).sum(-1)
    torch.testing.assert_close(weights[:, 0], torch.softmax(-distances * 0.25 / 2, dim=-1))
    torch.testing.assert_close(output, weights[:, 0] @ values)


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
    with pytest.raises(ValueError, match=r"`attention_mask` must have shape \(batch_size, length\) = \(2, 4\)"):
        attention(torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4), torch.ones(2, 3))
    with pytest.raises(TypeError, match="`values` must be a floating-point tensor"):
        attention(torch.randn(2, 3), torch.randn(2, 4), torch.ones(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="no key-value pairs"):
        attention(torch.randn(2, 3), torch.randn(2, 0), torch.randn(2, 0))
    with pytest.raises(ValueError, match="query_points, key_points and key_values are all required"):
        NadarayaWatsonModel(NadarayaWatsonConfig())(torch.randn(2, 3))
    with pytest.raises(StrictDataclassClassValidationError, match=r"initial_bandwidth.*must be positive, got 0"):
        NadarayaWatsonConfig(initial_bandwidth=0)
    with pytest.raises(ValueError, match="must be positive, got -1"):
        NadarayaWatsonAttention(initial_bandwidth=-1)


@torch.no_grad()
def test_nan_in_padded_key_points_and_values_never_reaches_a_prediction():
    model = NadarayaWatsonModel(NadarayaWatsonConfig.tiny()).eval()
    inputs = model.dummy_inputs
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    clean = model(**{**inputs, "attention_mask": mask}).last_hidden_state
    inputs["key_points"][1, 5:], inputs["key_values"][1, 5:] = float("nan"), float("inf")
    torch.testing.assert_close(model(**{**inputs, "attention_mask": mask}).last_hidden_state, clean, rtol=0, atol=0)


@torch.no_grad()
def test_float16_points_far_apart_score_in_float32_and_stay_finite():
    model = NadarayaWatsonModel(NadarayaWatsonConfig.tiny()).eval()
    inputs = model.dummy_inputs
    inputs["query_points"], inputs["key_points"] = inputs["query_points"] * 100, inputs["key_points"] * 100
    half_inputs = float_inputs(inputs, torch.float16)
    # squared distances up to 2.5e5, beyond float16's 65504: scored in float16 they would all be -inf
    expected = model(**float_inputs(half_inputs, torch.float32)).last_hidden_state
    half = model.half()(**half_inputs).last_hidden_state
    assert torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), expected, atol=1e-2, rtol=1e-2)
