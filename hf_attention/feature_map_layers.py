"""What the feature-map attention families share: input and argument checks, residual-block pieces, the map
recorder, weight initialisation and the base `PreTrainedModel` of the block wrappers.

Every family file (`modeling_squeeze_excitation.py`, ...) imports this one, so a pushed block ships its own code,
this file and the core it needs, nothing of the other families.
"""

from functools import wraps

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.output_capturing import capture_outputs

from .attention import dot_product_attention
from .checks import check_float_input, check_positive
from .fused_linear import RoutedConv2d
from .pretrained import HFAttentionPreTrainedModel, resolve_forward_kwargs

# --- checks -----------------------------------------------------------------------------------------------------


def check_feature_map(hidden_states: torch.Tensor, channels: int, block: str, name: str = "hidden_states") -> None:
    """Raise unless `hidden_states` is a float (batch, channels, height, width) feature map with positive sizes."""
    layout = f"(batch, {channels}, height, width)"
    if not isinstance(hidden_states, torch.Tensor):
        raise TypeError(f"{block} expects `{name}`: a tensor {layout}, got {type(hidden_states).__name__}.")
    if hidden_states.dim() != 4:
        raise ValueError(
            f"{block} expects a feature map of shape {layout}, "
            f"got a {hidden_states.dim()}-D tensor of shape {tuple(hidden_states.shape)}."
        )
    check_float_input(name, hidden_states, layout)
    if hidden_states.shape[1] != channels:
        raise ValueError(f"{block} was built for {channels} channels, got a feature map with {hidden_states.shape[1]}.")
    height, width = hidden_states.shape[-2:]
    if height == 0 or width == 0:
        raise ValueError(f"{block} got an empty feature map ({height}x{width}); expected a positive height and width.")


def check_channels(**sizes) -> None:
    """Raise for the first size (a width, a stride, a count) that is not a positive integer; None means default."""
    for name, value in sizes.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"`{name}` must be a positive integer, got {value!r}.")
        check_positive(name, value)


def check_reduction(reduction: int, channels: int, name: str = "reduction") -> None:
    """A reduction ratio r of a `channels`-wide layer: 1 <= r <= channels (a larger r would leave no channel)."""
    check_positive(name, reduction)
    if reduction > channels:
        raise ValueError(
            f"`{name}` ({reduction}) is larger than the {channels} channels it divides; use at most {channels}."
        )


def reduced(channels: int, reduction: int) -> int:
    """Width of a bottleneck: channels // reduction, never less than one channel."""
    return max(1, channels // reduction)


# --- residual-block pieces ----------------------------------------------------------------------------------------


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        RoutedConv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    # the seed's block projects only when the width changes, so a strided block of constant width fails to add up
    if in_channels == out_channels and stride == 1:
        return nn.Identity()
    return nn.Sequential(RoutedConv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


class BasicResidualBlock(nn.Module):
    """ResNet basic block, relu(attention(bn(conv3x3(relu(bn(conv3x3(x)))))) + shortcut(x)).

    `attention` (any shape-preserving module, e.g. `SqueezeExcitation`) gates the residual branch before the sum.
    The shortcut is a strided 1x1 convolution whenever the width or the resolution changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, attention: nn.Module | None = None):
        super().__init__()
        check_channels(in_channels=in_channels, out_channels=out_channels, stride=stride)
        self.in_channels = in_channels
        self.conv1 = conv_bn_relu(in_channels, out_channels, stride=stride)
        self.conv2 = RoutedConv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.attention = attention or nn.Identity()
        self.shortcut = shortcut(in_channels, out_channels, stride)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.in_channels, type(self).__name__)
        residual = self.attention(self.bn2(self.conv2(self.conv1(hidden_states))))
        return F.relu(residual + self.shortcut(hidden_states))


class BottleneckResidualBlock(nn.Module):
    """ResNet bottleneck block: 1x1 down to out_channels / expansion, 3x3 (strided), 1x1 up, attention, + shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        attention: nn.Module | None = None,
        expansion: int = 4,
    ):
        super().__init__()
        check_channels(in_channels=in_channels, out_channels=out_channels, stride=stride, expansion=expansion)
        if out_channels % expansion:
            raise ValueError(f"out_channels must be a multiple of {expansion}, got {out_channels}.")
        width = out_channels // expansion
        self.in_channels = in_channels
        self.conv1 = conv_bn_relu(in_channels, width, kernel_size=1)
        self.conv2 = conv_bn_relu(width, width, stride=stride)
        self.conv3 = RoutedConv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.attention = attention or nn.Identity()
        self.shortcut = shortcut(in_channels, out_channels, stride)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.in_channels, type(self).__name__)
        residual = self.bn3(self.conv3(self.conv2(self.conv1(hidden_states))))
        return F.relu(self.attention(residual) + self.shortcut(hidden_states))


class ZeroInitConv2d(RoutedConv2d):
    """A convolution that starts at zero, so the residual branch it ends adds nothing until trained."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class QueryKeyConv2d(RoutedConv2d):
    """A convolution to queries or keys whose unscaled dot products start with about unit variance.

    The criss-cross, non-local and DANet position scores are unscaled products of two such projections. Kaiming
    initialisation (for the ReLU that follows a ResNet convolution, and none follows these) makes those products so
    large that the softmax starts almost one-hot, and a saturated softmax passes almost no gradient to the queries
    and keys. Weights drawn from N(0, std^2) with std = fan_in^(-1/2) * out_channels^(-1/4) make queries and keys of
    variance out_channels^(-1/2) from unit-variance inputs, and scores of variance 1.
    """

    @property
    def start_std(self) -> float:
        return (self.in_channels * self.kernel_size[0] * self.kernel_size[1]) ** -0.5 * self.out_channels**-0.25

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.start_std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class ZeroInitBatchNorm2d(nn.BatchNorm2d):
    """A batch norm whose scale starts at zero, so the residual branch it ends adds nothing until trained."""

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.zeros_(self.weight)


# --- attention maps -----------------------------------------------------------------------------------------------


class AttentionMap(nn.Module):
    """Passes attention probabilities (batch, heads, queries, keys) through unchanged.

    The blocks send their maps through one of these before using them, so `output_attentions=True` records (with
    transformers' output capturing) the very tensor the output is computed from: `retain_grad()` on it works.
    """

    def forward(self, probabilities: torch.Tensor) -> torch.Tensor:
        return probabilities


def attend_over_positions(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_implementation: str | None,
    output_attentions: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(Q K^T) V between all positions of two feature maps, through `dot_product_attention`.

    query (b, c, h, w), key (b, c, h', w'), value (b, c_v, h', w') -> (b, c_v, h, w), and with `output_attentions`
    the probabilities (b, 1, h * w, h' * w'). Unscaled, as in the non-local and DANet papers; one head. The scores
    are computed in float32 on every backend: unscaled products of float16 features overflow long before the
    features do. The output comes back in the inputs' dtype.
    """
    dtype, (height, width) = value.dtype, query.shape[-2:]
    query, key, value = (rearrange_positions(t).float() for t in (query, key, value))
    output, probabilities = dot_product_attention(
        module, query, key, value, None, attn_implementation, scaling=1.0, output_attentions=output_attentions
    )
    output = rearrange(output, "b (h w) 1 c -> b c h w", h=height, w=width).to(dtype)
    return output, probabilities


def rearrange_positions(feature_map: torch.Tensor) -> torch.Tensor:
    """(batch, channels, height, width) -> (batch, 1, height * width, channels): one head over row-major positions."""
    return rearrange(feature_map, "b c h w -> b 1 (h w) c")


# --- weights ------------------------------------------------------------------------------------------------------


@torch.no_grad()
def init_feature_map_weights(module: nn.Module, std: float) -> None:
    """`_init_weights` of every model built from the feature-map blocks (plain blocks keep their layers' own start).

    Convolutions get Kaiming (fan-out) initialisation as in ResNets, except the queries and keys, which get the
    smaller start of `QueryKeyConv2d`; linear layers N(0, std), batch norms 1 and 0 with fresh running statistics.
    The parts that make a block start as the identity (zero gammas, the STN's identity regressor, zero-initialised
    branch ends) are set by the module's own `init_start_values()`, which runs after the generic rule (transformers
    visits children before parents, and a module's own parameters here).
    """
    if isinstance(module, ZeroInitConv2d):
        init.zeros_(module.weight)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, QueryKeyConv2d):
        init.normal_(module.weight, std=module.start_std)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        (init.zeros_ if isinstance(module, ZeroInitBatchNorm2d) else init.ones_)(module.weight)
        init.zeros_(module.bias)
        init.zeros_(module.running_mean)
        init.ones_(module.running_var)
        init.zeros_(module.num_batches_tracked)
    init_start_values = getattr(module, "init_start_values", None)
    if callable(init_start_values):
        init_start_values()


# --- outputs ------------------------------------------------------------------------------------------------------

STANDARD_RECORDED_KEYS = ("hidden_states", "attentions")


def recorded_with_attentions(*keys: str):
    """Decorate a `capture_outputs` forward so the maps recorded under `keys` come with `output_attentions=True`.

    transformers records a key of `_can_record_outputs` when `output_<key>` is set; DANet's channel maps
    (`channel_attentions`) are attention maps too, so they follow `output_attentions` instead of a flag of their own.
    """

    def decorate(forward):
        @wraps(forward)
        def wrapper(self, *args, **kwargs):
            wanted = kwargs.get("output_attentions", self.config.output_attentions)
            for key in keys:
                kwargs.setdefault(f"output_{key}", wanted)
            return forward(self, *args, **kwargs)

        return wrapper

    return decorate


def drop_recording_flags(model: nn.Module, kwargs: dict) -> dict:
    """`kwargs` without the `output_<key>` flags of `recorded_with_attentions` (capture_outputs has read them)."""
    for key in model._can_record_outputs or {}:
        if key not in STANDARD_RECORDED_KEYS:
            kwargs.pop(f"output_{key}", None)
    return kwargs


# --- the block wrappers -------------------------------------------------------------------------------------------


class FeatureAttentionPreTrainedModel(HFAttentionPreTrainedModel):
    """Base of the block wrappers: `forward(hidden_states)` on (batch, channels, height, width) feature maps.

    Subclasses build `self.block` from their config. `output_hidden_states=True` gives the feature map before and
    after the block; blocks that compute attention maps record them with `AttentionMap` and declare "attentions" in
    `_can_record_outputs`. The blocks hold batch norms, which gradient checkpointing would update twice per step, so
    checkpointing is not offered.
    """

    main_input_name = "hidden_states"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False
    # a block without dot-product attention computes the same on every backend, so any can be set; the DANet and
    # non-local wrappers dispatch through attention.py (`_supports_attention_backend`). No flash: their scores are
    # computed in float32, which flash kernels do not take.
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = True
    _supports_attention_backend = False
    _can_compile_fullgraph = True
    _no_split_modules = []
    _can_record_outputs = {}
    output_class = BaseModelOutput

    def __init__(self, config):
        super().__init__(config)
        self.block = self.build_block(config)
        self.post_init()

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """A deterministic batch of two 8x8 feature maps (transformers' convention for example inputs)."""
        generator = torch.Generator().manual_seed(0)
        return {"hidden_states": torch.randn(2, self.config.num_channels, 8, 8, generator=generator)}

    def build_block(self, config) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must build its block from the config.")

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        init_feature_map_weights(module, self.config.initializer_range)

    def run_block(self, hidden_states: torch.Tensor, output_attentions: bool) -> torch.Tensor:
        """The block on the checked input; blocks with attention maps take `output_attentions`."""
        return self.block(hidden_states)

    @capture_outputs
    def forward(self, hidden_states: torch.Tensor | None = None, **kwargs: Unpack[TransformersKwargs]):
        r"""
        hidden_states (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The feature map to attend over, any height and width; the output has the block's output shape.
        """
        kwargs = resolve_forward_kwargs(self, drop_recording_flags(self, kwargs))
        if hidden_states is None:
            raise ValueError("hidden_states is required: a (batch, channels, height, width) feature map.")
        check_feature_map(hidden_states, self.config.num_channels, type(self).__name__)
        hidden_states = hidden_states.to(self.dtype)
        output = self.run_block(hidden_states, bool(kwargs["output_attentions"]))
        all_hidden_states = (hidden_states, output) if kwargs["output_hidden_states"] else None
        return self.output_class(last_hidden_state=output, hidden_states=all_hidden_states)


__all__ = [
    "AttentionMap",
    "BasicResidualBlock",
    "BottleneckResidualBlock",
    "FeatureAttentionPreTrainedModel",
    "ZeroInitBatchNorm2d",
    "ZeroInitConv2d",
    "attend_over_positions",
    "check_channels",
    "check_feature_map",
    "check_reduction",
    "conv_bn_relu",
    "drop_recording_flags",
    "init_feature_map_weights",
    "recorded_with_attentions",
    "reduced",
]
