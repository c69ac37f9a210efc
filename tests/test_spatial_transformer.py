"""Spatial Transformer Network: an untrained warp is the identity; a trained one moves the map by its affine."""

import pytest
import torch

from hf_attention import SpatialTransformer, SpatialTransformerConfig, SpatialTransformerModel


@pytest.mark.parametrize("size", [(1, 1), (5, 7)])
def test_an_untrained_spatial_transformer_returns_its_input(size):
    x = torch.randn(2, 3, *size)
    torch.testing.assert_close(SpatialTransformer(3)(x), x, atol=1e-5, rtol=1e-5)  # grid rounding
    model = SpatialTransformerModel(SpatialTransformerConfig.tiny())
    torch.testing.assert_close(model(x).last_hidden_state, x, atol=1e-5, rtol=1e-5)


def test_a_spatial_transformer_warps_by_its_affine_transform():
    transformer = SpatialTransformer(1)
    x = torch.randn(1, 1, 6, 8)
    with torch.no_grad():  # x_source = x_target + 2 / width: a shift by one pixel to the left
        transformer.theta.bias.copy_(torch.tensor([1.0, 0.0, 2.0 / 8, 0.0, 1.0, 0.0]))
    warped = transformer(x)
    torch.testing.assert_close(warped[..., :-1], x[..., 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(warped[..., -1], torch.zeros(1, 1, 6), atol=1e-5, rtol=0)


def test_init_weights_puts_the_regressor_back_to_the_identity():
    model = SpatialTransformerModel(SpatialTransformerConfig.tiny())
    with torch.no_grad():
        model.block.theta.weight.normal_()
        model.block.theta.bias.normal_()
    model.block.init_start_values()
    assert not model.block.theta.weight.any()
    torch.testing.assert_close(model.block.theta.bias, torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
