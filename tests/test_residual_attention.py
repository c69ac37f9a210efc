"""Residual Attention Network: the output is (1 + M) * T, with the paper's p, t and r units."""

import torch
from feature_maps import CHANNELS, leave_the_identity

from hf_attention import ResidualAttentionModule


def test_residual_attention_output_is_one_plus_mask_times_trunk():
    module = ResidualAttentionModule(CHANNELS, num_pre_post_units=0, num_trunk_units=1, mask_depth=3).eval()
    leave_the_identity(module)
    x = torch.randn(2, CHANNELS, 9, 6)
    with torch.no_grad():
        output, trunk, mask = module(x), module.trunk(x), module.mask(x)
    assert mask.min() >= 0 and mask.max() <= 1 and mask.shape == x.shape
    torch.testing.assert_close(output, (1 + mask) * trunk)
    # within (1 + [0, 1]) * T: same sign as the trunk, magnitude between |T| and 2 |T|
    assert bool((output * trunk >= 0).all())
    assert bool((output.abs() >= trunk.abs() - 1e-6).all()) and bool((output.abs() <= 2 * trunk.abs() + 1e-6).all())


def test_residual_attention_has_the_paper_p_t_r_units():
    module = ResidualAttentionModule(CHANNELS, num_pre_post_units=2, num_trunk_units=3, num_mask_units=2, mask_depth=2)
    assert len(module.pre) == len(module.post) == 2 and len(module.trunk) == 3
    assert all(len(units) == 2 for units in [*module.mask.down, *module.mask.up, module.mask.bottom])


def test_odd_sizes_come_back_to_the_input_size():
    module = ResidualAttentionModule(CHANNELS, mask_depth=3).eval()
    with torch.no_grad():
        assert module(torch.randn(1, CHANNELS, 7, 3)).shape == (1, CHANNELS, 7, 3)
