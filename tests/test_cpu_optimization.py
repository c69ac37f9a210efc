"""`optimize_for_cpu`: every family keeps its outputs and what it saves; layers on their fastest kernels, fused with
their activation, the same numbers as the plain modules, the fused kernel only where it has a backward and nothing
wraps the layers; half precision on float32 kernels where the CPU has none for it, with a half-precision kernel's
arithmetic; "sdpa" attention on the faster CPU route, with eager attention's numbers."""

import copy
import warnings
from pathlib import Path

import pytest
import torch
from conftest import simulate_a_cpu_without_half_precision_kernels
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile
from transformers.activations import ACT2FN

from hf_attention import (
    REGISTRY,
    MultiHeadAttention,
    VisionTransformerConfig,
    VisionTransformerForImageClassification,
    cpu_optimization,
    optimize_for_cpu,
)
from hf_attention.attention import dot_product_attention
from hf_attention.cpu_optimization import (
    ATTENTION_IMPLEMENTATION,
    HAS_ONEDNN_BF16_LINEAR,
    CPUConv2d,
    CPUFeedForward,
    CPULinear,
    _onednn_applies,
    float32_compute_dtype,
    linear,
)
from hf_attention.layers import FeedForward
from hf_attention.masks import build_attention_mask

MODELS = [(config, model_class) for config, base, heads in REGISTRY for model_class in (base, *heads.values())]
IDS = [model_class.__name__ for _, model_class in MODELS]
ACTIVATIONS = ["gelu", "gelu_pytorch_tanh", "relu", "silu", "quick_gelu", "tanh", "torch_gelu_tanh", "torch_silu"]
TORCH_ACTIVATIONS = {"torch_gelu_tanh": lambda: nn.GELU(approximate="tanh"), "torch_silu": nn.SiLU}
FLASH_KERNEL = "aten::_scaled_dot_product_flash_attention_for_cpu"


def tensors_of(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if hasattr(output, "to_tuple"):
        output = output.to_tuple()
    if isinstance(output, (tuple, list)):
        return [tensor for item in output for tensor in tensors_of(item)]
    return []


def float_inputs(inputs: dict, dtype: torch.dtype) -> dict:
    return {name: value.to(dtype) if value.is_floating_point() else value for name, value in inputs.items()}


def feed_forward(activation: str, width: int = 24, hidden: int = 96, dtype=torch.float32) -> CPUFeedForward:
    torch.manual_seed(0)
    mlp = FeedForward(width, hidden, "gelu" if activation in TORCH_ACTIVATIONS else activation)
    if activation in TORCH_ACTIVATIONS:
        mlp.activation_fn = TORCH_ACTIVATIONS[activation]()
    return optimize_for_cpu(mlp.to(dtype))


def plain(mlp: FeedForward, hidden: torch.Tensor) -> torch.Tensor:
    """The three modules, called one after the other."""
    return mlp.fc2(mlp.dropout(mlp.activation_fn(mlp.fc1(hidden))))


def kernel_counts(step) -> dict[str, int]:
    with profile(activities=[ProfilerActivity.CPU]) as trace:
        step()
    return {event.key: event.count for event in trace.key_averages()}


def within_one_rounding(got: torch.Tensor, exact: torch.Tensor) -> bool:
    """Each entry of `got` is one of the two `got.dtype` numbers around the float64 `exact` one."""
    spacing = torch.finfo(got.dtype).eps * exact.abs().clamp(min=torch.finfo(got.dtype).tiny)  # the gap around it
    return bool(((got.double() - exact).abs() <= spacing).all())


def tiny_vit(**kwargs) -> VisionTransformerForImageClassification:
    config = VisionTransformerConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
        **kwargs,
    )
    return VisionTransformerForImageClassification(config)


@pytest.fixture
def half_precision_kernels(monkeypatch):
    """Half precision as aten and oneDNN run it, on any CPU: the float32 route is off."""
    monkeypatch.setattr(cpu_optimization, "CPU_HAS_HALF_KERNELS", {torch.bfloat16: True, torch.float16: True})


# --- every family ----------------------------------------------------------------------------------------------


def saved_files(model, folder: Path) -> dict[str, bytes]:
    model.save_pretrained(folder)
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_an_optimized_model_keeps_its_outputs_and_saves_what_the_plain_model_saves(config_class, model_class, tmp_path):
    torch.manual_seed(0)
    model = model_class(config_class.tiny()).eval()
    optimized = optimize_for_cpu(copy.deepcopy(model))
    assert not any(type(module) in (nn.Linear, nn.Conv2d, FeedForward) for module in optimized.modules())
    inputs = model.dummy_inputs
    with torch.no_grad():
        for dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, 2**-6)):
            expected = tensors_of(model.to(dtype)(**float_inputs(inputs, dtype)))
            got = tensors_of(optimized.to(dtype)(**float_inputs(inputs, dtype)))
            assert len(got) == len(expected)
            for one, other in zip(got, expected, strict=True):
                assert one.dtype == other.dtype, dtype
                scale = other.abs().max().clamp(min=1).item() if other.is_floating_point() and other.numel() else 1
                torch.testing.assert_close(one, other, atol=tolerance * scale, rtol=tolerance, equal_nan=True)
    plain_files = saved_files(model.float(), tmp_path / "plain")
    optimized_files = saved_files(optimized.float(), tmp_path / "optimized")
    assert optimized_files == plain_files  # the same files, config.json, code and weights, byte for byte
    assert "cpu_optimization.py" not in plain_files


@torch.no_grad()
@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_every_matmul_and_convolution_multiplies_float32_operands_where_the_cpu_has_no_fp16_kernels(
    config_class, model_class, no_half_precision_kernels
):
    """aten emulates fp16 on such CPUs (AVX2; Zen 4 and 5 for fp16): 3-6x float32's time in linear layers, 18-25x in
    convolutions. The fixture lifts the floor on a matmul's rows, so that tiny models take the route too. aten's
    recurrent cells round their state to the half dtype every step: on float32 kernels they would compute other
    numbers, so they keep aten's kernels (nn.GRU in fp16 3.9x float32's time on a Zen 5, hidden 256, 50 steps)."""
    model = optimize_for_cpu(model_class(config_class.tiny()).eval().half())
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as trace:
        output = tensors_of(model(**float_inputs(model.dummy_inputs, torch.float16)))[0]
    multiplying = {"aten::convolution", "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
    half = [
        (event.name, event.input_shapes[:3])
        for event in trace.events()
        if event.name in multiplying and "c10::Half" in event.input_dtypes and not inside_a_recurrent_cell(event)
    ]
    assert not half, f"aten's emulated fp16 kernels ran: {half}"
    assert output.dtype == torch.float16 or not output.is_floating_point()


def inside_a_recurrent_cell(event) -> bool:
    while event is not None:
        if event.name.removeprefix("aten::").removesuffix("_cell") in ("gru", "lstm", "rnn_tanh", "rnn_relu"):
            return True
        event = event.cpu_parent
    return False


def test_only_sdpa_is_switched_and_a_block_without_a_config_is_switched_too():
    models = {name: tiny_vit(attn_implementation=name) for name in ("sdpa", "eager", "flex_attention")}
    for name, model in models.items():
        optimize_for_cpu(model)
        expected = ATTENTION_IMPLEMENTATION if name == "sdpa" else name
        assert model.config._attn_implementation == expected
        assert ATTENTION_IMPLEMENTATION not in model.config.to_json_string()  # config.json: as the plain model's
    block = optimize_for_cpu(MultiHeadAttention(16, 4))
    assert block.attn_implementation == ATTENTION_IMPLEMENTATION and type(block.q_proj) is CPULinear
    assert optimize_for_cpu(MultiHeadAttention(16, 4, attn_implementation="eager")).attn_implementation == "eager"
    twice = optimize_for_cpu(optimize_for_cpu(tiny_vit()))
    attentions = [module for module in twice.modules() if isinstance(module, MultiHeadAttention)]
    hooked = [len(module._forward_pre_hooks) == len(module._forward_hooks) == 1 for module in attentions]
    assert hooked and all(hooked)
    assert not twice._forward_pre_hooks  # no hook around the whole model: small models paid for it in every torch call


def test_layers_that_are_not_plain_keep_their_own_forward():
    class Quantised(nn.Linear):  # a subclass, as bitsandbytes' and torch.ao's layers are
        def forward(self, input):
            return super().forward(input) * 0

    model = nn.Sequential(nn.Linear(8, 8), Quantised(8, 8), nn.Conv2d(2, 2, 1), nn.LazyLinear(4))
    optimize_for_cpu(model)
    assert [type(module) for module in model] == [CPULinear, Quantised, CPUConv2d, nn.LazyLinear]
    quantised = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(8, 8)), {nn.Linear})
    optimize_for_cpu(quantised)
    assert type(quantised[0]).__module__.startswith("torch.ao"), "a quantised layer is left as it is"
    assert CPULinear(4, 2).state_dict().keys() == nn.Linear(4, 2).state_dict().keys()


def test_lora_on_an_optimized_model_trains_and_merges():
    peft = pytest.importorskip("peft")
    model = optimize_for_cpu(tiny_vit())
    pixels = torch.randn(2, 3, 32, 32)
    lora = peft.get_peft_model(
        model, peft.LoraConfig(target_modules=["q_proj", "v_proj"], r=2, init_lora_weights=False)
    )
    wrapped = [module.base_layer for name, module in lora.named_modules() if name.endswith(("q_proj", "v_proj"))]
    assert wrapped and all(type(layer) is CPULinear for layer in wrapped)
    lora(pixel_values=pixels).logits.sum().backward()
    adapters = [parameter for name, parameter in lora.named_parameters() if "lora_" in name]
    assert adapters and all(parameter.grad is not None for parameter in adapters)
    with torch.no_grad():
        expected = lora(pixel_values=pixels).logits
        merged = lora.merge_and_unload()
        torch.testing.assert_close(merged(pixel_values=pixels).logits, expected, atol=1e-5, rtol=1e-5)


# --- linear layers and feed-forwards in bf16 ---------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(3, 7, 24), (5, 24), (0, 24)])
def test_bf16_inference_stays_as_close_to_float32_as_the_modules_do(activation, shape):
    """On a CPU with oneDNN bf16 kernels this runs the fused kernel; elsewhere aten's path. Either way the error
    against the float32 modules is at most that of the unfused bf16 modules, plus one bf16 rounding."""
    mlp = feed_forward(activation)
    hidden = torch.randn(shape)
    with torch.no_grad():
        expected = plain(mlp, hidden)
        mlp.to(torch.bfloat16)
        got = mlp(hidden.bfloat16())
        unfused = plain(mlp, hidden.bfloat16())
    assert got.shape == shape and got.dtype == torch.bfloat16
    if not got.numel():
        return
    error, unfused_error = (got.float() - expected).abs().max(), (unfused.float() - expected).abs().max()
    assert error <= unfused_error + 2**-7 * expected.abs().max(), (float(error), float(unfused_error))


@pytest.mark.parametrize("activation", ["gelu", "quick_gelu"])
def test_bf16_training_goes_through_aten_and_gets_its_gradients(activation, half_precision_kernels):
    mlp = feed_forward(activation, dtype=torch.bfloat16)
    hidden = torch.randn(4, 24, dtype=torch.bfloat16, requires_grad=True)
    assert not _onednn_applies(hidden, mlp.fc1.weight, mlp.fc1.bias)
    got = mlp(hidden)
    if activation == "gelu":  # the plain path is the modules themselves, to the bit
        assert torch.equal(got, plain(mlp, hidden))
    grads = torch.autograd.grad(got.float().sum(), [hidden, mlp.fc1.weight])
    reference = mlp.fc2.float()(ACT2FN[activation](mlp.fc1(hidden).float())).sum()
    expected = torch.autograd.grad(reference, [hidden, mlp.fc1.weight])
    for grad, expected_grad in zip(grads, expected, strict=True):
        torch.testing.assert_close(grad.float(), expected_grad.float(), atol=0.1, rtol=5e-2)


def test_the_fused_kernel_is_taken_only_for_bf16_inference_on_plain_weights(monkeypatch):
    layer = nn.Linear(24, 8).to(torch.bfloat16)
    rows = torch.randn(5, 24, dtype=torch.bfloat16)
    weights = (layer.weight, layer.bias)
    with torch.no_grad():
        assert _onednn_applies(rows, *weights) == HAS_ONEDNN_BF16_LINEAR
        assert not _onednn_applies(rows.float(), layer.weight.float()), "float32 keeps aten's (MKL) matmul"
        assert not _onednn_applies(torch.randn(5, 23, dtype=torch.bfloat16), *weights), "wrong width: aten's error"
    assert not _onednn_applies(rows, *weights), "weights that need a gradient"
    with torch.inference_mode():
        assert _onednn_applies(rows, *weights) == HAS_ONEDNN_BF16_LINEAR
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        assert not _onednn_applies(rows, *weights), "inductor picks its own kernels"


def test_wrapped_layers_and_activations_run_as_they_are_in_bf16_inference():
    mlp = feed_forward("gelu", dtype=torch.bfloat16)
    hidden = torch.randn(6, 24, dtype=torch.bfloat16)
    with torch.no_grad():
        handle = mlp.fc1.register_forward_hook(lambda module, inputs, output: output + 1.0)  # as an adapter would
        torch.testing.assert_close(mlp(hidden), plain(mlp, hidden))
        handle.remove()
        mlp.activation_fn.forward = lambda x: torch.zeros_like(x)  # as a hub kernel replacing the activation would
        torch.testing.assert_close(mlp(hidden), mlp.fc2.bias.expand(6, 24))


def test_a_trainable_bias_of_a_frozen_weight_still_gets_its_gradient_in_bf16():
    for activation in ("gelu", "quick_gelu"):  # BitFit: only the biases train
        mlp = feed_forward(activation, dtype=torch.bfloat16)
        mlp.fc1.weight.requires_grad_(False)
        mlp.fc2.weight.requires_grad_(False)
        assert not _onednn_applies(torch.randn(2, 24, dtype=torch.bfloat16), mlp.fc1.weight, mlp.fc1.bias)
        mlp(torch.randn(5, 24, dtype=torch.bfloat16)).float().sum().backward()
        assert mlp.fc1.bias.grad is not None and mlp.fc1.bias.grad.abs().sum() > 0, activation


def test_weights_that_are_not_plain_cpu_bf16_tensors_go_through_aten():
    rows = torch.randn(5, 24, dtype=torch.bfloat16)
    with torch.no_grad():
        meta = optimize_for_cpu(nn.Linear(24, 8, device="meta", dtype=torch.bfloat16))
        assert not _onednn_applies(rows, meta.weight, meta.bias)
        with pytest.raises(RuntimeError, match="Tensor on device meta is not on the expected device cpu"):
            meta(rows)
        mixed = optimize_for_cpu(nn.Linear(24, 8).to(torch.bfloat16))
        mixed.bias.data = mixed.bias.data.float()  # aten refuses a float32 bias next to bf16 weights; so do we
        assert not _onednn_applies(rows, mixed.weight, mixed.bias)
        subclass = type("Quantised", (torch.Tensor,), {})
        assert not _onednn_applies(rows, mixed.weight.as_subclass(subclass)), "tensor subclasses keep their kernels"
        layer = nn.Linear(24, 8).to(torch.bfloat16)
        with warnings.catch_warnings():  # leaving the context restores oneDNN's TF32 flag, which warns on CPU builds
            warnings.simplefilter("ignore", UserWarning)
            with torch.backends.mkldnn.flags(enabled=False):
                assert not _onednn_applies(rows, layer.weight, layer.bias)
        traced = torch.jit.trace(optimize_for_cpu(layer), rows)  # a trace records aten's ops, which export knows
        assert "mkldnn" not in str(traced.graph)
        assert torch.equal(traced(rows), nn.functional.linear(rows, layer.weight, layer.bias))


def test_a_backward_hook_or_a_patched_forward_runs_as_on_an_nn_linear(monkeypatch):
    layer = optimize_for_cpu(nn.Linear(8, 4))
    hidden = torch.randn(3, 8, requires_grad=True)
    seen = []
    handle = layer.register_full_backward_hook(lambda module, grad_in, grad_out: seen.append(grad_out[0].shape))
    layer(hidden).sum().backward()
    handle.remove()
    assert seen == [(3, 4)], "the layer's backward hook fires"
    handle = nn.modules.module.register_module_full_backward_hook(lambda module, grad_in, grad_out: seen.append(module))
    layer(hidden).sum().backward()
    handle.remove()
    assert seen[1:] == [layer], "a global backward hook sees the layer"
    mlp = feed_forward("gelu")
    monkeypatch.setattr(CPULinear, "forward", lambda self, input: input[..., : self.out_features] * 0)
    assert torch.equal(layer(hidden), torch.zeros(3, 4)), "a patched class's forward runs"
    assert torch.equal(mlp(torch.randn(3, 24)), mlp.fc2(mlp.activation_fn(torch.zeros(3, 96)))), "in a FeedForward too"


def test_activations_that_are_hooked_or_subclassed_run_as_they_are_in_bf16_inference(half_precision_kernels):
    mlp = feed_forward("gelu", dtype=torch.bfloat16)
    hidden = torch.randn(6, 24, dtype=torch.bfloat16)
    seen = []
    with torch.no_grad():
        handle = mlp.activation_fn.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
        mlp(hidden)
        handle.remove()
        assert seen == [torch.Size([6, 96])], "the probe on the activation fired"

        class ClampedGELU(type(mlp.activation_fn)):
            def forward(self, input):
                return super().forward(input).clamp(max=0.1)

        gelu, mlp.activation_fn = mlp.activation_fn, ClampedGELU()
        torch.testing.assert_close(mlp(hidden), mlp.fc2(gelu(mlp.fc1(hidden)).clamp(max=0.1)))
        mlp.activation_fn = gelu
        calls = []
        handle = nn.modules.module.register_module_forward_hook(lambda module, inputs, output: calls.append(module))
        try:
            mlp(hidden)
        finally:
            handle.remove()
        assert calls == [mlp.fc1, mlp.activation_fn, mlp.dropout, mlp.fc2, mlp], "a global hook sees every module"


def test_a_wrong_width_in_bf16_inference_gets_aten_s_message():
    with (
        torch.no_grad(),
        pytest.raises(RuntimeError, match=r"mat1 and mat2 shapes cannot be multiplied \(3x8 and 16x4"),
    ):
        linear(torch.randn(3, 8, dtype=torch.bfloat16), *nn.Linear(16, 4).to(torch.bfloat16).parameters(), nn.GELU())


@pytest.mark.skipif(
    not HAS_ONEDNN_BF16_LINEAR, reason="this CPU has no oneDNN bf16 kernels (needs AVX-512 bf16 or AMX)"
)
def test_a_bf16_vit_runs_its_linear_layers_through_onednn_in_inference_only():
    model = optimize_for_cpu(tiny_vit().to(torch.bfloat16).eval())
    config = model.config
    pixels = torch.randn(2, 3, 32, 32, dtype=torch.bfloat16)
    with torch.inference_mode():
        inference = kernel_counts(lambda: model(pixel_values=pixels))
    training = kernel_counts(lambda: model(pixel_values=pixels).logits.float().sum().backward())
    # per layer: q, k, v and the output projection, fc1 with its GELU, fc2; the classifier on top
    assert inference.get("mkldnn::_linear_pointwise") == 6 * config.num_hidden_layers + 1
    assert "aten::gelu" not in inference
    assert "mkldnn::_linear_pointwise" not in training and training["aten::gelu"] == config.num_hidden_layers


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-6), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("shape", [(2, 3, 5, 16), (7, 16), (0, 4, 16)])
def test_fused_quick_gelu_mlp_has_the_values_and_gradients_of_the_three_pass_formula(shape, dtype, tolerance):
    mlp = feed_forward("quick_gelu", width=16, hidden=64, dtype=dtype)
    hidden = torch.randn(shape, dtype=dtype, requires_grad=True)

    def formula(x):  # CLIP's QuickGELU as the paper writes it
        inner = mlp.fc1(x)
        return mlp.fc2(inner * torch.sigmoid(1.702 * inner))

    got, expected = mlp(hidden), formula(hidden)
    assert got.shape == shape and got.dtype == dtype
    torch.testing.assert_close(got, expected, atol=tolerance, rtol=tolerance)
    weights = torch.randn_like(got)
    grads = torch.autograd.grad((got * weights).sum(), [hidden, mlp.fc1.weight, mlp.fc2.bias])
    expected_grads = torch.autograd.grad((expected * weights).sum(), [hidden, mlp.fc1.weight, mlp.fc2.bias])
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, atol=tolerance * 10, rtol=tolerance)


def test_the_fused_quick_gelu_mlp_goes_through_layers_that_are_wrapped_or_hooked():
    mlp, hidden = feed_forward("quick_gelu", width=16, hidden=64), torch.randn(3, 16)
    fused = mlp(hidden)
    handle = mlp.fc1.register_forward_hook(lambda module, inputs, output: output + 1.0)  # as an adapter would
    inner = mlp.fc1(hidden)
    torch.testing.assert_close(mlp(hidden), mlp.fc2(inner * torch.sigmoid(1.702 * inner)))
    handle.remove()
    mlp.fc2.forward = lambda x: nn.functional.linear(x, mlp.fc2.weight, mlp.fc2.bias) * 2.0  # accelerate-style
    torch.testing.assert_close(mlp(hidden), fused * 2.0, atol=1e-6, rtol=1e-6)
    with pytest.raises(RuntimeError, match=r"mat1 and mat2 shapes cannot be multiplied \(3x8 and 16x64\)"):
        feed_forward("quick_gelu", width=16, hidden=64)(torch.randn(3, 8))


# --- half precision on float32 kernels ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_without_its_kernels_is_one_rounding_of_the_exact_result(dtype, no_half_precision_kernels):
    mlp = feed_forward("gelu", dtype=dtype)
    fc1 = mlp.fc1
    hidden = torch.randn(3, 7, 24).to(dtype)
    assert float32_compute_dtype(hidden, fc1.weight, fc1.bias) == dtype
    with torch.no_grad():
        got = linear(hidden, fc1.weight, fc1.bias, mlp.activation_fn)
        exact = nn.functional.gelu(nn.functional.linear(hidden.double(), fc1.weight.double(), fc1.bias.double()))
        assert got.dtype == dtype and within_one_rounding(got, exact), "the GELU runs before the one rounding"
        upcast = nn.functional.linear(hidden.float(), fc1.weight.float(), fc1.bias.float())
        assert torch.equal(got, mlp.activation_fn(upcast).to(dtype))
        assert torch.equal(mlp(hidden), mlp.fc2(got))


def test_autocast_without_bf16_kernels_rounds_the_operands_as_autocast_does(no_half_precision_kernels):
    layer = optimize_for_cpu(nn.Linear(24, 16))
    hidden = torch.randn(5, 24, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert float32_compute_dtype(hidden, layer.weight, layer.bias) == torch.bfloat16
        got = layer(hidden)
        reference = nn.functional.linear(hidden, layer.weight, layer.bias)  # aten's emulated bf16 kernel
    rounded = [tensor.detach().bfloat16().double() for tensor in (hidden, layer.weight, layer.bias)]
    assert got.dtype == torch.bfloat16 and within_one_rounding(got, nn.functional.linear(*rounded))
    torch.testing.assert_close(got, reference, rtol=2**-7, atol=0)
    grads = torch.autograd.grad(got.float().square().sum(), [hidden, layer.weight, layer.bias])
    expected = torch.autograd.grad(reference.float().square().sum(), [hidden, layer.weight, layer.bias])
    for grad, expected_grad in zip(grads, expected, strict=True):
        assert grad.dtype == torch.float32
        torch.testing.assert_close(grad, expected_grad, rtol=2e-2, atol=2e-2)


def test_bf16_training_without_bf16_kernels_gets_the_float64_gradients(no_half_precision_kernels):
    mlp = feed_forward("quick_gelu", dtype=torch.bfloat16)
    hidden = torch.randn(6, 24, dtype=torch.bfloat16, requires_grad=True)
    got = mlp(hidden)
    grads = torch.autograd.grad(got.float().sum(), [hidden, mlp.fc1.weight, mlp.fc2.bias])
    exact_mlp = copy.deepcopy(mlp).double()
    exact_hidden = hidden.detach().double().requires_grad_()
    exact = plain(exact_mlp, exact_hidden)
    torch.testing.assert_close(got.double(), exact, rtol=2**-6, atol=2**-7)  # two roundings: fc1's, fc2's
    expected = torch.autograd.grad(exact.sum(), [exact_hidden, exact_mlp.fc1.weight, exact_mlp.fc2.bias])
    for grad, expected_grad in zip(grads, expected, strict=True):
        assert grad.dtype == torch.bfloat16
        torch.testing.assert_close(grad.double(), expected_grad, rtol=2**-6, atol=2**-6)


def kept_after(forward) -> tuple[int, torch.Tensor]:
    """Bytes that `forward()` leaves allocated, its output and what autograd keeps for the backward, and the output."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        output = forward()
    return sum(event.self_cpu_memory_usage for event in profiler.events()), output


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_training_without_half_kernels_keeps_the_half_operands_not_their_float32_copies(
    dtype, no_half_precision_kernels, monkeypatch
):
    torch.manual_seed(0)
    stack = optimize_for_cpu(nn.Sequential(*[nn.Linear(256, 256) for _ in range(3)]).to(dtype))
    hidden = torch.randn(2, 32, 256, dtype=dtype, requires_grad=True)  # 3-D: the backward needs views rebuilt
    output_bytes = 3 * hidden.numel() * hidden.element_size()
    kept, output = kept_after(lambda: stack(hidden))
    assert kept <= 1.5 * output_bytes  # the layers' outputs, each the next layer's saved input
    grads = torch.autograd.grad(output.float().square().sum(), [hidden, *stack.parameters()])
    checkpointed, _ = kept_after(lambda: torch.utils.checkpoint.checkpoint(stack, hidden, use_reentrant=False))
    assert checkpointed <= 0.5 * output_bytes  # checkpointing's hooks decide: only the last output is left
    monkeypatch.setattr(cpu_optimization, "_keeps_tensors_for_backward", lambda tensors: False)
    kept_with_copies, output_with_copies = kept_after(lambda: stack(hidden))
    grads_with_copies = torch.autograd.grad(output_with_copies.float().square().sum(), [hidden, *stack.parameters()])
    assert kept_with_copies >= kept + 3 * 256 * 256 * 4  # at least each layer's float32 weight
    for grad, grad_with_copies in zip(grads, grads_with_copies, strict=True):
        assert grad.dtype == dtype
        torch.testing.assert_close(grad, grad_with_copies, rtol=0, atol=0)


def test_a_half_operand_changed_in_place_before_the_backward_is_refused(no_half_precision_kernels):
    layer = optimize_for_cpu(nn.Linear(16, 16).half())
    hidden = torch.randn(4, 16, dtype=torch.float16, requires_grad=True).clone()  # a non-leaf may change in place
    output = layer(hidden)
    with torch.no_grad():
        hidden.mul_(2)
    with pytest.raises(
        RuntimeError, match=r"modified by an inplace operation: a torch.float16 tensor of shape \(4, 16\)"
    ):
        output.sum().backward()


def test_checkpointed_or_hookless_training_without_half_kernels_gets_the_same_gradients(no_half_precision_kernels):
    torch.manual_seed(0)
    layer, conv = optimize_for_cpu(nn.Linear(16, 16).half()), optimize_for_cpu(nn.Conv2d(2, 2, 3, padding=1).half())
    hidden = torch.randn(2, 2, 8, 16, dtype=torch.float16, requires_grad=True)

    def forward(states):
        return layer(conv(states)).float().square().sum()

    parameters = [hidden, *layer.parameters(), *conv.parameters()]
    expected = torch.autograd.grad(forward(hidden), parameters)
    for use_reentrant in (False, True):  # checkpointing's own saved-tensor hooks, or a forward without a graph
        torch.utils.checkpoint.checkpoint(forward, hidden, use_reentrant=use_reentrant).backward()
        for parameter, expected_grad in zip(parameters, expected, strict=True):
            torch.testing.assert_close(parameter.grad, expected_grad, rtol=0, atol=0)
            parameter.grad = None
    with torch.autograd.graph.disable_saved_tensors_hooks("no hooks here"):  # as some wrappers (FSDP) forbid them
        grads = torch.autograd.grad(forward(hidden), parameters)
    for grad, expected_grad in zip(grads, expected, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)


class Scores(nn.Module):
    """Model code that multiplies as a function: queries @ keys, then an affine grid."""

    def __init__(self):
        super().__init__()
        self.keys = nn.Parameter(torch.randn(2, 3, 8, 6))

    def forward(self, queries):
        return queries @ self.keys, nn.functional.affine_grid(queries[:, 0, :2, :3], [2, 1, 4, 5], align_corners=False)


def test_convolutions_and_functional_matmuls_without_half_kernels_are_one_rounding_of_the_exact_result(
    no_half_precision_kernels, monkeypatch
):
    monkeypatch.setattr(cpu_optimization, "FUNCTIONAL_MATMUL_MODULES", (Scores,))
    conv = optimize_for_cpu(nn.Conv2d(3, 8, kernel_size=4, stride=4).to(torch.bfloat16))
    pixels = torch.randn(2, 3, 16, 16, dtype=torch.bfloat16)
    scores = optimize_for_cpu(Scores().to(torch.bfloat16))
    queries = torch.randn(2, 3, 5, 8, dtype=torch.bfloat16)
    with torch.no_grad():
        exact_conv = nn.functional.conv2d(pixels.double(), conv.weight.double(), conv.bias.double(), stride=4)
        assert within_one_rounding(conv(pixels), exact_conv)
        product, grid = scores(queries)
        assert within_one_rounding(product, queries.double() @ scores.keys.double())
        exact_grid = nn.functional.affine_grid(queries[:, 0, :2, :3].double(), [2, 1, 4, 5], align_corners=False)
        assert within_one_rounding(grid, exact_grid)
        seen = []
        handle = conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
        assert within_one_rounding(conv(pixels), exact_conv) and seen == [torch.bfloat16], "hooks see its output"
        handle.remove()
        with pytest.raises(RuntimeError, match="Expected size for first two dimensions"):
            scores(torch.randn(2, 3, 5, 7, dtype=torch.bfloat16))
        assert torch.overrides._get_current_function_mode() is None, "a forward that raised leaves no mode behind"
        product, _ = scores.float()(queries.float())
    assert torch.overrides._get_current_function_mode() is None


def test_the_float32_route_is_taken_only_for_plain_cpu_half_precision(no_half_precision_kernels):
    bf16 = torch.randn(4, 8, dtype=torch.bfloat16)
    assert float32_compute_dtype(bf16, bf16.half()) is None, "mixed dtypes keep aten's error"
    assert float32_compute_dtype(torch.randn(4, 8), torch.randn(8, 2)) is None, "float32 is not rerouted"
    assert float32_compute_dtype(bf16, torch.randn(8, 2, dtype=torch.bfloat16, device="meta")) is None
    assert float32_compute_dtype(bf16.as_subclass(type("Quantised", (torch.Tensor,), {}))) is None
    with torch.autocast("cpu", dtype=torch.float16):
        assert float32_compute_dtype(torch.randn(4, 8), bf16) == torch.float16, "autocast's dtype, any operand"
        assert float32_compute_dtype(torch.randn(4, 8, dtype=torch.float64)) is None, "autocast leaves float64"
    with torch.autocast("cpu", enabled=False):
        assert float32_compute_dtype(torch.randn(4, 8)) is None
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"mat1 and mat2 shapes cannot be multiplied \(3x8"):
        optimize_for_cpu(nn.Linear(16, 4).to(torch.bfloat16))(torch.randn(3, 8, dtype=torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_head_that_is_no_linear_layer_runs_as_it_is(dtype, no_half_precision_kernels):
    config = tiny_vit().config
    config.num_labels = 0  # the classifier is nn.Identity: logits are the pooled features
    model = optimize_for_cpu(VisionTransformerForImageClassification(config).to(dtype).eval())
    with torch.no_grad():
        outputs = model(pixel_values=torch.randn(2, 3, 32, 32, dtype=dtype), output_hidden_states=True)
        pooled = model.vit.layernorm(outputs.hidden_states[-1])[:, 0]
        torch.testing.assert_close(outputs.logits, pooled, rtol=0, atol=0)


def test_a_matmul_with_too_few_multiply_adds_to_repay_the_conversion_stays_on_atens_emulation(monkeypatch):
    shipped = cpu_optimization.MIN_MULTIPLY_ADDS_PER_ELEMENT
    simulate_a_cpu_without_half_precision_kernels(monkeypatch)
    monkeypatch.setattr(cpu_optimization, "MIN_MULTIPLY_ADDS_PER_ELEMENT", shipped)
    monkeypatch.setattr(cpu_optimization, "FUNCTIONAL_MATMUL_MODULES", (nn.Bilinear,))
    torch.manual_seed(0)
    layer = optimize_for_cpu(nn.Linear(64, 256).half())
    product = optimize_for_cpu(nn.Bilinear(1, 1, 1).half())  # any module: its forward is replaced below
    calls = {
        "one row": lambda: layer(torch.randn(1, 64).half()),  # 64 x 256 multiply-adds for 64 x 257 elements
        "64 rows": lambda: layer(torch.randn(4, 16, 64).half()),
        "5 x 8 by 8 x 6": lambda: product(torch.randn(2, 5, 8).half(), torch.randn(2, 8, 6).half()),
        "64 x 64 by 64 x 64": lambda: product(torch.randn(3, 64, 64).half(), torch.randn(64, 64).half()),
    }
    product.forward = torch.matmul
    kernels = {}
    for name, call in calls.items():
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as trace:
            assert call().dtype == torch.float16
        products = {"aten::addmm", "aten::mm", "aten::bmm"}
        kernels[name] = {event.input_dtypes[0] for event in trace.events() if event.name in products}
    emulated, upcast = {"c10::Half"}, {"float"}
    assert kernels == {
        "one row": emulated,
        "64 rows": upcast,
        "5 x 8 by 8 x 6": emulated,
        "64 x 64 by 64 x 64": upcast,
    }, kernels


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_a_bf16_vit_without_bf16_kernels_multiplies_float32_operands_only(attn_implementation, monkeypatch):
    torch.manual_seed(0)
    model = tiny_vit(attn_implementation=attn_implementation).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        exact = model.double()(pixel_values=pixels.double()).logits
        model.to(torch.bfloat16)
        aten = model(pixel_values=pixels.bfloat16()).logits.double()
        simulate_a_cpu_without_half_precision_kernels(monkeypatch)
        optimize_for_cpu(model)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as trace:
            routed = model(pixel_values=pixels.bfloat16()).logits.double()
    products = {"aten::mm", "aten::addmm", "aten::bmm", "aten::convolution"}
    seen = {(event.name, event.input_dtypes[0]) for event in trace.events() if event.name in products}
    expected = {"aten::addmm", "aten::convolution"} | ({"aten::bmm"} if attn_implementation == "eager" else set())
    assert seen == {(name, "float") for name in expected}, seen
    # as close to float64 as aten's own bf16 path (closer: the GELU runs before its rounding)
    assert (routed - exact).abs().max() <= 1.5 * (aten - exact).abs().max() + 1e-3


def test_an_optimized_bf16_model_compiles_into_one_graph_on_the_compiler_s_kernels():
    """Under torch.compile the fused oneDNN kernel, the eager attention route and the function mode step aside."""
    model = optimize_for_cpu(tiny_vit().to(torch.bfloat16).eval())
    pixels = torch.randn(2, 3, 32, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")(pixel_values=pixels).logits
    torch.testing.assert_close(compiled, expected, rtol=2**-6, atol=2**-6)


def test_the_float32_route_compiles_into_one_graph(no_half_precision_kernels):
    torch.manual_seed(0)
    model = tiny_vit(attn_implementation="eager").to(torch.bfloat16).eval()
    pixels = torch.randn(2, 3, 32, 32, dtype=torch.bfloat16)
    optimize_for_cpu(model)
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")(pixel_values=pixels).logits
    torch.testing.assert_close(compiled, expected, rtol=2**-7, atol=2**-7)


# --- attention -------------------------------------------------------------------------------------------------


@pytest.fixture
def cpu_without_amx(monkeypatch):
    """The CPU "sdpa" runs eagerly on in bfloat16 (AVX-512 bf16, no AMX), whatever CPU runs the test."""
    monkeypatch.setattr(cpu_optimization, "CPU_BF16_DOT_PRODUCT_UNITS", "avx512")


@pytest.fixture
def cpu_with_amx(monkeypatch):
    """A CPU with AMX tiles, on which "sdpa" in bfloat16 runs eagerly for short training only."""
    monkeypatch.setattr(cpu_optimization, "CPU_BF16_DOT_PRODUCT_UNITS", "amx")


def padded_causal_attention(dtype):
    hidden = torch.randn(3, 6, 16).to(dtype)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, :2] = False  # under the causal mask its first two queries see no key at all
    mask[1, 4:] = False
    attention = optimize_for_cpu(MultiHeadAttention(16, 4, is_causal=True).to(dtype))
    return attention, hidden, mask


def test_bf16_sdpa_runs_eagerly_where_the_cpu_flash_kernel_is_slower(cpu_without_amx):
    attention, hidden, mask = padded_causal_attention(torch.bfloat16)
    assert attention.attn_implementation == ATTENTION_IMPLEMENTATION
    with torch.no_grad():
        counts = kernel_counts(lambda: attention(hidden, attention_mask=mask))
        routed = attention(hidden, attention_mask=mask)[0]
        attention.attn_implementation = "eager"
        eager = attention(hidden, attention_mask=mask)[0]
    assert FLASH_KERNEL not in counts and counts["aten::_softmax"] == 1
    torch.testing.assert_close(routed, eager, atol=2**-7, rtol=2**-6)  # both bf16: the scores rounded differently
    assert routed[0, :2].abs().max() == 0 and routed[1, 4:].abs().max() == 0 and not routed.isnan().any()
    float_attention, _, _ = padded_causal_attention(torch.float32)
    float_attention.load_state_dict(attention.state_dict())
    with torch.no_grad():
        expected = float_attention(hidden.float(), attention_mask=mask)[0]
    torch.testing.assert_close(routed.float(), expected, atol=2e-2, rtol=2e-2)


def test_bf16_sdpa_trains_eagerly_with_gradients_as_close_to_float64_as_eager_s(cpu_without_amx):
    attention, hidden, mask = padded_causal_attention(torch.bfloat16)
    gradients = {}
    for implementation in (ATTENTION_IMPLEMENTATION, "eager"):
        attention.attn_implementation = implementation
        attention.zero_grad()
        attention(hidden, attention_mask=mask)[0].float().square().sum().backward()
        gradients[implementation] = attention.q_proj.weight.grad.double()
    exact = copy.deepcopy(attention).double()
    exact.attn_implementation = "eager"
    exact(hidden.double(), attention_mask=mask)[0].square().sum().backward()
    errors = {name: (grad - exact.q_proj.weight.grad).abs().max() for name, grad in gradients.items()}
    assert exact.q_proj.weight.grad.abs().max() > 0
    assert errors[ATTENTION_IMPLEMENTATION] <= 2 * errors["eager"] + 2**-8 * exact.q_proj.weight.grad.abs().max()


def test_sdpa_keeps_pytorch_s_kernels_where_eager_attention_does_not_win(cpu_without_amx, monkeypatch):
    query = key = torch.randn(2, 4, 8, 16, dtype=torch.bfloat16)
    outruns = cpu_optimization._eager_outruns_cpu_sdpa
    assert outruns(query, key, key)
    assert not outruns(query.half(), key.half(), key.half()) and not outruns(query.float(), key.float(), key.float())
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # the user asked for PyTorch's flash kernel only
        assert not outruns(query, key, key)
        output, _ = cpu_optimization.cpu_attention_forward(
            nn.Module(), query, key, key, None, scaling=0.25, is_causal=False
        )
        expected = nn.functional.scaled_dot_product_attention(query, key, key, scale=0.25).transpose(1, 2)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):
        assert outruns(query, key, key)
    assert torch.equal(output, expected)
    side = int(cpu_optimization.EAGER_SCORES_LIMIT**0.5) + 1  # one (side x side) score matrix over the limit
    long_query = torch.empty(1, 1, side, 1, dtype=torch.bfloat16)
    assert not outruns(long_query, long_query, long_query)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not outruns(query, key, key)


def test_with_amx_only_short_bf16_training_runs_eagerly(cpu_with_amx):
    outruns = cpu_optimization._eager_outruns_cpu_sdpa
    frozen = torch.randn(2, 4, 8, 16, dtype=torch.bfloat16)
    trained = frozen.clone().requires_grad_()
    assert not outruns(frozen, frozen, frozen)  # inference: the kernel runs on the tiles
    assert outruns(frozen, frozen, trained)  # a gradient to any of the three: its backward is slow
    with torch.no_grad():
        assert not outruns(trained, trained, trained)
    limit = cpu_optimization.AMX_EAGER_TRAINING_MAX_KEYS
    keys = torch.empty(1, 1, limit, 1, dtype=torch.bfloat16, requires_grad=True)
    assert outruns(keys[..., :1, :], keys, keys)
    more_keys = torch.empty(1, 1, limit + 1, 1, dtype=torch.bfloat16, requires_grad=True)
    assert not outruns(more_keys[..., :1, :], more_keys, more_keys)
    rows = cpu_optimization.AMX_EAGER_TRAINING_MAX_SCORES // limit + 1  # queries x keys just over the score limit
    many_queries = torch.empty(1, 1, rows, 1, dtype=torch.bfloat16, requires_grad=True)
    assert not outruns(many_queries, keys, keys)


def test_bf16_sdpa_trains_eagerly_with_amx_and_infers_on_the_kernel(cpu_with_amx):
    attention, hidden, mask = padded_causal_attention(torch.bfloat16)
    counts = kernel_counts(lambda: attention(hidden, attention_mask=mask)[0].float().sum().backward())
    assert FLASH_KERNEL not in counts and counts["aten::_softmax"] == 1
    assert attention.q_proj.weight.grad.abs().max() > 0
    with torch.no_grad():
        counts = kernel_counts(lambda: attention(hidden, attention_mask=mask))
    assert counts[FLASH_KERNEL] == 1


def test_fp16_sdpa_without_fp16_kernels_runs_the_flash_kernel_on_float32_operands(no_half_precision_kernels):
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 4, 7, 8, dtype=torch.float16) for _ in range(3))
    padding = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    mask = build_attention_mask(
        ATTENTION_IMPLEMENTATION, query.transpose(1, 2), key_padding_mask=padding, query_padding_mask=padding
    )
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as trace:
        output, _ = dot_product_attention(
            nn.Module(), query, key, value, mask, ATTENTION_IMPLEMENTATION, scaling=8**-0.5
        )
    flash = [event for event in trace.events() if event.name == FLASH_KERNEL]
    assert flash and all(event.input_dtypes[:3] == ["float"] * 3 for event in flash)
    keeps = mask.key_keeps[:, None, :, None]
    upcast = (query.float(), torch.where(keeps, key, 0.0).float(), torch.where(keeps, value, 0.0).float())
    kept = nn.functional.scaled_dot_product_attention(*upcast, attn_mask=mask.backend_mask).transpose(1, 2)
    expected = torch.where(mask.query_keeps[:, :, None, None], kept, 0.0).half()  # rounded once, padding zeroed
    assert output.dtype == torch.float16 and torch.equal(output, expected)


def test_the_cpu_softmax_overwrites_scores_only_where_no_gradient_flows():
    scores = (torch.randn(4, 9, 9) * 6).to(torch.bfloat16)
    expected = torch.softmax(scores.float(), dim=-1)
    with torch.no_grad():
        buffer = scores.clone()
        probs = cpu_optimization._softmax_of_scores(buffer, torch.bfloat16)
    assert probs.data_ptr() == buffer.data_ptr()
    torch.testing.assert_close(probs.float(), expected, rtol=2**-7, atol=1e-30)  # one bf16 rounding
    trained = scores.clone().requires_grad_()
    trained_probs = cpu_optimization._softmax_of_scores(trained, torch.bfloat16)
    assert trained_probs.data_ptr() != trained.data_ptr() and trained_probs.grad_fn is not None
    assert torch.equal(trained_probs, probs)  # training and inference share one kernel, so one forward


def test_bf16_training_softmax_keeps_no_float32_copy_and_its_gradient_is_a_bf16_one():
    scores = (torch.randn(6, 33, 33, dtype=torch.float64) * 4).to(torch.bfloat16).requires_grad_()
    output_gradient = torch.randn(6, 33, 33).to(torch.bfloat16)
    softmax = cpu_optimization._softmax_of_scores
    counts = kernel_counts(lambda: softmax(scores, torch.bfloat16).backward(output_gradient))
    assert "aten::_to_copy" not in counts and counts["aten::_softmax_backward_data"] == 1
    exact = scores.detach().double().requires_grad_()
    torch.softmax(exact, dim=-1).backward(output_gradient.double())
    largest = exact.grad.abs().max()
    torch.testing.assert_close(scores.grad.double(), exact.grad, rtol=0, atol=2**-6 * largest)  # bf16 roundings
