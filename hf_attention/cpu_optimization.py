"""`optimize_for_cpu(model)`: faster CPU kernels for a model, on request, in the spirit of `ipex.optimize(model)`.

The models hold plain torch layers and run PyTorch's own kernels (DESIGN.md, "Plain layers, opt-in speed"). This
module swaps their layers' classes in place for subclasses that compute the same numbers on faster kernels, keeping
parameters, names and state dict, so `save_pretrained` writes exactly what it writes for the plain model; and it
switches attention from "sdpa" to `ATTENTION_IMPLEMENTATION`, registered with transformers' `AttentionInterface`,
which `config.json` does not record. No model file imports this module: a saved model never ships it.

Each route is taken only where it was measured to win (`benchmarks/bench_vit.py`, `benchmarks/bench_video.py`,
`benchmarks/bench_half_precision.py`, `benchmarks/bench_cpu_attention.py`):

- bfloat16 inference on a CPU whose oneDNN has bf16 kernels (AVX-512 bf16, AMX): oneDNN's inner product adds the
  bias and applies GELU, ReLU or SiLU in the matmul's epilogue, while aten's bf16 `addmm` first copies the bias into
  the output and the activation then makes a second pass over the widest tensor. On ViT-S/16's shapes that is ~15%
  per linear layer and ~20% for fc1 with its GELU (timed by hand; the benchmarks time whole models). oneDNN's op has
  no backward, so anything that needs a gradient keeps aten's path.
- bfloat16 or float16 on a CPU whose oneDNN has no kernels for that dtype (AVX2 only; float16 on AMD's Zen 4 and 5,
  which have bf16 kernels but no fp16 ones): aten emulates them, 5-7x slower than float32 in ViT-S/16's linear
  layers, 18x in its patch embedding (bf16, timed by hand on a 2-core AVX2 EPYC; fp16 linear layers 64-2048 wide
  on 512 rows 3-6x on a Zen 5). A bf16 (fp16) matmul multiplies bf16 numbers and sums the products in float32; both
  convert to float32 exactly, so a float32 kernel on the converted operands computes the same products and sums (in
  its own order), and its result is rounded to bf16 once, as the bf16 kernel rounds it (`on_float32_kernels`). Linear
  layers and convolutions take the route in their own forward; the matmuls that model code calls as functions (eager
  attention's among them) take it through a torch function mode, entered around the forward of the modules that call
  them while they compute in such a dtype (`_FunctionalMatmuls`, `FUNCTIONAL_MATMUL_MODULES`).
- CLIP's QuickGELU: x * sigmoid(1.702 x) is silu(1.702 x) / 1.702, one pass instead of three, with both scalings
  riding on the matmuls as `addmm`'s alpha.
- attention ("sdpa" only): bfloat16 runs eagerly where PyTorch's CPU flash kernel is slower, and float16 runs that
  kernel on float32 operands where the CPU has no fp16 kernels (`cpu_attention_forward`).

Only layers of exactly `nn.Linear`, `nn.Conv2d` and `layers.FeedForward` are swapped: subclasses (quantised layers),
PEFT's wrappers and tensor subclasses keep their own forward, and a fused route reads a layer's weights directly only
where nothing hooks, patches or wraps it. `torch.compile`, `torch.backends.mkldnn.flags(enabled=False)` and
`sdpa_kernel` choices are honoured.
"""

import functools

import torch
from torch import nn
from torch.nn.modules import module as module_hooks
from torch.overrides import TorchFunctionMode, _get_current_function_mode
from transformers import AttentionInterface, PreTrainedModel
from transformers.activations import ACT2CLS, GELUActivation, QuickGELUActivation, SiLUActivation
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from .attention import MultiHeadAttention, current_implementation
from .layers import FeedForward
from .modeling_additive import AdditiveAttention
from .modeling_glimpse import LocationPolicy
from .modeling_linformer import LinformerSelfAttention
from .modeling_nadaraya_watson import NadarayaWatsonAttention
from .modeling_spatial_transformer import SpatialTransformer
from .modeling_video import VideoTextTransformerModel

ATTENTION_IMPLEMENTATION = "hf_attention_cpu"
# the modules whose own code calls matmuls (or affine grids) in the model's dtype as functions, not through a layer:
# eager attention and attention pooling, Linformer's projection, the STN's grid, the glimpse policy's linear map,
# X-CLIP's prompt projection and logits. What other families call as functions runs in float32 already.
FUNCTIONAL_MATMUL_MODULES = (
    MultiHeadAttention,
    AdditiveAttention,
    NadarayaWatsonAttention,
    SpatialTransformer,
    LocationPolicy,
    VideoTextTransformerModel,
)
QUICK_GELU_SLOPE = 1.702


def _onednn_half_kernels() -> dict[torch.dtype, bool]:
    """Whether this CPU's oneDNN has kernels for each half-precision dtype (AVX-512 for bf16; AVX-512 fp16 or AMX fp16
    for fp16): aten's own half-precision matmuls run on them where it does, and emulate the dtype where it does not."""
    mkldnn, available = torch.ops.mkldnn, torch.backends.mkldnn.is_available()
    checks = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}
    return {
        dtype: available and hasattr(mkldnn, check) and bool(getattr(mkldnn, check)())
        for dtype, check in checks.items()
    }


def _bf16_dot_product_units() -> str | None:
    """Which units compute this CPU's bf16 dot products: "amx" (AMX tiles, on which PyTorch's flash kernel runs too),
    "avx512" (AVX-512 bf16 instructions only: bf16 matmuls outrun that kernel, which computes in float32 there), or
    None (emulated)."""
    cpu = torch.cpu
    if not (hasattr(cpu, "_is_avx512_bf16_supported") and hasattr(cpu, "_is_amx_tile_supported")):
        return None
    if cpu._is_amx_tile_supported():
        return "amx"
    return "avx512" if cpu._is_avx512_bf16_supported() else None


# read once, at import: constants to torch.compile, and no capability query per layer. Tests set them.
CPU_HAS_HALF_KERNELS = _onednn_half_kernels()
HAS_ONEDNN_BF16_LINEAR = CPU_HAS_HALF_KERNELS[torch.bfloat16] and hasattr(torch.ops.mkldnn, "_linear_pointwise")
CPU_BF16_DOT_PRODUCT_UNITS = _bf16_dot_product_units() if CPU_HAS_HALF_KERNELS[torch.bfloat16] else None
# Converting an fp16 operand to float32 costs about 16 of aten's emulated fp16 multiply-adds per element where the
# weights stream from memory (stacks of 24 linear layers 256-2048 wide, Zen 5, timed by hand): the float32 kernels
# break even at a linear layer's 16-18 rows, win from 24 (1.1-2.5x; 2.1-3.1x at 64), and lose below (0.6x at 8 rows;
# CLIP's 12-layer text encoder on 10 tokens, 0.7x). A layer of 16 outputs or fewer never takes the route. bf16 on
# AVX2, not measured, gets the same floor.
MIN_MULTIPLY_ADDS_PER_ELEMENT = 16
# The most scores per layer (64 MiB in bfloat16) for which sdpa may run eagerly on the CPU: flash needs no buffer
EAGER_SCORES_LIMIT = 2**25
# With AMX, eager attention wins only training, and there only where its scores are few: up to 320 keys and 2^24
# scores a layer (32 MiB in bfloat16) it ran forward + backward 1.7-4.9x faster than the flash kernel, its query
# gradients' largest error from float32 1.0-1.7x the kernel's (`benchmarks/results/cpu_attention_bf16_amx_training
# .json`). The bounds are conservative: beyond them that run won too (2.0x at 401 keys, 1.6x at 28M scores) but lost
# at 1,024 and 2,048 keys (0.61x), and earlier runs by hand lost at 401 keys and 15M scores (0.96x) and at 320 keys
# and 28M scores (0.85x).
AMX_EAGER_TRAINING_MAX_KEYS = 320
AMX_EAGER_TRAINING_MAX_SCORES = 2**24


def optimize_for_cpu(model: nn.Module) -> nn.Module:
    """`model`, with its layers swapped in place for the CPU kernels of this module, "sdpa" attention switched to
    `ATTENTION_IMPLEMENTATION`, and forward hooks on the modules that call matmuls as functions, which route them in
    an emulated half dtype. Call
    it before or after `.to(dtype)`: the routes are chosen per call, from the tensors. Calling it again changes
    nothing; `set_attn_implementation("sdpa")` afterwards switches back to PyTorch's SDPA.

    What `save_pretrained` writes does not change: same files, keys, tensors and config.json."""
    for module in model.modules():
        swapped = _SWAPS.get(type(module))
        if swapped is not None:
            module.__class__ = swapped  # the instance keeps its parameters, buffers, hooks and names
    _switch_sdpa_attention(model)
    for module in model.modules():
        if isinstance(module, FUNCTIONAL_MATMUL_MODULES) and _enter_functional_matmuls not in _pre_hooks(module):
            module.register_forward_pre_hook(_enter_functional_matmuls, with_kwargs=True)
            module.register_forward_hook(_leave_functional_matmuls, always_call=True)
    return model


def _pre_hooks(module: nn.Module) -> list:
    return list(module._forward_pre_hooks.values())


def _switch_sdpa_attention(model: nn.Module) -> None:
    """Every attention that runs "sdpa" runs `ATTENTION_IMPLEMENTATION` instead; other backends (eager, flash, flex,
    a user's) are the user's choice and stay. Configs' `_attn_implementation` is not written to config.json."""
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            module.set_attn_implementation(_sdpa_replaced(module.config))
        elif getattr(module, "config", None) is None and getattr(module, "attn_implementation", None) == "sdpa":
            module.attn_implementation = ATTENTION_IMPLEMENTATION  # a block built without a config


def _sdpa_replaced(config) -> dict:
    """`set_attn_implementation`'s nested dict for `config` and its sub-configs, with "sdpa" replaced."""
    own = config._attn_implementation
    plan = {"": ATTENTION_IMPLEMENTATION if own == "sdpa" else own}
    for key in config.sub_configs:
        if getattr(config, key, None) is not None:
            plan[key] = _sdpa_replaced(getattr(config, key))
    return plan


# --- half precision on float32 kernels ---------------------------------------------------------------------------


def float32_compute_dtype(*tensors: torch.Tensor | None, multiply_adds: int | None = None) -> torch.dtype | None:
    """The half-precision dtype a CPU matmul, convolution or attention kernel of `tensors` computes in (theirs, or
    autocast's), where this CPU's oneDNN has no kernels for it and, for a matmul, its `multiply_adds` repay converting
    the tensors (`MIN_MULTIPLY_ADDS_PER_ELEMENT`); None wherever the kernel should run as it is. The first tensor is
    the input; the dtype is checked first, as every float32 call of every layer pays for this."""
    autocast = torch.is_autocast_enabled("cpu")
    dtype = torch.get_autocast_dtype("cpu") if autocast else tensors[0].dtype
    if CPU_HAS_HALF_KERNELS.get(dtype, True):  # float32, or a half dtype this CPU has kernels for
        return None
    tensors = [tensor for tensor in tensors if tensor is not None]
    if any(tensor.device.type != "cpu" or type(tensor) not in (torch.Tensor, nn.Parameter) for tensor in tensors):
        return None  # other devices, meta, and tensor subclasses (quantised, distributed) keep their own kernels
    if multiply_adds is not None and multiply_adds < MIN_MULTIPLY_ADDS_PER_ELEMENT * sum(map(torch.numel, tensors)):
        return None
    dtypes = {tensor.dtype for tensor in tensors}
    if autocast:  # autocast casts every floating tensor but float64 ones
        return dtype if torch.float64 not in dtypes else None
    return dtype if dtypes == {dtype} else None  # mixed dtypes: aten's error names them


def on_float32_kernels(function, dtype: torch.dtype, *operands: torch.Tensor | None) -> torch.Tensor:
    """function(*operands) with every operand rounded to `dtype` (a no-op on `dtype` tensors, autocast's cast on
    others) and converted to float32, which is exact; the float32 result is rounded to `dtype` once.

    Where a gradient will flow, autograd keeps the `dtype` operands for the backward, not their float32 copies, and
    converts them again there: bit for bit the same gradients, and a ViT-S/16 forward (batch 8, fp16 weights) leaves
    308 MiB for its backward instead of 533, against aten's 224, whose GELU inputs and attention outputs are fp16
    (`benchmarks/bench_half_precision_training.py`)."""
    with torch.autocast("cpu", enabled=False):
        rounded = [None if operand is None else operand.to(dtype) for operand in operands]
        upcast = [None if operand is None else operand.float() for operand in rounded]
        if not _keeps_tensors_for_backward(upcast):
            return function(*upcast).to(dtype)
        with _saved_as_rounded(upcast, rounded):
            return function(*upcast).to(dtype)


def routed(function, *operands: torch.Tensor | None, multiply_adds: int | None = None, **options) -> torch.Tensor:
    """function(*operands, **options), on float32 kernels for half precision on a CPU that has none for it: tensors
    are passed as `operands`, everything else by keyword. A matmul passes its `multiply_adds`, and keeps aten's kernel
    where they are too few to repay converting its operands. Convolutions pass none: their emulation is 2-100x slower
    from 8 x 8 maps on, and where it is not, the route costs a few microseconds."""
    dtype = float32_compute_dtype(*operands, multiply_adds=multiply_adds)
    if dtype is None:
        return function(*operands, **options)
    return on_float32_kernels(functools.partial(function, **options), dtype, *operands)


class _FunctionalMatmuls(TorchFunctionMode):
    """The matmuls that model code calls as functions (eager attention, attention pooling, Linformer's projection,
    X-CLIP's prompt projection, a policy's linear map, affine sampling grids), on `routed`'s float32 kernels: layers
    can be swapped, function calls cannot. Affine grids are then more exact than aten's fp16 ones, which round the
    base grid before the product. The mode sees every torch call, at a few microseconds each: entered around a whole
    model's forward, it made the small models of the catalogue 1.2-2.3x slower in fp16, so it is entered only around
    the forward of `FUNCTIONAL_MATMUL_MODULES`, only while they compute in an emulated half dtype, and not around an
    attention whose kernel is the registered one (`cpu_attention_forward` routes it already). Sub-millisecond models
    whose attention is all functional (additive, Nadaraya-Watson, the glimpse policy) still pay 0.1-0.4 ms a forward
    (`benchmarks/results/half_precision_cpu.json`)."""

    def __init__(self, owner: int):
        super().__init__()
        self.owner = owner  # id() of the module whose forward entered it

    def __torch_function__(self, func, types, args=(), kwargs=None):
        route = _FUNCTIONAL_ROUTES.get(func)  # one lookup for every other torch call: they run as they are
        return func(*args, **(kwargs or {})) if route is None else route(func, *args, **(kwargs or {}))


def _routed_matmul(func, first: torch.Tensor, second: torch.Tensor, **kwargs) -> torch.Tensor:
    if kwargs:  # out=: aten's own
        return func(first, second, **kwargs)
    rows = first.shape[-2] if first.dim() > 1 else 1
    columns = second.shape[-1] if second.dim() > 1 else 1
    # exact where at most one operand is broadcast over the other's batch; fewer where both are: towards aten's kernel
    multiply_adds = max(first.numel() * columns, second.numel() * rows)
    return routed(func, first, second, multiply_adds=multiply_adds)


def _routed_affine_grid(func, theta: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return routed(func, theta, **dict(zip(("size", "align_corners"), args, strict=False)), **kwargs)


_FUNCTIONAL_ROUTES = {
    **dict.fromkeys((torch.matmul, torch.Tensor.matmul, torch.bmm, torch.Tensor.bmm), _routed_matmul),
    nn.functional.linear: lambda func, *args, **kwargs: linear(*args, **kwargs),
    nn.functional.affine_grid: _routed_affine_grid,
}


def _compute_dtype(args: tuple, kwargs: dict) -> torch.dtype | None:
    """autocast's dtype, or that of a forward's first floating-point input."""
    if torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    tensors = (value for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor))
    return next((tensor.dtype for tensor in tensors if tensor.is_floating_point()), None)


def _enter_functional_matmuls(module: nn.Module, args, kwargs) -> None:
    emulated = not CPU_HAS_HALF_KERNELS.get(_compute_dtype(args, kwargs), True)
    if not emulated or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return  # float32, a half dtype with kernels, or a graph being traced: no mode, no cost
    if isinstance(module, MultiHeadAttention) and _runs_registered_kernel(module, kwargs):
        return
    if not isinstance(_get_current_function_mode(), _FunctionalMatmuls):  # an enclosing module's mode covers it
        _FunctionalMatmuls(id(module)).__enter__()


def _runs_registered_kernel(attention: MultiHeadAttention, kwargs: dict) -> bool:
    """Whether all the attention's matmuls are its layers' and `cpu_attention_forward`'s: not eager attention's, nor
    Linformer's projection along the sequence."""
    return (
        not isinstance(attention, LinformerSelfAttention)
        and current_implementation(attention) == ATTENTION_IMPLEMENTATION
        and not kwargs.get("output_attentions")
    )


def _leave_functional_matmuls(module: nn.Module, args, output) -> None:
    """Leaves the mode this module's forward entered, also where the forward raised (`always_call`)."""
    if torch.compiler.is_compiling():
        return
    mode = _get_current_function_mode()
    if isinstance(mode, _FunctionalMatmuls) and mode.owner == id(module):
        mode.__exit__(None, None, None)


def _keeps_tensors_for_backward(tensors: list[torch.Tensor | None]) -> bool:
    """Whether autograd will save tensors here, where saved-tensor hooks are allowed and none of someone else's
    (checkpointing's, offloading's) are active: theirs then decide what is kept."""
    return (
        torch.is_grad_enabled()
        and any(tensor is not None and tensor.requires_grad for tensor in tensors)
        and not torch.compiler.is_compiling()
        and torch._C._autograd._saved_tensors_hooks_is_enabled()
        and torch._C._autograd._top_saved_tensors_default_hooks(False) is None
    )


def _saved_as_rounded(upcast: list[torch.Tensor | None], rounded: list[torch.Tensor | None]):
    """Saved-tensor hooks that keep a float32 operand (or a view of it, such as a linear's transposed weight) as its
    half-precision original and rebuild it, bit for bit, when the backward asks for it."""
    originals = {
        float32.untyped_storage().data_ptr(): half
        for float32, half in zip(upcast, rounded, strict=True)
        if float32 is not None and float32.numel()  # an empty tensor's storage has no address of its own
    }

    def pack(tensor: torch.Tensor):
        half = originals.get(tensor.untyped_storage().data_ptr()) if tensor.dtype == torch.float32 else None
        if half is None:
            return tensor
        return half, half._version, tensor.size(), tensor.stride(), tensor.storage_offset()

    def unpack(packed):
        if isinstance(packed, torch.Tensor):
            return packed
        half, version, size, stride, offset = packed
        if half._version != version:  # autograd's own check, which a float32 copy made needless
            raise RuntimeError(
                f"one of the variables needed for gradient computation has been modified by an inplace operation: "
                f"a {half.dtype} tensor of shape {tuple(half.shape)}, multiplied on float32 kernels "
                f"(cpu_optimization), is at version {half._version}; expected version {version} instead."
            )
        return half.float().as_strided(size, stride, offset)  # `.float()` lays the copy out as it did in forward

    return torch.autograd.graph.saved_tensors_hooks(pack, unpack)


# --- linear layers, convolutions, feed-forwards ------------------------------------------------------------------


def linear(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, activation: nn.Module | None = None
) -> torch.Tensor:
    """activation(F.linear(input, weight, bias)) on the fastest kernel that computes its numbers: oneDNN's, with the
    bias and activation in the epilogue, for bf16 inference; float32 kernels for an emulated half dtype, where the
    activation runs before the one rounding. `activation` must be unwrapped (`_is_unwrapped`): it is not called as a
    module where a kernel fuses it."""
    dtype = float32_compute_dtype(input, weight, bias, multiply_adds=input.numel() * weight.shape[0])
    if dtype is not None:
        function = functools.partial(_linear_then_activation, activation=activation)
        return on_float32_kernels(function, dtype, input, weight, bias)
    if not _onednn_applies(input, weight, bias):
        return _linear_then_activation(input, weight, bias, activation)
    epilogue = _onednn_epilogue(activation)
    output = torch.ops.mkldnn._linear_pointwise(input, weight, bias, *(epilogue or ("none", [], "")))
    return output if epilogue is not None else activation(output)  # an activation oneDNN has not: after the bias


class CPULinear(nn.Linear):
    """nn.Linear (same parameters, names and state dict; hooks and wrappers run as for one) computing on `linear`'s
    kernels."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return linear(input, self.weight, self.bias)


class CPUConv2d(nn.Conv2d):
    """nn.Conv2d (same parameters, names and state dict) whose half-precision convolution runs on float32 kernels
    where the CPU has none for its dtype: there aten emulates it, 18-25x slower than float32 (timed by hand on AVX2
    for bf16, on AVX-512-bf16 Zen 5 for fp16). Its forward, hooks and wrappers run as nn.Conv2d's."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return routed(super()._conv_forward, input, weight, bias)


class CPUFeedForward(FeedForward):
    """FeedForward (same parameters, names and state dict) with the activation fused into fc1 where a kernel allows
    it (`linear`), and QuickGELU as one silu. Layers that are wrapped or hooked run as modules, as in FeedForward."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        fc1, activation, fc2 = self.fc1, self.activation_fn, self.fc2
        if not (_is_unwrapped_linear(fc1) and _is_unwrapped(activation)):
            return super().forward(hidden_states)
        if _takes_quick_gelu_fusion(hidden_states, fc1, activation, self.dropout, fc2):
            return _quick_gelu_feed_forward(hidden_states, fc1, self.dropout, fc2)
        return fc2(self.dropout(linear(hidden_states, fc1.weight, fc1.bias, activation)))


_SWAPS = {nn.Linear: CPULinear, nn.Conv2d: CPUConv2d, FeedForward: CPUFeedForward}


def _linear_then_activation(input, weight, bias, activation: nn.Module | None) -> torch.Tensor:
    output = nn.functional.linear(input, weight, bias)
    return output if activation is None else activation(output)


def _takes_quick_gelu_fusion(hidden_states, fc1, activation, dropout, fc2) -> bool:
    return (
        type(activation) is QuickGELUActivation
        and _is_unwrapped(dropout)  # it sees silu(1.702 x), which is 1.702 QuickGELU(x): dropout commutes with that
        and _is_unwrapped_linear(fc2)
        and fc1.bias is not None
        and fc2.bias is not None
        and fc1.out_features == fc2.in_features
        # an emulated half dtype takes `linear`'s float32 route instead
        and float32_compute_dtype(hidden_states, fc1.weight, fc1.bias) is None
    )


def _quick_gelu_feed_forward(hidden_states: torch.Tensor, fc1: nn.Linear, dropout, fc2: nn.Linear) -> torch.Tensor:
    if _onednn_applies(hidden_states, fc1.weight, fc1.bias, fc2.weight, fc2.bias):
        # oneDNN's swish has no slope: silu(W (1.702 x) + 1.702 b) is 1.702 * QuickGELU(W x + b). The scaled input
        # and the bias-free output are rounded to bf16 once more each, so the error is ~1.5x the unfused one's.
        scaled = torch.ops.mkldnn._linear_pointwise(
            hidden_states * QUICK_GELU_SLOPE, fc1.weight, fc1.bias * QUICK_GELU_SLOPE, "swish", [], ""
        )
        output = torch.ops.mkldnn._linear_pointwise(dropout(scaled), fc2.weight, None, "none", [], "")
        return torch.add(fc2.bias, output, alpha=1 / QUICK_GELU_SLOPE)
    rows = hidden_states.reshape(-1, hidden_states.shape[-1])
    hidden = torch.addmm(fc1.bias * QUICK_GELU_SLOPE, rows, fc1.weight.t(), alpha=QUICK_GELU_SLOPE)
    hidden = dropout(nn.functional.silu(hidden))
    output = torch.addmm(fc2.bias, hidden, fc2.weight.t(), alpha=1 / QUICK_GELU_SLOPE)
    return output.view(*hidden_states.shape[:-1], fc2.out_features)


def _onednn_epilogue(activation: nn.Module | None) -> tuple[str, list, str] | None:
    """oneDNN's (attribute, scalars, algorithm) for `activation`, or None where it has none exact (aten runs it)."""
    if activation is None:
        return "none", [], ""
    kind = type(activation)
    if kind is GELUActivation and activation.act is nn.functional.gelu:
        return "gelu", [], "none"
    if kind is ACT2CLS["gelu_pytorch_tanh"] and getattr(activation.act, "keywords", None) == {"approximate": "tanh"}:
        return "gelu", [], "tanh"
    if kind is nn.GELU:
        return "gelu", [], activation.approximate
    if kind is nn.ReLU:
        return "relu", [], ""
    if kind in (nn.SiLU, SiLUActivation):
        return "swish", [], ""
    return None


def _onednn_applies(input: torch.Tensor, *parameters: torch.Tensor | None) -> bool:
    """bfloat16 inference on a CPU with oneDNN bf16 kernels, on plain CPU bf16 tensors (no meta or offloaded weights,
    no tensor subclasses), of an input whose width fits the first weight (else aten's error names the shapes)."""
    if not HAS_ONEDNN_BF16_LINEAR or input.dtype != torch.bfloat16 or input.device.type != "cpu":
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False  # inductor picks its own kernels; a jit trace records aten's ops, which export and ONNX know
    parameters = [parameter for parameter in parameters if parameter is not None]
    return (
        input.dim() > 0
        and input.shape[-1] == parameters[0].shape[-1]
        and not (torch.is_grad_enabled() and any(tensor.requires_grad for tensor in (input, *parameters)))
        and torch.backends.mkldnn.enabled  # torch.backends.mkldnn.flags(enabled=False) is honoured
        and all(
            type(parameter) in (torch.Tensor, nn.Parameter)
            and parameter.dtype == torch.bfloat16
            and parameter.device.type == "cpu"
            for parameter in parameters
        )
    )


def _is_unwrapped_linear(module: nn.Module) -> bool:
    """A plain nn.Linear or CPULinear whose own forward would run: its weights may be read directly."""
    return type(module) in (nn.Linear, CPULinear) and type(module).forward in _LINEAR_FORWARDS and _is_unwrapped(module)


_LINEAR_FORWARDS = (nn.Linear.forward, CPULinear.forward)


def _is_unwrapped(module: nn.Module) -> bool:
    """No forward or backward hooks on it or on every module (register_module_forward_hook and kin), and no forward
    of its own (accelerate's offloading replaces it)."""
    hooks = module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks
    global_hooks = (
        module_hooks._global_forward_hooks
        or module_hooks._global_forward_pre_hooks
        or module_hooks._global_backward_hooks
        or module_hooks._global_backward_pre_hooks
    )
    return not (hooks or global_hooks) and "forward" not in vars(module)


# --- attention -----------------------------------------------------------------------------------------------------


def cpu_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' "sdpa" (same arguments and output), on the faster CPU route where there is one: eagerly in
    bfloat16 where PyTorch's flash kernel is slower (`_eager_outruns_cpu_sdpa`), and the flash kernel on float32
    operands for float16 on a CPU without oneDNN fp16 kernels: it computes in float32 anyway, and its float16 call ran
    at half the speed of a float32 call on the same numbers, no closer to the exact result (ViT-S/16 shapes, timed by
    hand: 8-10 against 4-5 ms on an AVX-512 EPYC, 22 against 11 ms on AVX2)."""
    is_causal = getattr(module, "is_causal", True) if is_causal is None else is_causal  # as transformers' sdpa reads it
    if _eager_outruns_cpu_sdpa(query, key, value):
        causal = is_causal and attention_mask is None and query.shape[-2] > 1
        return _eager_attention(query, key, value, attention_mask, scaling, dropout, causal), None

    def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        options = dict(dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **options)[0]

    if float32_compute_dtype(query, key, value) == torch.float16:
        return on_float32_kernels(sdpa, torch.float16, query, key, value), None
    return sdpa(query, key, value), None


AttentionInterface.register(ATTENTION_IMPLEMENTATION, cpu_attention_forward)


def _eager_outruns_cpu_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> bool:
    """Whether "sdpa" should run as eager attention: bfloat16 on a CPU where PyTorch's flash kernel is slower.

    With AVX-512 bf16 but no AMX, that kernel computes in float32, at the float32 matmul rate (80-160 GFLOP/s on 2
    cores, against 700-900 for a bf16 matmul), while eager attention's bf16 matmuls and float32 softmax ran 1.6-2.4x
    faster from 50 to 1,024 tokens (`benchmarks/bench_cpu_attention.py`). With AMX the kernel's forward runs on the
    tiles and wins inference at every length (eager ran at 0.33-0.96x of its rate from 50 to 2,048 tokens,
    `benchmarks/results/cpu_attention_bf16_amx.json`), but its backward is slow at short lengths, so training takes
    eager attention within `AMX_EAGER_TRAINING_MAX_KEYS` and `AMX_EAGER_TRAINING_MAX_SCORES` (a reentrant
    checkpointed forward, run without gradients, keeps the kernel; its recompute runs eagerly). The price is what
    transformers' eager path pays: the scores are rounded to bf16 before the softmax, and training keeps the
    probabilities for the backward pass (bounded by `EAGER_SCORES_LIMIT` per layer, with AMX by
    `AMX_EAGER_TRAINING_MAX_SCORES`). A forward that builds a graph (weights that need gradients, outside
    `torch.no_grad`) counts as training, eval mode or not. `sdpa_kernel` calls that leave out the math backend keep
    PyTorch's kernels, as does `torch.compile`.
    """
    if query.device.type != "cpu" or query.dtype != torch.bfloat16:
        return False
    num_scores = query.shape[:-1].numel() * key.shape[-2]
    if (
        torch.compiler.is_compiling()
        or not torch.backends.cuda.math_sdp_enabled()  # the flag sdpa_kernel sets, for every device
        or num_scores > EAGER_SCORES_LIMIT
    ):
        return False
    if CPU_BF16_DOT_PRODUCT_UNITS == "avx512":
        return True
    return (
        CPU_BF16_DOT_PRODUCT_UNITS == "amx"
        and torch.is_grad_enabled()
        and any(tensor.requires_grad for tensor in (query, key, value))
        and key.shape[-2] <= AMX_EAGER_TRAINING_MAX_KEYS
        and num_scores <= AMX_EAGER_TRAINING_MAX_SCORES
    )


def _eager_attention(query, key, value, mask, scaling, dropout: float, is_causal: bool) -> torch.Tensor:
    """softmax(Q K^T * scaling + mask) V in the inputs' dtype, as (batch, query_length, heads, head_dim); `mask` is
    sdpa's (bool, True keeps, or additive)."""
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    # scaling the queries, not the scores: a pass over (length x head_dim), not (length x length), same roundings.
    # Keys split from a projection are strided: a plain copy costs a third of the transposing one matmul makes
    scores = torch.matmul(query * scaling, key.contiguous().transpose(-1, -2))
    if is_causal:
        mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
    elif mask is not None:
        scores = scores.float() + mask
    probs = nn.functional.dropout(_softmax_of_scores(scores, query.dtype), p=dropout, training=dropout > 0)
    return torch.matmul(probs, value).transpose(1, 2).contiguous()


def _softmax_of_scores(scores: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """softmax over keys, computed in float32 and returned in `dtype`.

    The CPU's bfloat16 softmax kernel computes in float32, so its result is one rounding of the float32 softmax (it
    differed from `softmax(dtype=float32).to(dtype)` in 1 entry of 100,000, by one rounding, no less accurate, by
    hand). Where no gradient flows, the kernel overwrites the scores: a fresh (length x length) buffer per layer costs
    page faults that took as long as the softmax itself (timed by hand; glibc returns large blocks to the system). In
    bfloat16 training it runs forward and backward on the bf16 kernel: that skips four dtype copies of the scores and
    keeps one bf16 copy of the probabilities for the backward instead of a float32 one too, 1.9x faster for (48, 197,
    197) scores, its gradients' mean error 1.4x the float32 route's (by hand).
    """
    if scores.dtype == dtype and not (torch.is_grad_enabled() and scores.requires_grad):
        return torch.softmax(scores, dim=-1, out=scores)
    if scores.dtype == dtype == torch.bfloat16:
        return torch.softmax(scores, dim=-1)
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(dtype)


__all__ = [
    "ATTENTION_IMPLEMENTATION",
    "CPUConv2d",
    "CPUFeedForward",
    "CPULinear",
    "cpu_attention_forward",
    "float32_compute_dtype",
    "linear",
    "on_float32_kernels",
    "optimize_for_cpu",
    "routed",
]
