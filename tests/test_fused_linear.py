"""Linear layers fused with their activation (fused_linear): the same numbers as the modules, the fused kernel only
where it has a backward and nothing wraps the layers, and aten's own errors for bad shapes."""

import warnings

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from transformers.activations import ACT2FN

from hf_attention import VisionTransformerConfig, VisionTransformerForImageClassification
from hf_attention.fused_linear import _has_onednn_bf16, _onednn_applies, apply_linear, feed_forward

ONEDNN_BF16 = _has_onednn_bf16()
ACTIVATIONS = ["gelu", "gelu_pytorch_tanh", "relu", "silu", "quick_gelu", "tanh", "torch_gelu_tanh", "torch_silu"]
TORCH_ACTIVATIONS = {"torch_gelu_tanh": lambda: nn.GELU(approximate="tanh"), "torch_silu": nn.SiLU}


def layers(activation: str, width: int = 24, hidden: int = 96):
    torch.manual_seed(0)
    act = TORCH_ACTIVATIONS[activation]() if activation in TORCH_ACTIVATIONS else ACT2FN[activation]
    return nn.Linear(width, hidden), act, nn.Linear(hidden, width)


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
def test_bf16_training_goes_through_aten_and_gets_its_gradients(activation):
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
        assert _onednn_applies(rows, layer) == ONEDNN_BF16
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
        assert _onednn_applies(rows, nn.Linear(24, 8).to(torch.bfloat16)) == ONEDNN_BF16


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


def test_activations_that_are_hooked_or_subclassed_run_as_they_are_in_bf16_inference():
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


@pytest.mark.skipif(not ONEDNN_BF16, reason="this CPU has no oneDNN bf16 kernels (needs AVX-512 bf16 or AMX)")
def test_a_bf16_vit_runs_its_linear_layers_through_onednn_in_inference_only():
    config = VisionTransformerConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
    )
    model = VisionTransformerForImageClassification(config).to(torch.bfloat16).eval()
    pixels = torch.randn(2, 3, 32, 32, dtype=torch.bfloat16)

    def kernels(step) -> dict[str, int]:
        with profile(activities=[ProfilerActivity.CPU]) as trace:
            step()
        return {event.key: event.count for event in trace.key_averages()}

    with torch.inference_mode():
        inference = kernels(lambda: model(pixel_values=pixels))
    training = kernels(lambda: model(pixel_values=pixels).logits.float().sum().backward())
    # per layer: the fused QKV, the output projection, fc1 with its GELU, fc2; the classifier on top
    assert inference.get("mkldnn::_linear_pointwise") == 4 * config.num_hidden_layers
    assert "aten::gelu" not in inference
    assert "mkldnn::_linear_pointwise" not in training and training["aten::gelu"] == config.num_hidden_layers
