"""Linear layers and convolutions on the fastest kernel that computes the same numbers: fused with the activation
that follows them, or on float32 kernels where the CPU has none for their half-precision dtype.

Each route is taken only where it was measured to win (`benchmarks/bench_vit.py`, `benchmarks/bench_video.py`,
`benchmarks/bench_half_precision.py`):

- bfloat16 inference on a CPU whose oneDNN has bf16 kernels (AVX-512 bf16, AMX): oneDNN's inner product adds the
  bias and applies GELU, ReLU or SiLU in the matmul's epilogue, while aten's bf16 `addmm` first copies the bias into
  the output and the activation then makes a second pass over the widest tensor. On ViT-S/16's shapes that is ~15%
  per linear layer and ~20% for fc1 with its GELU (timed by hand; the benchmarks time whole models). oneDNN's op has
  no backward, so anything that needs a gradient keeps aten's path (a reentrant checkpointed forward runs without
  one: it may take oneDNN, its recompute aten).
- bfloat16 or float16 on a CPU whose oneDNN has no kernels for that dtype (AVX2 only; float16 on AMD's Zen 4 and 5,
  which have bf16 kernels but no fp16 ones): aten emulates them, 5-7x slower than float32 in ViT-S/16's linear
  layers, 18x in its patch embedding and 8-12x in eager attention's matmuls (bf16, timed by hand on a 2-core AVX2
  EPYC; fp16 linear layers 64-2048 wide on 512 rows 3-6x on a Zen 5). A
  bf16 (fp16) matmul multiplies bf16 numbers and sums the products in float32; both convert to float32 exactly, so a
  float32 kernel on the converted operands computes the same products and sums (in its own order), and its result is
  rounded to bf16 once, as the bf16 kernel rounds it. Under autocast the operands are first rounded to autocast's
  dtype, as autocast would. The activation runs on the float32 result before that rounding, as in oneDNN's epilogue.
  Autograd goes through the conversions, so gradients flow; it keeps the half-precision operands for the backward,
  not their float32 copies (`on_float32_kernels`). `RoutedLinear` and `RoutedConv2d`, every family's linear layers
  and convolutions, take this route inside their own forward; `routed` takes it for any other matmul-like call. A
  matmul whose multiply-adds are too few to repay converting its operands keeps aten's kernel
  (`MIN_MULTIPLY_ADDS_PER_ELEMENT`). Affine sampling grids take the route too, and are then more exact than aten's
  fp16 ones, which round the base grid before the product.
- CLIP's QuickGELU anywhere else: x * sigmoid(1.702 x) is silu(1.702 x) / 1.702, one pass instead of three, with both
  scalings riding on the matmuls as `addmm`'s alpha.

The functions read the layers' weights directly, so they take a route only for plain `nn.Linear`s that nothing
wraps: an adapter (PEFT), a quantised layer, a forward or backward hook, a patched class or accelerate's offloading
sends the input through the layers' own forward.
"""

import functools

import torch
from torch import nn
from torch.nn.modules import module as module_hooks
from transformers.activations import ACT2FN, GELUActivation, QuickGELUActivation, SiLUActivation

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
    """Which units compute this CPU's bf16 dot products: "amx" (AMX tiles, on which PyTorch's flash kernel runs
    too), "avx512" (AVX-512 bf16 instructions only: bf16 matmuls outrun that kernel, which computes in float32 there),
    or None (emulated). `attention._eager_outruns_cpu_sdpa` picks the attention kernel by it."""
    cpu = torch.cpu
    if not (hasattr(cpu, "_is_avx512_bf16_supported") and hasattr(cpu, "_is_amx_tile_supported")):
        return None
    if cpu._is_amx_tile_supported():
        return "amx"
    return "avx512" if cpu._is_avx512_bf16_supported() else None


# read once, at import: constants to torch.compile, and no capability query per layer
CPU_HAS_HALF_KERNELS = _onednn_half_kernels()
HAS_ONEDNN_BF16_LINEAR = CPU_HAS_HALF_KERNELS[torch.bfloat16] and hasattr(torch.ops.mkldnn, "_linear_pointwise")
CPU_BF16_DOT_PRODUCT_UNITS = _bf16_dot_product_units() if CPU_HAS_HALF_KERNELS[torch.bfloat16] else None
# Converting an fp16 operand to float32 costs about 16 of aten's emulated fp16 multiply-adds per element where the
# weights stream from memory (stacks of 24 linear layers 256-2048 wide, Zen 5, timed by hand): the float32 kernels
# break even at a linear layer's 16-18 rows, win from 24 (1.1-2.5x; 2.1-3.1x at 64), and lose below (0.6x at 8 rows;
# CLIP's 12-layer text encoder on 10 tokens, 0.7x). A layer of 16 outputs or fewer never takes the route. bf16 on
# AVX2, not measured, gets the same floor.
MIN_MULTIPLY_ADDS_PER_ELEMENT = 16


def cpu_bf16_dot_product_units() -> str | None:
    """`CPU_BF16_DOT_PRODUCT_UNITS`, read at call time, so that a test can set it."""
    return CPU_BF16_DOT_PRODUCT_UNITS


def apply_linear(hidden_states: torch.Tensor, layer: nn.Linear, activation: nn.Module | None = None) -> torch.Tensor:
    """activation(layer(hidden_states)): in one oneDNN kernel for bfloat16 inference on a CPU that has one, on float32
    kernels for half precision on a CPU that has none for it."""
    unwrapped = _is_unwrapped_linear(layer)
    dtype = _linear_compute_dtype(hidden_states, layer.weight, layer.bias) if unwrapped else None
    if dtype is not None and activation is not None and not _is_unwrapped(activation):
        return activation(apply_linear(hidden_states, layer))  # a hooked or replaced activation sees `dtype`
    if dtype is not None:
        function = functools.partial(_linear_then_activation, activation=activation)
        return on_float32_kernels(function, dtype, hidden_states, layer.weight, layer.bias)
    if not _onednn_applies(hidden_states, layer):
        # an unwrapped layer's forward is this very call: skipping the module call and RoutedLinear's second route
        # check saves Python that small batches on a GPU wait for (with the attention's one backend lookup, 8 us of
        # each 110 us ViT layer's, timed by hand)
        output = nn.functional.linear(hidden_states, layer.weight, layer.bias) if unwrapped else layer(hidden_states)
        return output if activation is None else activation(output)
    epilogue = _onednn_epilogue(activation)
    attribute, algorithm = epilogue or ("none", "")
    output = torch.ops.mkldnn._linear_pointwise(hidden_states, layer.weight, layer.bias, attribute, [], algorithm)
    return output if epilogue is not None else activation(output)


class RoutedLinear(nn.Linear):
    """nn.Linear (same arguments, parameters and state dict) whose half-precision matmul runs on float32 kernels
    where the CPU has none for its dtype and the input has rows enough to repay the conversion: there aten emulates
    it, 3-7x slower than float32 (see the module's docstring). `apply_linear` reads its weights as a plain
    nn.Linear's; hooks and wrappers (PEFT) run as for one."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return linear(input, self.weight, self.bias)


_LINEAR_FORWARDS = (nn.Linear.forward, RoutedLinear.forward)


class RoutedConv2d(nn.Conv2d):
    """nn.Conv2d (same arguments, parameters and state dict) whose half-precision convolution runs on float32
    kernels where the CPU has none for its dtype: there aten emulates it, 18-25x slower than float32 (timed by hand
    on AVX2 for bf16, on AVX-512-bf16 Zen 5 for fp16). Its forward, hooks and wrappers run as nn.Conv2d's."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return routed(super()._conv_forward, input, weight, bias)


def routed(function, *operands: torch.Tensor | None, multiply_adds: int | None = None, **options) -> torch.Tensor:
    """function(*operands, **options), on float32 kernels for half precision on a CPU that has none for it: tensors
    are passed as `operands`, everything else by keyword. A matmul passes its `multiply_adds`, and keeps aten's
    kernel where they are too few to repay converting its operands. Convolutions and sampling grids pass none: their
    emulation is 2-100x slower from 8 x 8 maps on, and where it is not, the route costs a few microseconds."""
    dtype = float32_compute_dtype(*operands, multiply_adds=multiply_adds)
    if dtype is None:
        return function(*operands, **options)
    return on_float32_kernels(functools.partial(function, **options), dtype, *operands)


def linear(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """nn.functional.linear, on float32 kernels for half precision on a CPU that has none for it, given rows enough."""
    dtype = _linear_compute_dtype(input, weight, bias)
    if dtype is None:
        return nn.functional.linear(input, weight, bias)
    return on_float32_kernels(nn.functional.linear, dtype, input, weight, bias)


def matmul(input: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """torch.matmul, on float32 kernels for half precision on a CPU that has none for it, given rows enough."""
    rows = input.shape[-2] if input.dim() > 1 else 1
    columns = other.shape[-1] if other.dim() > 1 else 1
    # exact where at most one operand is broadcast over the other's batch; fewer where both are: towards aten's kernel
    multiply_adds = max(input.numel() * columns, other.numel() * rows)
    return routed(torch.matmul, input, other, multiply_adds=multiply_adds)


def _linear_compute_dtype(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.dtype | None:
    return float32_compute_dtype(input, weight, bias, multiply_adds=input.numel() * weight.shape[0])


def feed_forward(
    hidden_states: torch.Tensor, fc_in: nn.Linear, activation: nn.Module, fc_out: nn.Linear
) -> torch.Tensor:
    """fc_out(activation(fc_in(hidden_states))), with the activation fused into fc_in where a kernel allows it."""
    is_quick_gelu = type(activation) is QuickGELUActivation and _is_unwrapped(activation)
    if (
        is_quick_gelu
        and _is_plain_linear(fc_in)
        and _is_plain_linear(fc_out)
        and _linear_compute_dtype(hidden_states, fc_in.weight, fc_in.bias) is None  # else apply_linear's float32 route
    ):
        return _quick_gelu_feed_forward(hidden_states, fc_in, fc_out)
    return apply_linear(apply_linear(hidden_states, fc_in, activation), fc_out)


class FeedForward(nn.Module):
    """A transformer layer's MLP, fc2(activation(fc1(x))), with `feed_forward`'s fusions."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.fc1 = RoutedLinear(hidden_size, intermediate_size)
        self.activation = ACT2FN[hidden_act]
        self.fc2 = RoutedLinear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return feed_forward(hidden_states, self.fc1, self.activation, self.fc2)


def _quick_gelu_feed_forward(hidden_states: torch.Tensor, fc_in: nn.Linear, fc_out: nn.Linear) -> torch.Tensor:
    if _onednn_applies(hidden_states, fc_in, fc_out):
        # oneDNN's swish has no slope: silu(W (1.702 x) + 1.702 b) is 1.702 * QuickGELU(W x + b). The scaled input
        # and the bias-free output are rounded to bf16 once more each, so the error is ~1.5x the unfused one's.
        scaled = torch.ops.mkldnn._linear_pointwise(
            hidden_states * QUICK_GELU_SLOPE, fc_in.weight, fc_in.bias * QUICK_GELU_SLOPE, "swish", [], ""
        )
        output = torch.ops.mkldnn._linear_pointwise(scaled, fc_out.weight, None, "none", [], "")
        return torch.add(fc_out.bias, output, alpha=1 / QUICK_GELU_SLOPE)
    rows = hidden_states.reshape(-1, hidden_states.shape[-1])
    hidden = torch.addmm(fc_in.bias * QUICK_GELU_SLOPE, rows, fc_in.weight.t(), alpha=QUICK_GELU_SLOPE)
    output = torch.addmm(fc_out.bias, nn.functional.silu(hidden), fc_out.weight.t(), alpha=1 / QUICK_GELU_SLOPE)
    return output.view(*hidden_states.shape[:-1], fc_out.out_features)


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

    Where a gradient will flow, autograd keeps the `dtype` operands for the backward, not their float32 copies,
    and converts them again there: bit for bit the same gradients, and a ViT-S/16 forward (batch 8, fp16 weights)
    leaves 308 MiB for its backward instead of 533, against aten's 224, whose GELU inputs and attention outputs
    are fp16 (`benchmarks/bench_half_precision_training.py`)."""
    with torch.autocast("cpu", enabled=False):
        rounded = [None if operand is None else operand.to(dtype) for operand in operands]
        upcast = [None if operand is None else operand.float() for operand in rounded]
        if not _keeps_tensors_for_backward(upcast):
            return function(*upcast).to(dtype)
        with _saved_as_rounded(upcast, rounded):
            return function(*upcast).to(dtype)


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
                f"a {half.dtype} tensor of shape {tuple(half.shape)}, multiplied on float32 kernels (fused_linear), "
                f"is at version {half._version}; expected version {version} instead."
            )
        return half.float().as_strided(size, stride, offset)  # `.float()` lays the copy out as it did in forward

    return torch.autograd.graph.saved_tensors_hooks(pack, unpack)


def _linear_then_activation(hidden_states, weight, bias, activation: nn.Module | None) -> torch.Tensor:
    output = nn.functional.linear(hidden_states, weight, bias)
    return output if activation is None else activation(output)


def _onednn_epilogue(activation: nn.Module | None) -> tuple[str, str] | None:
    """oneDNN's (attribute, algorithm) for `activation`, or None where it has none exact (it then runs after)."""
    if activation is None:
        return "none", ""
    if not _is_unwrapped(activation):  # a hook, a hub kernel or a patch: run it as it is
        return None
    if type(activation) is GELUActivation and activation.act is nn.functional.gelu:
        return "gelu", "none"
    if type(activation) is nn.GELU:
        return "gelu", activation.approximate
    if type(activation) is nn.ReLU:
        return "relu", ""
    if type(activation) in (nn.SiLU, SiLUActivation):
        return "swish", ""
    return None


def _onednn_applies(hidden_states: torch.Tensor, *layers: nn.Linear) -> bool:
    """bfloat16 inference on a CPU with oneDNN bf16 kernels, through plain layers whose widths chain."""
    if not HAS_ONEDNN_BF16_LINEAR or hidden_states.dtype != torch.bfloat16 or hidden_states.device.type != "cpu":
        return False
    widths = [hidden_states.shape[-1], *(layer.out_features for layer in layers[:-1])]
    if not all(  # a wrong width: aten's linear names the shapes
        _is_unwrapped_linear(layer) and layer.in_features == width for layer, width in zip(layers, widths, strict=True)
    ):
        return False
    parameters = [parameter for layer in layers for parameter in (layer.weight, layer.bias) if parameter is not None]
    needs_grad = hidden_states.requires_grad or any(parameter.requires_grad for parameter in parameters)
    return (
        not (torch.is_grad_enabled() and needs_grad)
        and not torch.compiler.is_compiling()  # inductor picks its own kernels for the traced graph
        and torch.backends.mkldnn.enabled  # torch.backends.mkldnn.flags(enabled=False) is honoured
        and all(  # plain tensors where the input is: no meta or offloaded weights, no tensor subclasses
            type(parameter) is nn.Parameter and parameter.dtype == torch.bfloat16 and parameter.device.type == "cpu"
            for parameter in parameters
        )
    )


def _is_unwrapped_linear(module: nn.Module) -> bool:
    """A plain nn.Linear or RoutedLinear whose own forward would run: its weights may be read directly."""
    return (
        type(module) in (nn.Linear, RoutedLinear)
        and type(module).forward in _LINEAR_FORWARDS  # a patched class's forward runs as it is
        and _is_unwrapped(module)
    )


def _is_plain_linear(module: nn.Module) -> bool:
    return _is_unwrapped_linear(module) and module.bias is not None


def _is_unwrapped(module: nn.Module) -> bool:
    """No forward or backward hooks on it or on every module (register_module_forward_hook and kin), and its class's
    own forward."""
    hooks = module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks
    global_hooks = (
        module_hooks._global_forward_hooks
        or module_hooks._global_forward_pre_hooks
        or module_hooks._global_backward_hooks
        or module_hooks._global_backward_pre_hooks
    )
    return not (hooks or global_hooks) and "forward" not in vars(module)
