"""Linear layers fused with the activation that follows them, where a kernel does both faster than two modules.

Two fusions, each taken only where it was measured to win (`benchmarks/bench_vit.py`, `benchmarks/bench_video.py`):

- bfloat16 inference on a CPU whose oneDNN has bf16 kernels (AVX-512 bf16, AMX): oneDNN's inner product adds the
  bias and applies GELU, ReLU or SiLU in the matmul's epilogue, while aten's bf16 `addmm` first copies the bias into
  the output and the activation then makes a second pass over the widest tensor. On ViT-S/16's shapes that is ~15%
  per linear layer and ~20% for fc1 with its GELU. oneDNN's op has no backward, so training keeps aten's path.
- CLIP's QuickGELU anywhere else: x * sigmoid(1.702 x) is silu(1.702 x) / 1.702, one pass instead of three, with both
  scalings riding on the matmuls as `addmm`'s alpha.

Both read the layers' weights directly, so they are taken only for plain `nn.Linear`s that nothing wraps: an adapter
(PEFT), a quantised layer, a hook or accelerate's offloading sends the input through the layers' own forward.
"""

import functools

import torch
from torch import nn
from transformers.activations import GELUActivation, QuickGELUActivation

QUICK_GELU_SLOPE = 1.702


def linear(hidden_states: torch.Tensor, layer: nn.Linear, activation: nn.Module | None = None) -> torch.Tensor:
    """activation(layer(hidden_states)), in one oneDNN kernel for bfloat16 inference on a CPU that has one."""
    if not _onednn_applies(hidden_states, layer):
        output = layer(hidden_states)
        return output if activation is None else activation(output)
    epilogue = _onednn_epilogue(activation)
    attribute, algorithm = epilogue or ("none", "")
    output = torch.ops.mkldnn._linear_pointwise(hidden_states, layer.weight, layer.bias, attribute, [], algorithm)
    return output if epilogue is not None else activation(output)


def feed_forward(hidden_states: torch.Tensor, fc_in: nn.Linear, activation: nn.Module, fc_out: nn.Linear):
    """fc_out(activation(fc_in(hidden_states))), with the activation fused into fc_in where a kernel allows it."""
    if isinstance(activation, QuickGELUActivation) and _is_plain_linear(fc_in) and _is_plain_linear(fc_out):
        return _quick_gelu_feed_forward(hidden_states, fc_in, fc_out)
    return linear(linear(hidden_states, fc_in, activation), fc_out)


def _quick_gelu_feed_forward(hidden_states: torch.Tensor, fc_in: nn.Linear, fc_out: nn.Linear) -> torch.Tensor:
    if _onednn_applies(hidden_states, fc_in, fc_out):
        # oneDNN's swish has no slope: silu(W (1.702 x) + 1.702 b) is 1.702 * QuickGELU(W x + b)
        scaled = torch.ops.mkldnn._linear_pointwise(
            hidden_states * QUICK_GELU_SLOPE, fc_in.weight, fc_in.bias * QUICK_GELU_SLOPE, "swish", [], ""
        )
        output = torch.ops.mkldnn._linear_pointwise(scaled, fc_out.weight, None, "none", [], "")
        return torch.add(fc_out.bias, output, alpha=1 / QUICK_GELU_SLOPE)
    rows = hidden_states.reshape(-1, hidden_states.shape[-1])
    hidden = torch.addmm(fc_in.bias * QUICK_GELU_SLOPE, rows, fc_in.weight.t(), alpha=QUICK_GELU_SLOPE)
    output = torch.addmm(fc_out.bias, nn.functional.silu(hidden), fc_out.weight.t(), alpha=1 / QUICK_GELU_SLOPE)
    return output.view(*hidden_states.shape[:-1], fc_out.out_features)


def _onednn_epilogue(activation: nn.Module | None) -> tuple[str, str] | None:
    """oneDNN's (attribute, algorithm) for `activation`, or None where it has none exact (it then runs after)."""
    if activation is None:
        return "none", ""
    if "forward" in vars(activation):  # a hub kernel or a patch replaced it: run it as it is
        return None
    if isinstance(activation, GELUActivation) and activation.act is nn.functional.gelu:
        return "gelu", "none"
    if type(activation) is nn.GELU:
        return "gelu", activation.approximate
    if type(activation) is nn.ReLU:
        return "relu", ""
    if type(activation) is nn.SiLU:
        return "swish", ""
    return None


def _onednn_applies(hidden_states: torch.Tensor, *layers: nn.Linear) -> bool:
    """bfloat16 inference on a CPU with oneDNN bf16 kernels, through plain layers whose widths chain."""
    widths = [hidden_states.shape[-1], *(layer.out_features for layer in layers[:-1])]
    needs_grad = hidden_states.requires_grad or any(layer.weight.requires_grad for layer in layers)
    return (
        hidden_states.dtype == torch.bfloat16
        and hidden_states.device.type == "cpu"
        and not (torch.is_grad_enabled() and needs_grad)
        and not torch.compiler.is_compiling()  # inductor fuses on its own
        and all(
            type(layer) is nn.Linear
            and layer.weight.dtype == torch.bfloat16
            and layer.in_features == width  # else aten's linear names the shapes that do not fit
            and _is_unwrapped(layer)
            for layer, width in zip(layers, widths, strict=True)
        )
        and _has_onednn_bf16()
    )


@functools.cache
def _has_onednn_bf16() -> bool:
    mkldnn = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(mkldnn, "_linear_pointwise")
        and hasattr(mkldnn, "_is_mkldnn_bf16_supported")
        and bool(mkldnn._is_mkldnn_bf16_supported())
    )


def _is_plain_linear(module: nn.Module) -> bool:
    return type(module) is nn.Linear and module.bias is not None and _is_unwrapped(module)


def _is_unwrapped(module: nn.Module) -> bool:
    return not (module._forward_hooks or module._forward_pre_hooks) and "forward" not in vars(module)
