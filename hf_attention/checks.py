"""Argument and input checks shared by configurations, modules and models, each raising with the reason.

Torch-free on purpose: every configuration imports this file, and a pushed configuration ships it. The tensor
checks only call tensor methods, so they need no `import torch` either.
"""

import inspect
import math
import operator
import sys
from collections.abc import Iterable
from difflib import get_close_matches

INTEGER_DTYPE_NAMES = ("uint8", "int8", "int16", "int32", "int64")


def check_positive(name: str, value) -> None:
    """Raise unless `value` (when not None) is a positive, finite number (NaN and inf are refused)."""
    if value is not None and not value > 0:
        raise ValueError(f"`{name}` must be positive, got {value}.")
    if value is not None and not math.isfinite(value):
        raise ValueError(f"`{name}` must be positive, got {value}; expected a finite number.")


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


def check_dtype_matches(name: str, tensor, module) -> None:
    """Raise TypeError when the float `tensor` has another dtype than `module`'s floating-point weights.

    A plain module does not cast (as torch's own layers do not), but torch's message ("mat1 and mat2 must have the
    same dtype") names neither the argument nor the fix. Skipped under autocast, which mixes dtypes on purpose, for
    modules with no float weights (quantized) and while torch.compile traces. Models cast their inputs instead.
    """
    if not tensor.is_floating_point() or is_compiling():
        return
    weight = next((parameter for parameter in module.parameters() if is_compute_float(parameter)), None)
    if weight is None or weight.dtype == tensor.dtype or sys.modules["torch"].is_autocast_enabled(tensor.device.type):
        return
    raise TypeError(
        f"`{name}` has dtype {_dtype_name(tensor)} but the weights of {type(module).__name__} are "
        f"{_dtype_name(weight)}: cast the input (`.to(torch.{_dtype_name(weight)})`) or the module "
        f"(`module.to(torch.{_dtype_name(tensor)})`)."
    )


def is_compute_float(tensor) -> bool:
    """A floating-point tensor a layer computes in: not a float8 (or packed float4) weight, which quantized layers
    store and dequantize themselves, as transformers' FP8 layers do."""
    return tensor.is_floating_point() and tensor.element_size() > 1


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


def check_position_ids(
    position_ids, batch_size: int, length: int, max_positions: int, name: str = "position_ids"
) -> None:
    """Integer positions of shape (batch or 1, length), every one in [0, max_positions): an embedding table of
    `max_positions` rows would otherwise fail with an IndexError that names neither number."""
    if position_ids.is_floating_point() or _dtype_name(position_ids) not in INTEGER_DTYPE_NAMES:
        raise TypeError(f"`{name}` must be an integer tensor of positions, got dtype {_dtype_name(position_ids)}.")
    shape = tuple(position_ids.shape)
    if shape != (length,) and (len(shape) != 2 or shape[0] not in (1, batch_size) or shape[1] != length):
        raise ValueError(
            f"`{name}` must have shape ({batch_size}, {length}), (1, {length}) or ({length},), got {shape}."
        )
    if position_ids.numel() and not is_compiling():
        low, high = int(position_ids.min()), int(position_ids.max())
        if low < 0 or high >= max_positions:
            raise ValueError(
                f"`{name}` must lie in [0, max_position_embeddings={max_positions}), got positions from {low} to "
                f"{high}."
            )


def check_feature_map(hidden_states, channels: int, block: str, name: str = "hidden_states", weights_of=None) -> None:
    """Raise unless `hidden_states` is a float (batch, channels, height, width) feature map with positive sizes (and,
    given the module `weights_of`, of its weights' dtype)."""
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
    if weights_of is not None:
        check_dtype_matches(name, hidden_states, weights_of)


def check_sizes(**sizes) -> None:
    """Raise for the first size (a width, a stride, a number of heads) that is not a positive integer; None means
    default. Bools and floats are refused: `True` would build a one-wide layer, 2.5 fails deep inside torch."""
    for name, value in sizes.items():
        _check_integer(name, value, "a positive integer")
        if value is not None and value <= 0:
            raise ValueError(f"`{name}` must be positive, got {value}.")


def check_counts(**counts) -> None:
    """Raise for the first count (of layers, of units) that is not an integer >= 0; None means default."""
    for name, value in counts.items():
        _check_integer(name, value, "an integer >= 0")
        if value is not None and value < 0:
            raise ValueError(f"`{name}` must be >= 0, got {value}.")


def _check_integer(name: str, value, expected: str) -> None:
    """Any integer (`int`, numpy's, a 0-d integer tensor: whatever `operator.index` takes), never a bool."""
    if value is None:
        return
    try:
        if isinstance(value, bool):
            raise TypeError
        operator.index(value)
    except TypeError:
        raise TypeError(f"`{name}` must be {expected}, got {value!r} ({type(value).__name__}).") from None


def check_reduction(reduction: int, channels: int, name: str = "reduction") -> None:
    """A reduction ratio r of a `channels`-wide layer: 1 <= r <= channels (a larger r would leave no channel)."""
    check_sizes(**{name: reduction})
    if reduction > channels:
        raise ValueError(
            f"`{name}` ({reduction}) is larger than the {channels} channels it divides; use at most {channels}."
        )


def reduced(channels: int, reduction: int) -> int:
    """Width of a bottleneck: channels // reduction, never less than one channel."""
    return max(1, channels // reduction)


def check_keywords(owner, kwargs: dict, accepted: Iterable[str]) -> None:
    """Raise TypeError for the keywords of `owner.forward(**kwargs)` that nothing reads.

    A module's `**kwargs` flow on to the attention function, and transformers' attention functions take `**kwargs`
    too, so a misspelt `attention_maks=mask` would be swallowed and padding attended. `accepted` are the keywords
    that may flow on (transformers' `TransformersKwargs`); any other is named, with its near-miss among
    `owner.forward`'s parameters and `accepted`.
    """
    unknown = sorted(set(kwargs) - set(accepted))
    if not unknown:
        return
    parameters = [
        name
        for name, parameter in inspect.signature(owner.forward).parameters.items()
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    raise TypeError(
        f"{type(owner).__name__}.forward() got unexpected keyword arguments: "
        f"{name_near_misses(unknown, [*parameters, *sorted(accepted)])}. It takes "
        f"{', '.join(parameters)}, and passes on to the attention function only {', '.join(sorted(accepted))}."
    )


def name_near_misses(unknown: Iterable[str], known: list[str]) -> str:
    """Each unknown name with its nearest known one: "`attention_maks` (did you mean `attention_mask`?), `foo`"."""
    reasons = []
    for name in unknown:
        close = get_close_matches(name, known, n=1)
        reasons.append(f"`{name}`" + (f" (did you mean `{close[0]}`?)" if close else ""))
    return ", ".join(reasons)


def is_compiling() -> bool:
    """Whether torch.compile is tracing (data-dependent checks would break the graph), without importing torch."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.compiler.is_compiling()
