"""Non-local block: every pairwise function equals the paper's formula; the returned map is f(x_i, x_j) / C(x)."""

import pytest
import torch
from einops import rearrange
from feature_maps import CHANNELS, assert_fp16_stays_finite, leave_the_identity
from torch.nn import functional as F

from hf_attention import NonLocalBlock, NonLocalConfig, NonLocalModel


def relation_formula(block: NonLocalBlock, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f(x_i, x_j) / C(x) written out densely, and g over the key positions."""
    keys = (lambda t: F.max_pool2d(t, 2, ceil_mode=True)) if block.sub_sample else (lambda t: t)
    g = rearrange(keys(block.g(x)), "b c h w -> b (h w) c")
    theta, phi = (x, keys(x)) if block.pairwise_function == "gaussian" else (block.theta(x), keys(block.phi(x)))
    theta, phi = (rearrange(t, "b c h w -> b (h w) c") for t in (theta, phi))
    if block.pairwise_function in ("gaussian", "embedded_gaussian"):
        return torch.softmax(theta @ phi.transpose(1, 2), dim=-1), g  # exp(theta_i . phi_j) / sum_j exp(...)
    if block.pairwise_function == "dot_product":
        return theta @ phi.transpose(1, 2) / phi.shape[1], g
    pairs = torch.cat(  # [theta_i, phi_j] for every pair (i, j)
        (
            theta[:, :, None, :].expand(-1, -1, phi.shape[1], -1),
            phi[:, None, :, :].expand(-1, theta.shape[1], -1, -1),
        ),
        dim=-1,
    )
    return torch.relu(pairs @ block.concat_project.weight.flatten()) / phi.shape[1], g


def non_local_formula(block: NonLocalBlock, x: torch.Tensor) -> torch.Tensor:
    """z = x + BN(W y), y_i = sum_j f(x_i, x_j) g(x_j) / C(x)."""
    relation, g = relation_formula(block, x)
    y = rearrange(relation @ g, "b (h w) c -> b c h w", h=x.shape[-2])
    return x + block.output_norm(block.output(y))


@pytest.mark.parametrize("pairwise_function", ["embedded_gaussian", "gaussian", "dot_product", "concatenation"])
@pytest.mark.parametrize("sub_sample", [False, True])
def test_non_local_block_equals_its_formula_and_returns_its_relation(pairwise_function, sub_sample):
    config = NonLocalConfig(num_channels=CHANNELS, pairwise_function=pairwise_function, sub_sample=sub_sample)
    model = NonLocalModel(config).eval()
    leave_the_identity(model)
    x = torch.randn(2, CHANNELS, 7, 5)
    with torch.no_grad():
        expected, (relation, _) = non_local_formula(model.block, x), relation_formula(model.block, x)
        plain, output = model(x).last_hidden_state, model(x, output_attentions=True)
    torch.testing.assert_close(plain, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.last_hidden_state, expected, atol=1e-5, rtol=1e-5)
    (attention,) = output.attentions
    assert attention.shape == (2, 1, 35, 12 if sub_sample else 35)  # keys: ceil(7 / 2) * ceil(5 / 2) = 12
    torch.testing.assert_close(attention[:, 0], relation, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])  # flex = eager: tests/test_modeling_common.py
def test_non_local_embedded_gaussian_is_dense_softmax_attention_on_the_backends(implementation):
    model = NonLocalModel._from_config(NonLocalConfig.tiny(), attn_implementation=implementation).eval()
    assert model.config._attn_implementation == implementation
    leave_the_identity(model)
    x = torch.randn(2, CHANNELS, 6, 7)
    with torch.no_grad():
        torch.testing.assert_close(model(x).last_hidden_state, non_local_formula(model.block, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_a_fresh_non_local_block_is_the_identity(batch_norm):
    x = torch.randn(2, CHANNELS, 5, 4)
    torch.testing.assert_close(NonLocalBlock(CHANNELS, batch_norm=batch_norm).train()(x), x, rtol=0, atol=0)
    model = NonLocalModel(NonLocalConfig(num_channels=CHANNELS, batch_norm=batch_norm))
    torch.testing.assert_close(model(x).last_hidden_state, x, rtol=0, atol=0)


@pytest.mark.parametrize("pairwise_function", ["embedded_gaussian", "gaussian", "dot_product", "concatenation"])
def test_float16_scores_never_overflow(pairwise_function):
    block = NonLocalBlock(CHANNELS, pairwise_function=pairwise_function, batch_norm=False)
    leave_the_identity(block)
    # the response y grows as x for the softmax forms, as x^2 for concatenation and as x^3 for the dot product:
    # weights that keep y inside float16's range at inputs of 1e4 (at 0.02, concatenation's y reached 2^16 - 1)
    std = {"dot_product": 0.001, "concatenation": 0.005}.get(pairwise_function, 0.02)
    with torch.no_grad():
        for conv in (block.g, block.output, getattr(block, "theta", None), getattr(block, "phi", None)):
            if conv is not None:
                conv.weight.normal_(0.0, std)
    assert_fp16_stays_finite(block, torch.randn(1, CHANNELS, 5, 6) * 1e4)
