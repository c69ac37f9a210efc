"""Helpers shared by the feature-map family tests (not a test file)."""

import torch

CHANNELS = 8


def identity_start_parameters(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters that start at zero so a fresh block is the identity: gammas, zero-initialised branch ends and
    the STN regressor's weight (biases, zero in most layers, are left out)."""
    return {
        name: parameter
        for name, parameter in module.named_parameters()
        if not name.endswith("bias") and parameter.numel() and not parameter.any()
    }


def leave_the_identity(module: torch.nn.Module) -> None:
    """Give the identity-start parameters non-zero values: the state after the first update, which tests check."""
    with torch.no_grad():
        for parameter in identity_start_parameters(module).values():
            parameter.normal_(0.0, 0.5)


def assert_fp16_stays_finite(module: torch.nn.Module, x: torch.Tensor) -> None:
    """Inputs x 1e4: float32 stays finite, and so does float16, because the scores are computed in float32."""
    module = module.eval()
    with torch.no_grad():
        reference = module(x)
        half = module.half()(x.half())
    assert torch.isfinite(reference).all() and reference.abs().max() < torch.finfo(torch.float16).max
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
