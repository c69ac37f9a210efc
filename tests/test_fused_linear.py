"""Linear layers on their fastest kernels (fused_linear): fused with their activation, the same numbers as the modules,
the fused kernel only where it has a backward and nothing wraps the layers, and aten's own errors for bad shapes; half
precision on float32 kernels where the CPU has none for it, with a half-precision kernel's arithmetic."""

import warnings

import pytest
import torch
from conftest import simulate_a_cpu_without_half_precision_kernels
from torch import nn
from torch.profiler import ProfilerActivity, profile
from transformers.activations import ACT2FN

from hf_attention import VisionTransformerConfig, VisionTransformerForImageClassification, fused_linear
from hf_attention.attention import dot_product_attention
from hf_attention.fused_linear import (
    HAS_ONEDNN_BF16_LINEAR,
    RoutedConv2d,
    RoutedLinear,
    _onednn_applies,
    apply_linear,
    feed_forward,
    float32_compute_dtype,
    matmul,
)
from hf_attention.masks import build_attention_mask

ACTIVATIONS = ["gelu", "gelu_pytorch_tanh", "relu", "silu", "quick_gelu", "tanh", "torch_gelu_tanh", "torch_silu"]
TORCH_ACTIVATIONS = {"torch_gelu_tanh": lambda: nn.GELU(approximate="tanh"), "torch_silu": nn.SiLU}


def layers(activation: str, width: int = 24, hidden: int = 96):
    torch.manual_seed(0)
    act = TORCH_ACTIVATIONS[activation]() if activation in TORCH_ACTIVATIONS else ACT2FN[activation]
    return nn.Linear(width, hidden), act, nn.Linear(hidden, width)


@pytest.fixture
def half_precision_kernels(monkeypatch):
    """Half precision as aten and oneDNN run it, on any CPU: the float32 route is off."""
    monkeypatch.setattr(fused_linear, "CPU_HAS_HALF_KERNELS", {torch.bfloat16: True, torch.float16: True})


def bf16_layers(activation: str):
    fc_in, act, fc_out = layers(activation)
    return fc_in.to(torch.bfloat16), act, fc_out.to(torch.bfloat16)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(3, 7, 24), (5, 24), (0, 24)])
def test_bf16_inference_stays_as_close_to_float32_as_the_modules_do(activation, shape):
    """On a CPU with oneDNN bf16 kernels this runs the fused kernel; elsewhere aten's path. Either way the error
    against the float32 modules is at most that of the unfused bf16 modules, plus one bf16 rounding."""
    fc_in, act, fc_out = layers(activation)
    hidden = torch.randn(shape)
    expected = fc_out(act(fc_in(hidden)))
    fc_in, fc_out = fc_in.to(torch.bfloat16), fc_out.to(torch.bfloat16)
    with torch.no_grad():
        got = feed_forward(hidden.bfloat16(), fc_in, act, fc_out)
        unfused = fc_out(act(fc_in(hidden.bfloat16())))
    assert got.shape == shape and got.dtype == torch.bfloat16
    if not got.numel():
        return
    error, unfused_error = (got.float() - expected).abs().max(), (unfused.float() - expected).abs().max()
    assert error <= unfused_error + 2**-7 * expected.abs().max(), (float(error), float(unfused_error))


@pytest.mark.parametrize("activation", ["gelu", "quick_gelu"])
def test_bf16_training_goes_through_aten_and_gets_its_gradients(activation, half_precision_kernels):
    fc_in, act, fc_out = bf16_layers(activation)
    hidden = torch.randn(4, 24, dtype=torch.bfloat16, requires_grad=True)
    assert not _onednn_applies(hidden, fc_in)
    got = feed_forward(hidden, fc_in, act, fc_out)
    if activation == "gelu":  # the plain path is the modules themselves, to the bit
        assert torch.equal(got, fc_out(act(fc_in(hidden))))
    grads = torch.autograd.grad(got.float().sum(), [hidden, fc_in.weight])
    inner = fc_in(hidden).float()
    reference = fc_out.float()(ACT2FN[activation](inner)).sum()
    expected = torch.autograd.grad(reference, [hidden, fc_in.weight])
    for grad, expected_grad in zip(grads, expected, strict=True):
        torch.testing.assert_close(grad.float(), expected_grad.float(), atol=0.1, rtol=5e-2)


def test_the_fused_kernel_is_taken_only_for_bf16_inference_through_plain_layers():
    layer = nn.Linear(24, 8).to(torch.bfloat16)
    rows = torch.randn(5, 24, dtype=torch.bfloat16)
    with torch.no_grad():
        assert _onednn_applies(rows, layer) == HAS_ONEDNN_BF16_LINEAR
        assert not _onednn_applies(rows.float(), layer.float()), "float32 keeps aten's (MKL) matmul"
        assert not _onednn_applies(torch.randn(5, 23, dtype=torch.bfloat16), layer), "wrong width: aten's error"
        assert not _onednn_applies(rows, layer, nn.Linear(9, 4).to(torch.bfloat16)), "widths that do not chain"
        handle = layer.register_forward_hook(lambda module, inputs, output: output)
        assert not _onednn_applies(rows, layer), "a hook (an adapter) is honoured"
        handle.remove()
        layer.forward = lambda x: x
        assert not _onednn_applies(rows, layer), "a replaced forward (accelerate) is honoured"
    assert not _onednn_applies(rows, nn.Linear(24, 8).to(torch.bfloat16)), "weights that need a gradient"
    with torch.inference_mode():
        assert _onednn_applies(rows, nn.Linear(24, 8).to(torch.bfloat16)) == HAS_ONEDNN_BF16_LINEAR


def test_wrapped_layers_and_activations_run_as_they_are_in_bf16_inference():
    fc_in, act, fc_out = bf16_layers("gelu")
    hidden = torch.randn(6, 24, dtype=torch.bfloat16)
    with torch.no_grad():
        plain = feed_forward(hidden, fc_in, act, fc_out)
        handle = fc_in.register_forward_hook(lambda module, inputs, output: output + 1.0)
        torch.testing.assert_close(feed_forward(hidden, fc_in, act, fc_out), fc_out(act(fc_in(hidden))))
        handle.remove()
        act.forward = lambda x: torch.zeros_like(x)  # as a hub kernel replacing the activation would
        torch.testing.assert_close(feed_forward(hidden, fc_in, act, fc_out), fc_out.bias.expand_as(plain))


def test_a_trainable_bias_of_a_frozen_weight_still_gets_its_gradient_in_bf16():
    for activation in ("gelu", "quick_gelu"):  # BitFit: only the biases train
        fc_in, act, fc_out = bf16_layers(activation)
        fc_in.weight.requires_grad_(False)
        fc_out.weight.requires_grad_(False)
        assert not _onednn_applies(torch.randn(2, 24, dtype=torch.bfloat16), fc_in, fc_out)
        feed_forward(torch.randn(5, 24, dtype=torch.bfloat16), fc_in, act, fc_out).float().sum().backward()
        assert fc_in.bias.grad is not None and fc_in.bias.grad.abs().sum() > 0, activation


def test_weights_that_are_not_plain_cpu_bf16_tensors_go_through_aten():
    rows = torch.randn(5, 24, dtype=torch.bfloat16)
    with torch.no_grad():
        meta = nn.Linear(24, 8, device="meta", dtype=torch.bfloat16)
        assert not _onednn_applies(rows, meta)
        with pytest.raises(RuntimeError, match="Tensor on device meta is not on the expected device cpu"):
            apply_linear(rows, meta)
        mixed = nn.Linear(24, 8).to(torch.bfloat16)
        mixed.bias.data = mixed.bias.data.float()  # aten refuses a float32 bias next to bf16 weights; so do we
        assert not _onednn_applies(rows, mixed)
        with warnings.catch_warnings():  # leaving the context restores oneDNN's TF32 flag, which warns on CPU builds
            warnings.simplefilter("ignore", UserWarning)
            with torch.backends.mkldnn.flags(enabled=False):
                assert not _onednn_applies(rows, nn.Linear(24, 8).to(torch.bfloat16))


def test_a_backward_hook_or_a_patched_forward_runs_as_on_an_nn_linear(monkeypatch):
    layer = RoutedLinear(8, 4)
    hidden = torch.randn(3, 8, requires_grad=True)
    seen = []
    handle = layer.register_full_backward_hook(lambda module, grad_in, grad_out: seen.append(grad_out[0].shape))
    apply_linear(hidden, layer).sum().backward()
    handle.remove()
    assert seen == [(3, 4)], "the layer's backward hook fires"
    handle = nn.modules.module.register_module_full_backward_hook(lambda module, grad_in, grad_out: seen.append(module))
    apply_linear(hidden, layer).sum().backward()
    handle.remove()
    assert seen[1:] == [layer], "a global backward hook sees the layer"
    monkeypatch.setattr(RoutedLinear, "forward", lambda self, input: input[..., :4] * 0)
    assert torch.equal(apply_linear(hidden, layer), torch.zeros(3, 4)), "a patched class's forward runs"


def test_activations_that_are_hooked_or_subclassed_run_as_they_are_in_bf16_inference(half_precision_kernels):
    fc_in, act, fc_out = bf16_layers("gelu")
    hidden = torch.randn(6, 24, dtype=torch.bfloat16)
    seen = []
    with torch.no_grad():
        handle = act.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
        feed_forward(hidden, fc_in, act, fc_out)
        handle.remove()
        assert seen == [torch.Size([6, 96])], "the probe on the activation fired"

        class ClampedGELU(type(act)):
            def forward(self, input):
                return super().forward(input).clamp(max=0.1)

        got = feed_forward(hidden, fc_in, ClampedGELU(), fc_out)
        torch.testing.assert_close(got, fc_out(act(fc_in(hidden)).clamp(max=0.1)))
        calls = []
        handle = nn.modules.module.register_module_forward_hook(lambda module, inputs, output: calls.append(module))
        try:
            feed_forward(hidden, fc_in, act, fc_out)
        finally:
            handle.remove()
        assert calls == [fc_in, act, fc_out], "a global hook sees every module"


def test_a_wrong_width_in_bf16_inference_gets_aten_s_message():
    with (
        torch.no_grad(),
        pytest.raises(RuntimeError, match=r"mat1 and mat2 shapes cannot be multiplied \(3x8 and 16x4"),
    ):
        apply_linear(torch.randn(3, 8, dtype=torch.bfloat16), nn.Linear(16, 4).to(torch.bfloat16), nn.GELU())


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


@pytest.mark.skipif(
    not HAS_ONEDNN_BF16_LINEAR, reason="this CPU has no oneDNN bf16 kernels (needs AVX-512 bf16 or AMX)"
)
def test_a_bf16_vit_runs_its_linear_layers_through_onednn_in_inference_only():
    model = tiny_vit().to(torch.bfloat16).eval()
    config = model.config
    pixels = torch.randn(2, 3, 32, 32, dtype=torch.bfloat16)

    def kernels(step) -> dict[str, int]:
        with profile(activities=[ProfilerActivity.CPU]) as trace:
            step()
        return {event.key: event.count for event in trace.key_averages()}

    with torch.inference_mode():
        inference = kernels(lambda: model(pixel_values=pixels))
    training = kernels(lambda: model(pixel_values=pixels).logits.float().sum().backward())
    # per layer: the fused QKV, the output projection, fc1 with its GELU, fc2; the classifier on top
    assert inference.get("mkldnn::_linear_pointwise") == 4 * config.num_hidden_layers + 1
    assert "aten::gelu" not in inference
    assert "mkldnn::_linear_pointwise" not in training and training["aten::gelu"] == config.num_hidden_layers


def within_one_rounding(got: torch.Tensor, exact: torch.Tensor) -> bool:
    """Each entry of `got` is one of the two `got.dtype` numbers around the float64 `exact` one."""
    spacing = torch.finfo(got.dtype).eps * exact.abs().clamp(min=torch.finfo(got.dtype).tiny)  # the gap around it
    return bool(((got.double() - exact).abs() <= spacing).all())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_without_its_kernels_is_one_rounding_of_the_exact_result(dtype, no_half_precision_kernels):
    fc_in, act, fc_out = (module.to(dtype) if isinstance(module, nn.Linear) else module for module in layers("gelu"))
    hidden = torch.randn(3, 7, 24).to(dtype)
    assert float32_compute_dtype(hidden, fc_in.weight, fc_in.bias) == dtype
    with torch.no_grad():
        got = apply_linear(hidden, fc_in, act)
        exact = nn.functional.gelu(nn.functional.linear(hidden.double(), fc_in.weight.double(), fc_in.bias.double()))
        assert got.dtype == dtype and within_one_rounding(got, exact), "the GELU runs before the one rounding"
        upcast = nn.functional.linear(hidden.float(), fc_in.weight.float(), fc_in.bias.float())
        assert torch.equal(got, act(upcast).to(dtype))
        two_layers = feed_forward(hidden, fc_in, act, fc_out)
        assert torch.equal(two_layers, apply_linear(got, fc_out))


def test_autocast_without_bf16_kernels_rounds_the_operands_as_autocast_does(no_half_precision_kernels):
    layer = nn.Linear(24, 16)
    hidden = torch.randn(5, 24, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert float32_compute_dtype(hidden, layer.weight, layer.bias) == torch.bfloat16
        got = apply_linear(hidden, layer)
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
    fc_in, act, fc_out = bf16_layers("quick_gelu")
    hidden = torch.randn(6, 24, dtype=torch.bfloat16, requires_grad=True)
    got = feed_forward(hidden, fc_in, act, fc_out)
    parameters = [hidden, fc_in.weight, fc_out.bias]
    grads = torch.autograd.grad(got.float().sum(), parameters)
    exact_layers = [module.double() if isinstance(module, nn.Linear) else module for module in layers("quick_gelu")]
    exact_layers[0].load_state_dict(fc_in.state_dict())
    exact_layers[2].load_state_dict(fc_out.state_dict())
    exact_hidden = hidden.detach().double().requires_grad_()
    exact_fc_in, exact_act, exact_fc_out = exact_layers
    exact = exact_fc_out(exact_act(exact_fc_in(exact_hidden)))
    torch.testing.assert_close(got.double(), exact, rtol=2**-6, atol=2**-7)  # two roundings: fc1's, fc2's
    expected = torch.autograd.grad(exact.sum(), [exact_hidden, exact_fc_in.weight, exact_fc_out.bias])
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
    stack = nn.Sequential(*[RoutedLinear(256, 256) for _ in range(3)]).to(dtype)
    hidden = torch.randn(2, 32, 256, dtype=dtype, requires_grad=True)  # 3-D: the backward needs views rebuilt
    output_bytes = 3 * hidden.numel() * hidden.element_size()
    kept, output = kept_after(lambda: stack(hidden))
    assert kept <= 1.5 * output_bytes  # the layers' outputs, each the next layer's saved input
    grads = torch.autograd.grad(output.float().square().sum(), [hidden, *stack.parameters()])
    checkpointed, _ = kept_after(lambda: torch.utils.checkpoint.checkpoint(stack, hidden, use_reentrant=False))
    assert checkpointed <= 0.5 * output_bytes  # checkpointing's hooks decide: only the last output is left
    monkeypatch.setattr(fused_linear, "_keeps_tensors_for_backward", lambda tensors: False)
    kept_with_copies, output_with_copies = kept_after(lambda: stack(hidden))
    grads_with_copies = torch.autograd.grad(output_with_copies.float().square().sum(), [hidden, *stack.parameters()])
    assert kept_with_copies >= kept + 3 * 256 * 256 * 4  # at least each layer's float32 weight
    for grad, grad_with_copies in zip(grads, grads_with_copies, strict=True):
        assert grad.dtype == dtype
        torch.testing.assert_close(grad, grad_with_copies, rtol=0, atol=0)


def test_a_half_operand_changed_in_place_before_the_backward_is_refused(no_half_precision_kernels):
    layer = RoutedLinear(16, 16).half()
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
    layer, conv = RoutedLinear(16, 16).half(), RoutedConv2d(2, 2, kernel_size=3, padding=1).half()
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


def test_convolutions_and_matmuls_without_half_kernels_are_one_rounding_of_the_exact_result(
    no_half_precision_kernels,
):
    conv = RoutedConv2d(3, 8, kernel_size=4, stride=4).to(torch.bfloat16)
    pixels = torch.randn(2, 3, 16, 16, dtype=torch.bfloat16)
    queries, keys = torch.randn(2, 3, 5, 8, dtype=torch.bfloat16), torch.randn(2, 3, 8, 6, dtype=torch.bfloat16)
    with torch.no_grad():
        exact_conv = nn.functional.conv2d(pixels.double(), conv.weight.double(), conv.bias.double(), stride=4)
        assert within_one_rounding(conv(pixels), exact_conv)
        assert within_one_rounding(matmul(queries, keys), queries.double() @ keys.double())
        seen = []
        handle = conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
        assert within_one_rounding(conv(pixels), exact_conv) and seen == [torch.bfloat16], (
            "hooks see nn.Conv2d's output"
        )
        handle.remove()
    assert conv.state_dict().keys() == nn.Conv2d(3, 8, 4).state_dict().keys()


def test_fp16_sdpa_without_fp16_kernels_runs_the_flash_kernel_on_float32_operands(no_half_precision_kernels):
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 4, 7, 8, dtype=torch.float16) for _ in range(3))
    padding = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    mask = build_attention_mask("sdpa", query.transpose(1, 2), key_padding_mask=padding, query_padding_mask=padding)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as trace:
        output, _ = dot_product_attention(nn.Module(), query, key, value, mask, "sdpa", scaling=8**-0.5)
    flash = [event for event in trace.events() if event.name == "aten::_scaled_dot_product_flash_attention_for_cpu"]
    assert flash and all(event.input_dtypes[:3] == ["float"] * 3 for event in flash)
    upcast = (tensor.float() for tensor in (query, key, value))
    kept = nn.functional.scaled_dot_product_attention(*upcast, attn_mask=mask.backend_mask).transpose(1, 2)
    expected = torch.where(mask.query_keeps[:, :, None, None], kept, 0.0).half()  # rounded once, padding zeroed
    assert output.dtype == torch.float16 and torch.equal(output, expected)


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
        apply_linear(torch.randn(3, 8, dtype=torch.bfloat16), nn.Linear(16, 4).to(torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_head_that_is_no_linear_layer_runs_as_it_is(dtype, no_half_precision_kernels):
    config = tiny_vit().config
    config.num_labels = 0  # the classifier is nn.Identity: logits are the pooled features
    model = VisionTransformerForImageClassification(config).to(dtype).eval()
    with torch.no_grad():
        outputs = model(pixel_values=torch.randn(2, 3, 32, 32, dtype=dtype), output_hidden_states=True)
        pooled = model.vit.layernorm(outputs.hidden_states[-1])[:, 0]
        torch.testing.assert_close(outputs.logits, pooled, rtol=0, atol=0)
        hidden = torch.randn(3, 8, dtype=dtype)
        head = nn.Sequential(nn.Linear(8, 4)).to(dtype)
        torch.testing.assert_close(apply_linear(hidden, head), head(hidden), rtol=0, atol=0)


def test_a_matmul_with_too_few_multiply_adds_to_repay_the_conversion_stays_on_atens_emulation(monkeypatch):
    shipped = fused_linear.MIN_MULTIPLY_ADDS_PER_ELEMENT
    simulate_a_cpu_without_half_precision_kernels(monkeypatch)
    monkeypatch.setattr(fused_linear, "MIN_MULTIPLY_ADDS_PER_ELEMENT", shipped)
    torch.manual_seed(0)
    layer = RoutedLinear(64, 256).half()
    calls = {
        "one row": lambda: layer(torch.randn(1, 64).half()),  # 64 x 256 multiply-adds for 64 x 257 elements
        "64 rows": lambda: layer(torch.randn(4, 16, 64).half()),
        "one row, apply_linear": lambda: apply_linear(torch.randn(1, 64).half(), layer),
        "64 rows, apply_linear": lambda: apply_linear(torch.randn(64, 64).half(), layer),
        "5 x 8 by 8 x 6": lambda: matmul(torch.randn(2, 5, 8).half(), torch.randn(2, 8, 6).half()),
        "64 x 64 by 64 x 64": lambda: matmul(torch.randn(3, 64, 64).half(), torch.randn(64, 64).half()),
    }
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
        "one row, apply_linear": emulated,
        "64 rows, apply_linear": upcast,
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
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as trace:
            routed = model(pixel_values=pixels.bfloat16()).logits.double()
    products = {"aten::mm", "aten::addmm", "aten::bmm", "aten::convolution"}
    seen = {(event.name, event.input_dtypes[0]) for event in trace.events() if event.name in products}
    expected = {"aten::addmm", "aten::convolution"} | ({"aten::bmm"} if attn_implementation == "eager" else set())
    assert seen == {(name, "float") for name in expected}, seen
    # as close to float64 as aten's own bf16 path (closer: the GELU runs before its rounding)
    assert (routed - exact).abs().max() <= 1.5 * (aten - exact).abs().max() + 1e-3


def test_the_float32_route_compiles_into_one_graph(no_half_precision_kernels):
    torch.manual_seed(0)
    model = tiny_vit(attn_implementation="eager").to(torch.bfloat16).eval()
    pixels = torch.randn(2, 3, 32, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")(pixel_values=pixels).logits
    torch.testing.assert_close(compiled, expected, rtol=2**-7, atol=2**-7)
