"""The factory builds every feature-map block by name; every block takes any size, trains, and refuses bad
arguments and bad input with the reason. (The model contract itself is tests/test_modeling_common.py.)"""

import pytest
import torch
from feature_maps import CHANNELS, identity_start_parameters, leave_the_identity
from huggingface_hub.errors import StrictDataclassClassValidationError

from hf_attention import (
    BasicResidualBlock,
    CompressAIAttentionBlock,
    CompressAIAttentionConfig,
    CrissCrossAttention,
    CrissCrossAttentionConfig,
    CrissCrossAttentionModel,
    DualAttention,
    DualAttentionConfig,
    DualAttentionModel,
    NonLocalBlock,
    NonLocalConfig,
    NonLocalModel,
    PositionAttention,
    ResidualAttentionConfig,
    ResidualAttentionModule,
    SEBottleneckBlock,
    SpatialTransformer,
    SpatialTransformerConfig,
    SqueezeExcitation,
    SqueezeExcitationConfig,
    create_feature_attention,
)
from hf_attention.feature_attention import FEATURE_ATTENTION_BLOCKS
from hf_attention.feature_map_pretrained import init_query_key_

SMALL = {  # constructor arguments that keep every block tiny
    "squeeze_excitation": {"reduction": 2},
    "spatial_transformer": {"localisation_channels": 4, "pooled_size": 2, "hidden_size": 8},
    "residual_attention": {"mask_depth": 2},
    "dual_attention": {"reduction": 2},
    "non_local": {"sub_sample": True},
    "criss_cross": {"reduction": 2},
    "compressai": {},
}


def block(name: str) -> torch.nn.Module:
    return create_feature_attention(name, CHANNELS, **SMALL[name]).eval()


@pytest.mark.parametrize("name", list(FEATURE_ATTENTION_BLOCKS))
def test_the_factory_builds_the_named_block_with_its_arguments(name):
    torch.manual_seed(0)
    created = create_feature_attention(name, CHANNELS, **SMALL[name])
    torch.manual_seed(0)
    direct = FEATURE_ATTENTION_BLOCKS[name](CHANNELS, **SMALL[name])
    assert type(created) is type(direct)
    for (key, value), (_, expected) in zip(created.state_dict().items(), direct.state_dict().items(), strict=True):
        torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=key)


def test_the_factory_passes_arguments_on_and_refuses_unknown_names_and_keywords():
    assert create_feature_attention("criss_cross", CHANNELS, reduction=2, recurrence=3).recurrence == 3
    assert create_feature_attention("non_local", CHANNELS, pairwise_function="dot_product").pairwise_function == (
        "dot_product"
    )
    with pytest.raises(ValueError, match=r"Unknown feature attention 'non_locale' \(did you mean 'non_local'\?\)"):
        create_feature_attention("non_locale", CHANNELS)
    with pytest.raises(TypeError, match="recurrence"):
        create_feature_attention("squeeze_excitation", CHANNELS, recurrence=2)


@pytest.mark.parametrize("name", list(FEATURE_ATTENTION_BLOCKS))
@pytest.mark.parametrize(("batch_size", "height", "width"), [(1, 1, 1), (2, 5, 3)])
def test_any_height_width_and_batch_size(name, batch_size, height, width):
    module = block(name)
    leave_the_identity(module)
    with torch.no_grad():
        output = module(torch.randn(batch_size, CHANNELS, height, width))
    assert output.shape == (batch_size, CHANNELS, height, width) and torch.isfinite(output).all()


@pytest.mark.parametrize("name", list(FEATURE_ATTENTION_BLOCKS))
def test_gradients_reach_every_parameter(name):
    module = block(name).train()
    leave_the_identity(module)
    x = torch.randn(2, CHANNELS, 6, 5) + 3 * torch.randn(2, CHANNELS, 1, 1)  # channel means that differ
    output = module(x)
    (output * torch.randn_like(output)).sum().backward()
    for parameter_name, parameter in module.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, f"no gradient reaches {parameter_name}"


@pytest.mark.parametrize("name", ["spatial_transformer", "dual_attention", "non_local", "criss_cross"])
def test_blocks_that_start_as_the_identity_still_get_a_gradient_to_leave_it(name):
    module = block(name).train()
    module(torch.randn(2, CHANNELS, 6, 5)).pow(2).sum().backward()
    starters = identity_start_parameters(module)
    assert starters
    for parameter_name, parameter in starters.items():
        assert parameter.abs().max() == 0, f"{parameter_name} does not start at zero"
        assert parameter.grad.abs().sum() > 0, f"{parameter_name} gets no gradient"


def _score_variance(query: torch.nn.Conv2d, key: torch.nn.Conv2d, x: torch.Tensor) -> float:
    return torch.einsum("bcq,bck->bqk", query(x).flatten(2), key(x).flatten(2)).var().item()


def test_query_key_convolutions_start_with_unit_variance_scores():
    torch.manual_seed(0)
    x = torch.randn(4, 64, 8, 8)
    with torch.no_grad():
        pairs = [(torch.nn.Conv2d(64, 16, 1), torch.nn.Conv2d(64, 16, 1)) for _ in range(20)]
        for query, key in pairs:
            init_query_key_(query)
            init_query_key_(key)
        started = sum(_score_variance(query, key, x) for query, key in pairs) / len(pairs)
        for query, key in pairs:  # the ResNet rule: scores of variance 16 * (64 * 2 / 16)^2 = 1024
            torch.nn.init.kaiming_normal_(query.weight, mode="fan_out", nonlinearity="relu")
            torch.nn.init.kaiming_normal_(key.weight, mode="fan_out", nonlinearity="relu")
        kaiming = sum(_score_variance(query, key, x) for query, key in pairs) / len(pairs)
    assert 0.8 < started < 1.25
    assert 600 < kaiming < 1500


def _relative_entropy(attentions: tuple[torch.Tensor, ...]) -> float:
    """Mean entropy of the attention rows over the entropy of a uniform row: 1 is uniform, 0 one-hot."""
    probabilities = attentions[-1].float()
    entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(-1).mean()
    return (entropy / torch.log(torch.tensor(float(probabilities.shape[-1])))).item()


@pytest.mark.parametrize(
    ("model_class", "config"),
    [
        (CrissCrossAttentionModel, CrissCrossAttentionConfig(num_channels=64, reduction=4)),
        (NonLocalModel, NonLocalConfig(num_channels=64)),
        (DualAttentionModel, DualAttentionConfig(num_channels=64, reduction=1)),
    ],
)
def test_position_attention_starts_soft_not_one_hot(model_class, config):
    """A softmax that starts one-hot passes almost no gradient to its queries and keys; Kaiming-initialised ones
    cost the criss-cross CNN of the README 2.0 points on Fashion-MNIST."""
    torch.manual_seed(0)
    model, x = model_class(config).train(), torch.randn(2, 64, 8, 8)  # DANet's batch norm: batch statistics
    with torch.no_grad():
        started = _relative_entropy(model(x, output_attentions=True).attentions)
        for name, module in model.named_modules():
            if name.endswith((".query", ".key", ".theta", ".phi")):
                torch.nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        kaiming = _relative_entropy(model(x, output_attentions=True).attentions)
    assert started > 0.75 and kaiming < started - 0.4, (started, kaiming)


@pytest.mark.parametrize("name", list(FEATURE_ATTENTION_BLOCKS))
def test_bad_feature_maps_are_refused_with_the_reason(name):
    module = block(name)
    with pytest.raises(ValueError, match=rf"was built for {CHANNELS} channels, got a feature map with 3"):
        module(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match=rf"expects a feature map of shape \(batch, {CHANNELS}, height, width\)"):
        module(torch.randn(CHANNELS, 5, 5))
    with pytest.raises(ValueError, match=r"empty feature map \(5x0\)"):
        module(torch.randn(1, CHANNELS, 5, 0))
    with pytest.raises(TypeError, match="must be a floating-point tensor .* got dtype uint8"):
        module(torch.zeros(1, CHANNELS, 5, 5, dtype=torch.uint8))


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: SqueezeExcitation(-8), ValueError, r"`channels` must be positive, got -8"),
        (lambda: SqueezeExcitation(8, reduction=0), ValueError, r"`reduction` must be positive, got 0"),
        (lambda: SqueezeExcitation(8, reduction=9), ValueError, r"`reduction` \(9\) is larger than the 8 channels"),
        (lambda: SqueezeExcitation(2.5), TypeError, r"`channels` must be a positive integer, got 2.5"),
        (lambda: SEBottleneckBlock(8, 10, reduction=2), ValueError, r"out_channels must be a multiple of 4, got 10"),
        (lambda: BasicResidualBlock(8, -1), ValueError, r"`out_channels` must be positive, got -1"),
        (lambda: SpatialTransformer(3, pooled_size=0), ValueError, r"`pooled_size` must be positive, got 0"),
        (lambda: ResidualAttentionModule(8, mask_depth=0), ValueError, r"`mask_depth` must be positive, got 0"),
        (lambda: ResidualAttentionModule(8, num_pre_post_units=-1), ValueError, r"`num_pre_post_units` must be >= 0"),
        (lambda: DualAttention(8, inner_channels=-2), ValueError, r"`inner_channels` must be positive, got -2"),
        (lambda: DualAttention(8, reduction=4), ValueError, r"`reduction` \(4\) is larger than the 2 channels"),
        (lambda: PositionAttention(4, reduction=0), ValueError, r"`reduction` must be positive, got 0"),
        (lambda: NonLocalBlock(8, pairwise_function="cosine"), ValueError, r"pairwise_function.*got 'cosine'"),
        (lambda: NonLocalBlock(8, inner_channels=0), ValueError, r"`inner_channels` must be positive, got 0"),
        (lambda: CrissCrossAttention(8, recurrence=0), ValueError, r"`recurrence` must be positive, got 0"),
        (lambda: CrissCrossAttention(8, reduction=16), ValueError, r"`reduction` \(16\) is larger than the 8"),
        (lambda: CompressAIAttentionBlock(1), ValueError, r"at least 2"),
    ],
)
def test_impossible_block_arguments_are_refused_with_the_reason(build, error, message):
    with pytest.raises(error, match=message):
        build()


@pytest.mark.parametrize(
    ("config_class", "overrides", "message"),
    [
        (SqueezeExcitationConfig, {"reduction": 0}, r"`reduction` must be positive, got 0"),
        (SqueezeExcitationConfig, {"reduction": 128}, r"`reduction` \(128\) is larger than the 64 channels"),
        (SqueezeExcitationConfig, {"block_type": "wide"}, r"block_type.*must be one of \('layer', 'basic', 'bottle"),
        (SqueezeExcitationConfig, {"stride": 2}, r"block_type='layer' keeps the input's shape"),
        (SqueezeExcitationConfig, {"block_type": "bottleneck", "out_channels": 6}, r"multiple of 4, got 6"),
        (SpatialTransformerConfig, {"pooled_size": -1}, r"`pooled_size` must be positive"),
        (ResidualAttentionConfig, {"num_pre_post_units": -1}, r"`num_pre_post_units` must be >= 0"),
        (ResidualAttentionConfig, {"mask_depth": 0}, r"`mask_depth` must be positive"),
        (DualAttentionConfig, {"inner_channels": 0}, r"`inner_channels` must be positive"),
        (DualAttentionConfig, {"num_channels": 16}, r"`reduction` \(8\) is larger than the 4 inner channels"),
        (NonLocalConfig, {"pairwise_function": "cosine"}, r"pairwise_function.*must be one of .*got 'cosine'"),
        (CrissCrossAttentionConfig, {"recurrence": 0}, r"`recurrence` must be positive, got 0"),
        (CompressAIAttentionConfig, {"num_channels": 1}, r"at least 2"),
    ],
)
def test_impossible_configs_are_refused_with_the_reason(config_class, overrides, message):
    with pytest.raises((ValueError, StrictDataclassClassValidationError), match=message):
        config_class(**overrides)
