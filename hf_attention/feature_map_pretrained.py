"""The base `PreTrainedModel` of the feature-map attention families, their weight initialisation and output
recording. Each family file (`modeling_squeeze_excitation.py`, ...) imports this one, so a pushed block ships its own
code, this file and the core it needs, nothing of the other families.

A block module sets its own start (`init_start_values()`) at construction, so it starts right when used on its own,
and `_init_weights` calls it again after the generic rule.
"""

from functools import wraps

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.output_capturing import capture_outputs

from .checks import check_feature_map
from .pretrained import HFAttentionPreTrainedModel, parameter_dtype, resolve_forward_kwargs

# --- weights ------------------------------------------------------------------------------------------------------


@torch.no_grad()
def init_feature_map_weights(module: nn.Module, std: float) -> None:
    """`_init_weights` of every model built from the feature-map blocks.

    Convolutions get Kaiming (fan-out) initialisation as in ResNets, linear layers N(0, std), batch norms 1 and 0
    with fresh running statistics. What makes a block start as the identity or start soft (zero gammas and branch
    ends, the STN's identity regressor, the smaller start of queries and keys) is set by the module's own
    `init_start_values()`, which runs after the generic rule (transformers visits children before parents), so it
    overrides it.
    """
    if isinstance(module, nn.Conv2d):
        init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        init.ones_(module.weight)
        init.zeros_(module.bias)
        init.zeros_(module.running_mean)
        init.ones_(module.running_var)
        init.zeros_(module.num_batches_tracked)
    init_start_values = getattr(module, "init_start_values", None)
    if callable(init_start_values):
        init_start_values()


@torch.no_grad()
def init_query_key_(conv: nn.Conv2d) -> None:
    """Start a convolution to queries or keys whose unscaled dot products should have about unit variance.

    The criss-cross, non-local and DANet position scores are unscaled products of two such projections. Kaiming
    initialisation (for the ReLU that follows a ResNet convolution, and none follows these) makes those products so
    large that the softmax starts almost one-hot, and a saturated softmax passes almost no gradient to the queries
    and keys. Weights drawn from N(0, std^2) with std = fan_in^(-1/2) * out_channels^(-1/4) make queries and keys of
    variance out_channels^(-1/2) from unit-variance inputs, and scores of variance 1.
    """
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    init.normal_(conv.weight, std=fan_in**-0.5 * conv.out_channels**-0.25)
    if conv.bias is not None:
        init.zeros_(conv.bias)


@torch.no_grad()
def init_zeros_(module: nn.Module) -> None:
    """Zero a layer's weight and bias: a residual branch it ends adds nothing until trained."""
    init.zeros_(module.weight)
    if getattr(module, "bias", None) is not None:
        init.zeros_(module.bias)


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
        hidden_states = hidden_states.to(parameter_dtype(self, hidden_states.dtype))
        output = self.run_block(hidden_states, bool(kwargs["output_attentions"]))
        all_hidden_states = (hidden_states, output) if kwargs["output_hidden_states"] else None
        return self.output_class(last_hidden_state=output, hidden_states=all_hidden_states)


__all__ = [
    "FeatureAttentionPreTrainedModel",
    "drop_recording_flags",
    "init_feature_map_weights",
    "init_query_key_",
    "init_zeros_",
    "recorded_with_attentions",
]
