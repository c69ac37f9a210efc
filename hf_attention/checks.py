"""Argument and input checks shared by configurations, modules and models, each raising with the reason.

Torch-free on purpose: every configuration imports this file, and a pushed configuration ships it. The tensor
checks only call tensor methods, so they need no `import torch` either.
"""

import sys
from collections.abc import Iterable

INTEGER_DTYPE_NAMES = ("uint8", "int8", "int16", "int32", "int64")


def check_positive(name: str, value) -> None:
    """Raise unless `value` (when not None) is a positive number."""
    if value is not None and not value > 0:
        raise ValueError(f"`{name}` must be positive, got {value}.")


def check_non_negative(name: str, value) -> None:
    if value is not None and not value >= 0:
        raise ValueError(f"`{name}` must be >= 0, got {value}.")


def check_probability(name: str, value: float) -> None:
    """Raise unless `value` is a probability that dropout can use: 0 <= value < 1."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1), got {value}.")


def check_choice(name: str, value, choices: Iterable) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


def check_attention_shape(hidden_size: int, num_heads: int, head_dim: int | None = None) -> None:
    """Raise when `hidden_size` cannot be split into `num_heads` heads (unless `head_dim` is explicit)."""
    if hidden_size <= 0 or num_heads <= 0:
        raise ValueError(f"hidden size and number of heads must be positive, got {hidden_size} and {num_heads}.")
    if head_dim is None and hidden_size % num_heads != 0:
        raise ValueError(
            f"The hidden size ({hidden_size}) is not a multiple of the number of attention heads ({num_heads})."
        )
    if head_dim is not None and head_dim <= 0:
        raise ValueError(f"`head_dim` must be positive, got {head_dim}.")


# --- tensors ------------------------------------------------------------------------------------------------------


def _dtype_name(tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def check_float_input(name: str, tensor, expected_layout: str, hint: str = "") -> None:
    """Raise unless `tensor` holds floating-point values (integers and bools are refused, not cast)."""
    if not tensor.is_floating_point():
        raise TypeError(
            f"`{name}` must be a floating-point tensor {expected_layout}, got dtype {_dtype_name(tensor)}.{hint}"
        )


def check_rank(name: str, tensor, rank: int, expected_layout: str) -> None:
    if tensor.dim() != rank:
        raise ValueError(f"`{name}` must have shape {expected_layout}, got {tuple(tensor.shape)}.")


def check_pixel_values(
    pixel_values, num_channels: int, layout: str = "(batch, channels, height, width)", name: str = "pixel_values"
) -> None:
    """Rank, channels (the axis after the batch and, for videos, frames), float dtype and non-empty images."""
    if pixel_values is None:
        raise ValueError(f"`{name}` is required: a float tensor {layout}.")
    rank = len(layout.strip("()").split(","))
    check_rank(name, pixel_values, rank, layout)
    check_float_input(
        name,
        pixel_values,
        layout,
        " Integer pixels (e.g. uint8 0-255) must go through the model's image processor first, which rescales and "
        "normalises them.",
    )
    channels, height, width = pixel_values.shape[-3:]
    if channels != num_channels:
        raise ValueError(f"`{name}` have {channels} channels but the model expects num_channels={num_channels}.")
    if height == 0 or width == 0:
        raise ValueError(f"`{name}` hold empty images ({height}x{width}); expected images of positive size.")


def check_input_ids(input_ids, vocab_size: int, name: str = "input_ids") -> None:
    """Integer token ids of shape (batch, length), every id inside the vocabulary."""
    if input_ids.is_floating_point() or _dtype_name(input_ids) not in INTEGER_DTYPE_NAMES:
        raise TypeError(f"`{name}` must be an integer tensor of token ids, got dtype {_dtype_name(input_ids)}.")
    check_rank(name, input_ids, 2, "(batch, length)")
    if input_ids.numel() and not is_compiling():
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(f"`{name}` must lie in [0, {vocab_size}), got ids from {low} to {high}.")


def check_feature_map(hidden_states, channels: int, block: str, name: str = "hidden_states") -> None:
    """Raise unless `hidden_states` is a float (batch, channels, height, width) feature map with positive sizes."""
    layout = f"(batch, {channels}, height, width)"
    if not hasattr(hidden_states, "dim"):  # a tensor, without importing torch
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


def is_compiling() -> bool:
    """Whether torch.compile is tracing (data-dependent checks would break the graph), without importing torch."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.compiler.is_compiling()
