"""The feature-map attention blocks equal their formulas and honour the transformers model contract."""

import pytest
import torch
from conftest import BACKENDS
from einops import rearrange
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors.torch import load_file
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoConfig, AutoModel

from hf_attention import (
    BasicResidualBlock,
    ChannelAttention,
    CompressAIAttentionBlock,
    CompressAIAttentionConfig,
    CompressAIAttentionModel,
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
    ResidualAttentionModel,
    ResidualAttentionModule,
    SEBasicBlock,
    SEBottleneckBlock,
    SpatialTransformer,
    SpatialTransformerConfig,
    SpatialTransformerModel,
    SqueezeExcitation,
    SqueezeExcitationConfig,
    SqueezeExcitationModel,
    build_attention_mask,
    dot_product_attention,
)
from hf_attention.modeling_feature_attention import IdentityAffineRegressor, ZeroInitBatchNorm2d, ZeroInitConv2d

CHANNELS = 8
# (model class, config) for every block, tiny
BLOCKS = {
    "se_layer": (SqueezeExcitationModel, SqueezeExcitationConfig(num_channels=CHANNELS, reduction=2)),
    "se_basic": (
        SqueezeExcitationModel,
        SqueezeExcitationConfig(num_channels=CHANNELS, reduction=2, block_type="basic"),
    ),
    "se_bottleneck": (
        SqueezeExcitationModel,
        SqueezeExcitationConfig(num_channels=CHANNELS, reduction=2, block_type="bottleneck", out_channels=16, stride=2),
    ),
    "stn": (SpatialTransformerModel, SpatialTransformerConfig(num_channels=CHANNELS, localisation_channels=4)),
    "residual_attention": (ResidualAttentionModel, ResidualAttentionConfig(num_channels=CHANNELS)),
    "dual_attention": (DualAttentionModel, DualAttentionConfig(num_channels=CHANNELS, reduction=2)),
    "non_local": (NonLocalModel, NonLocalConfig(num_channels=CHANNELS, sub_sample=True)),
    "non_local_concatenation": (
        NonLocalModel,
        NonLocalConfig(num_channels=CHANNELS, pairwise_function="concatenation"),
    ),
    "criss_cross": (CrissCrossAttentionModel, CrissCrossAttentionConfig(num_channels=CHANNELS, reduction=2)),
    "compressai": (CompressAIAttentionModel, CompressAIAttentionConfig(num_channels=CHANNELS)),
}


def build(name: str):
    model_class, config = BLOCKS[name]
    return model_class(config).eval()


def leave_the_identity(module: torch.nn.Module) -> None:
    """Give the parameters that start at zero (gammas, the STN regressor, the non-local output) non-zero values.

    Those zeros make a fresh block the identity, and they also stop the gradient to the layers before them at step 0;
    after the first update they are non-zero, which is the state these tests check.
    """
    with torch.no_grad():
        for parameter in identity_start_parameters(module).values():
            parameter.normal_(0.0, 0.5)


def identity_start_parameters(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    starters = (IdentityAffineRegressor, ZeroInitBatchNorm2d, ZeroInitConv2d)
    found = {}
    for name, submodule in module.named_modules():
        if isinstance(submodule, PositionAttention | ChannelAttention | CrissCrossAttention):
            found[f"{name}.gamma"] = submodule.gamma
        elif isinstance(submodule, starters):
            found[f"{name}.weight"] = submodule.weight
    return found


def output_channels(name: str) -> int:
    config = BLOCKS[name][1]
    return getattr(config, "out_channels", None) or CHANNELS


# --- formulas ------------------------------------------------------------------------------------------------------


def test_squeeze_excitation_equals_its_formula():
    layer = SqueezeExcitation(CHANNELS, reduction=4)
    x = torch.randn(3, CHANNELS, 5, 7)
    squeezed = x.mean(dim=(2, 3))
    hidden = torch.relu(squeezed @ layer.fc1.weight.T + layer.fc1.bias)
    gate = torch.sigmoid(hidden @ layer.fc2.weight.T + layer.fc2.bias)
    assert layer.fc1.out_features == 2
    torch.testing.assert_close(layer(x), x * gate[:, :, None, None])


@pytest.mark.parametrize("stride", [1, 2])
def test_se_residual_blocks_gate_the_residual_branch(stride):
    x = torch.randn(2, CHANNELS, 7, 6)
    basic = SEBasicBlock(CHANNELS, CHANNELS, stride=stride, reduction=2).eval()
    residual = basic.bn2(basic.conv2(basic.conv1(x)))
    torch.testing.assert_close(basic(x), torch.relu(basic.attention(residual) + basic.shortcut(x)))
    assert isinstance(basic.attention, SqueezeExcitation)
    # a strided block of constant width still adds up: the shortcut projects (the seed's block does not)
    assert basic(x).shape == (2, CHANNELS, 4 if stride == 2 else 7, 3 if stride == 2 else 6)
    bottleneck = SEBottleneckBlock(CHANNELS, 16, stride=stride, reduction=2).eval()
    residual = bottleneck.bn3(bottleneck.conv3(bottleneck.conv2(bottleneck.conv1(x))))
    torch.testing.assert_close(bottleneck(x), torch.relu(bottleneck.attention(residual) + bottleneck.shortcut(x)))
    with pytest.raises(ValueError, match="out_channels must be a multiple of 4, got 10"):
        SEBottleneckBlock(CHANNELS, 10)


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (16, 9)])
def test_an_untrained_spatial_transformer_returns_its_input(size):
    x = torch.randn(2, 3, *size)
    torch.testing.assert_close(SpatialTransformer(3)(x), x, atol=1e-5, rtol=1e-5)  # grid rounding
    model = SpatialTransformerModel(SpatialTransformerConfig(num_channels=3))
    torch.testing.assert_close(model(x).last_hidden_state, x, atol=1e-5, rtol=1e-5)


def test_a_spatial_transformer_warps_by_its_affine_transform():
    transformer = SpatialTransformer(1)
    x = torch.randn(1, 1, 6, 8)
    with torch.no_grad():  # x_source = x_target + 2 / width: a shift by one pixel to the left
        transformer.theta.bias.copy_(torch.tensor([1.0, 0.0, 2.0 / 8, 0.0, 1.0, 0.0]))
    warped = transformer(x)
    torch.testing.assert_close(warped[..., :-1], x[..., 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(warped[..., -1], torch.zeros(1, 1, 6), atol=1e-5, rtol=0)


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


def position_attention_formula(module: PositionAttention, x: torch.Tensor) -> torch.Tensor:
    query, key, value = (
        rearrange(conv(x), "b c h w -> b c (h w)") for conv in (module.query, module.key, module.value)
    )
    attention = torch.softmax(query.transpose(1, 2) @ key, dim=-1)  # (b, positions, positions), rows sum to 1
    out = value @ attention.transpose(1, 2)
    return x + module.gamma * out.view_as(x)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])  # flex: see the backend-switch test
def test_position_attention_equals_its_formula(implementation):
    module = PositionAttention(CHANNELS, reduction=2, attn_implementation=implementation)
    leave_the_identity(module)
    x = torch.randn(2, CHANNELS, 5, 3)
    with torch.no_grad():
        torch.testing.assert_close(module(x), position_attention_formula(module, x), atol=1e-5, rtol=1e-5)


def test_channel_attention_equals_its_formula():
    module = ChannelAttention(CHANNELS)
    leave_the_identity(module)
    x = torch.randn(2, CHANNELS, 4, 5)
    flat = x.flatten(2)
    energy = flat @ flat.transpose(1, 2)
    attention = torch.softmax(energy.max(dim=-1, keepdim=True).values - energy, dim=-1)
    expected = x + module.gamma * (attention @ flat).view_as(x)
    torch.testing.assert_close(module(x), expected)


def test_dual_attention_sums_its_position_and_channel_branches():
    module = DualAttention(CHANNELS, inner_channels=4, reduction=2).eval()
    leave_the_identity(module)
    x = torch.randn(2, CHANNELS, 6, 5)
    with torch.no_grad():
        position = module.position_out(position_attention_formula(module.position_attention, module.position_in(x)))
        channel = module.channel_out(module.channel_attention(module.channel_in(x)))
        torch.testing.assert_close(module(x), position + channel, atol=1e-5, rtol=1e-5)


def non_local_formula(block: NonLocalBlock, x: torch.Tensor) -> torch.Tensor:
    """z = x + BN(W y), y_i = sum_j f(x_i, x_j) g(x_j) / C(x), with f and C written out densely."""
    keys = (lambda t: F.max_pool2d(t, 2, ceil_mode=True)) if block.sub_sample else (lambda t: t)
    g = rearrange(keys(block.g(x)), "b c h w -> b (h w) c")
    if block.pairwise_function == "gaussian":
        theta, phi = x, keys(x)
    else:
        theta, phi = block.theta(x), keys(block.phi(x))
    theta, phi = (rearrange(t, "b c h w -> b (h w) c") for t in (theta, phi))
    if block.pairwise_function in ("gaussian", "embedded_gaussian"):
        relation = torch.softmax(theta @ phi.transpose(1, 2), dim=-1)  # exp(theta_i . phi_j) / sum_j exp(...)
    elif block.pairwise_function == "dot_product":
        relation = theta @ phi.transpose(1, 2) / phi.shape[1]
    else:
        inner = theta.shape[-1]
        weight = block.concat_project.weight.flatten()
        pairs = torch.cat(  # [theta_i, phi_j] for every pair (i, j)
            (
                theta[:, :, None, :].expand(-1, -1, phi.shape[1], -1),
                phi[:, None, :, :].expand(-1, theta.shape[1], -1, -1),
            ),
            dim=-1,
        )
        assert pairs.shape[-1] == 2 * inner
        relation = torch.relu(pairs @ weight) / phi.shape[1]
    y = rearrange(relation @ g, "b (h w) c -> b c h w", h=x.shape[-2])
    return x + block.output_norm(block.output(y))


@pytest.mark.parametrize("pairwise_function", ["embedded_gaussian", "gaussian", "dot_product", "concatenation"])
@pytest.mark.parametrize("sub_sample", [False, True])
def test_non_local_block_equals_its_formula(pairwise_function, sub_sample):
    block = NonLocalBlock(CHANNELS, pairwise_function=pairwise_function, sub_sample=sub_sample).eval()
    leave_the_identity(block)
    x = torch.randn(2, CHANNELS, 7, 5)
    with torch.no_grad():
        torch.testing.assert_close(block(x), non_local_formula(block, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("implementation", BACKENDS)
def test_non_local_embedded_gaussian_is_dense_softmax_attention_on_every_backend(implementation):
    config = NonLocalConfig(num_channels=CHANNELS)
    model = NonLocalModel._from_config(config, attn_implementation=implementation).eval()
    assert model.config._attn_implementation == implementation
    leave_the_identity(model)
    x = torch.randn(2, CHANNELS, 6, 7)
    with torch.no_grad():
        torch.testing.assert_close(model(x).last_hidden_state, non_local_formula(model.block, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_a_fresh_non_local_block_is_the_identity(batch_norm):
    x = torch.randn(2, CHANNELS, 5, 4)
    block = NonLocalBlock(CHANNELS, batch_norm=batch_norm).train()
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    model = NonLocalModel(NonLocalConfig(num_channels=CHANNELS, batch_norm=batch_norm))
    torch.testing.assert_close(model(x).last_hidden_state, x, rtol=0, atol=0)


def criss_cross_pattern(height: int, width: int) -> torch.Tensor:
    rows = torch.arange(height).repeat_interleave(width)
    columns = torch.arange(width).repeat(height)
    return (rows[:, None] == rows[None, :]) | (columns[:, None] == columns[None, :])


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (6, 6), (9, 2)])
def test_criss_cross_equals_dense_attention_masked_to_row_and_column(size):
    height, width = size
    module = CrissCrossAttention(CHANNELS, reduction=2, recurrence=1)
    leave_the_identity(module)
    x = torch.randn(2, CHANNELS, height, width)
    pattern = criss_cross_pattern(height, width)
    assert int(pattern.sum(-1).min()) == int(pattern.sum(-1).max()) == height + width - 1  # itself once
    mask = build_attention_mask(
        "eager", batch_size=2, query_length=height * width, key_length=height * width, pattern=pattern
    )
    query, key, value = (
        rearrange(conv(x), "b c h w -> b 1 (h w) c") for conv in (module.query, module.key, module.value)
    )
    dense, _ = dot_product_attention(module, query, key, value, mask, "eager", scaling=1.0)
    expected = x + module.gamma * rearrange(dense, "b (h w) 1 c -> b c h w", h=height)
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected, atol=1e-5, rtol=1e-5)


def test_two_criss_cross_recurrences_connect_every_pair_of_positions():
    x = torch.randn(1, CHANNELS, 6, 5, requires_grad=True)
    for recurrence, reaches_the_corner in ((1, False), (2, True)):
        module = CrissCrossAttention(CHANNELS, reduction=2, recurrence=recurrence)
        leave_the_identity(module)
        (gradient,) = torch.autograd.grad(module(x)[0, :, 0, 0].sum(), x)
        # the opposite corner shares neither row nor column with (0, 0): only a second pass reaches it
        assert bool(gradient[0, :, -1, -1].abs().sum() > 0) is reaches_the_corner


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operation produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        for tensor in output if isinstance(output, tuple | list) else (output,):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return output


def test_criss_cross_never_materialises_the_dense_attention_map():
    height = width = 12
    module = CrissCrossAttention(CHANNELS, reduction=2)
    x = torch.randn(1, CHANNELS, height, width, requires_grad=True)
    with LargestTensor() as tracker:
        module(x).sum().backward()
    assert tracker.largest == height * width * (height + width)  # the joint row + column scores
    assert tracker.largest < (height * width) ** 2 / 5  # the dense map would be (H + W) / HW times larger


def test_compressai_block_equals_its_formula_and_uses_compressai_names():
    block = CompressAIAttentionBlock(CHANNELS)
    x = torch.randn(2, CHANNELS, 5, 6)

    def residual_unit(unit, t):
        return torch.relu(t + unit.conv(t))

    a, b = x, x
    for unit in block.conv_a:
        a = residual_unit(unit, a)
    for unit in block.conv_b[:3]:
        b = residual_unit(unit, b)
    b = block.conv_b[3](b)
    torch.testing.assert_close(block(x), x + a * torch.sigmoid(b))
    names = set(block.state_dict())
    assert {f"conv_a.{i}.conv.{j}.weight" for i in range(3) for j in (0, 2, 4)} <= names
    assert {"conv_b.3.weight", "conv_b.3.bias"} <= names and len(names) == 38


def test_compressai_parity_when_it_imports():
    try:
        layers = pytest.importorskip("compressai.layers")
    except Exception as error:  # compressai imports torchvision, whose CUDA build fails next to a CPU torch
        pytest.skip(f"compressai does not import here: {error}")
    reference = layers.AttentionBlock(CHANNELS).eval()
    ours = CompressAIAttentionBlock(CHANNELS).eval()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, CHANNELS, 7, 5)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


# --- the contract every block honours ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BLOCKS))
def test_save_load_round_trip_keeps_every_weight(name, tmp_path):
    model = build(name)
    leave_the_identity(model)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    assert type(AutoConfig.from_pretrained(tmp_path)) is type(model.config)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    saved = load_file(tmp_path / "model.safetensors")
    assert set(saved) == set(model.state_dict())
    for key, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, model.state_dict()[key], rtol=0, atol=0, msg=key)
    x = torch.randn(2, CHANNELS, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).last_hidden_state, model(x).last_hidden_state, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(BLOCKS))
@pytest.mark.parametrize(("batch_size", "height", "width"), [(1, 1, 1), (1, 5, 7), (2, 8, 3), (3, 11, 11)])
def test_any_height_width_and_batch_size(name, batch_size, height, width):
    model = build(name)
    leave_the_identity(model)
    with torch.no_grad():
        output = model(torch.randn(batch_size, CHANNELS, height, width)).last_hidden_state
    stride = getattr(model.config, "stride", 1)
    expected = (batch_size, output_channels(name), -(-height // stride), -(-width // stride))
    assert output.shape == expected and torch.isfinite(output).all()


@pytest.mark.parametrize("name", list(BLOCKS))
def test_gradients_reach_every_parameter(name):
    model = build(name).train()
    leave_the_identity(model)
    x = torch.randn(2, CHANNELS, 6, 5)
    output = model(x).last_hidden_state
    (output * torch.randn_like(output)).sum().backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, f"no gradient reaches {parameter_name}"


@pytest.mark.parametrize("name", ["stn", "dual_attention", "non_local", "criss_cross"])
def test_blocks_that_start_as_the_identity_still_get_a_gradient_to_leave_it(name):
    model = build(name).train()
    x = torch.randn(2, CHANNELS, 6, 5)
    model(x).last_hidden_state.pow(2).sum().backward()
    starters = identity_start_parameters(model)
    assert starters
    for parameter_name, parameter in starters.items():
        assert parameter.abs().max() == 0, f"{parameter_name} does not start at zero"
        assert parameter.grad.abs().sum() > 0, f"{parameter_name} gets no gradient"


@pytest.mark.parametrize("name", list(BLOCKS))
def test_wrong_channel_count_or_rank_is_refused(name):
    model = build(name)
    with pytest.raises(ValueError, match=rf"was built for {CHANNELS} channels, got a feature map with 3"):
        model(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match=rf"expects a feature map of shape \(batch, {CHANNELS}, height, width\)"):
        model(torch.randn(CHANNELS, 5, 5))
    with pytest.raises(ValueError, match="hidden_states is required"):
        model()


@pytest.mark.parametrize("model_class", [NonLocalModel, DualAttentionModel])
def test_attention_backend_can_be_switched_later(model_class):
    config = (NonLocalConfig if model_class is NonLocalModel else DualAttentionConfig)(num_channels=CHANNELS)
    model = model_class(config).eval()
    leave_the_identity(model)
    x = torch.randn(2, CHANNELS, 5, 6)
    outputs = {}
    with torch.no_grad():
        for implementation in BACKENDS:
            model.set_attn_implementation(implementation)
            outputs[implementation] = model(x).last_hidden_state
    for implementation in BACKENDS[1:]:
        torch.testing.assert_close(outputs[implementation], outputs["eager"], atol=1e-5, rtol=1e-5)


def test_return_dict_false_gives_a_tuple():
    model = build("criss_cross")
    x = torch.randn(1, CHANNELS, 4, 4)
    (as_tuple,) = model(x, return_dict=False)
    torch.testing.assert_close(as_tuple, model(x).last_hidden_state)


def test_basic_residual_block_accepts_any_attention_module():
    block = BasicResidualBlock(CHANNELS, CHANNELS, attention=CrissCrossAttention(CHANNELS, reduction=2)).eval()
    assert block(torch.randn(1, CHANNELS, 5, 5)).shape == (1, CHANNELS, 5, 5)


@pytest.mark.parametrize(
    ("config_class", "overrides", "message"),
    [
        (SqueezeExcitationConfig, {"reduction": 0}, r"`reduction` must be a positive integer, got 0"),
        (SqueezeExcitationConfig, {"block_type": "wide"}, r"block_type.*must be one of \('layer', 'basic', 'bottle"),
        (SqueezeExcitationConfig, {"stride": 2}, r"block_type='layer' keeps the input's shape"),
        (SqueezeExcitationConfig, {"block_type": "bottleneck", "out_channels": 6}, r"multiple of 4, got 6"),
        (SpatialTransformerConfig, {"pooled_size": -1}, r"`pooled_size` must be a positive integer"),
        (ResidualAttentionConfig, {"num_pre_post_units": -1}, r"`num_pre_post_units` must be 0 or more"),
        (ResidualAttentionConfig, {"mask_depth": 0}, r"`mask_depth` must be a positive integer"),
        (DualAttentionConfig, {"inner_channels": 0}, r"`inner_channels` must be a positive integer"),
        (NonLocalConfig, {"pairwise_function": "cosine"}, r"pairwise_function.*must be one of .*got 'cosine'"),
        (CrissCrossAttentionConfig, {"recurrence": 0}, r"`recurrence` must be a positive integer, got 0"),
        (CompressAIAttentionConfig, {"num_channels": 1}, r"at least 2"),
    ],
)
def test_impossible_configs_are_refused_with_the_reason(config_class, overrides, message):
    with pytest.raises((ValueError, StrictDataclassClassValidationError), match=message):
        config_class(**overrides)


@pytest.mark.parametrize("name", ["criss_cross", "non_local"])
def test_compiles_as_one_graph(name):
    """`_can_compile_fullgraph = True` is true: dynamo traces the block without a graph break."""
    model = build(name)
    leave_the_identity(model)
    x = torch.randn(2, CHANNELS, 6, 5)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x).last_hidden_state, model(x).last_hidden_state)
