"""What every REGISTRY model does with each kind of bad input, measured: the table of docs/reference/bad-input.md.

`behaviour_table()` runs each kind on every model's `tiny()` config and `dummy_inputs` and writes what happened in
a cell: the exception type raised by hf_attention's own checks, or the result ("zeros", "cast", ...). An exception
raised deep inside torch is written as "deep <type>", so a regression shows in the table and fails
tests/test_bad_input.py. `python tests/bad_input_cases.py` rewrites the table in the page.
"""

import dataclasses
import inspect
import math
import re
import traceback
from pathlib import Path

import torch
from test_modeling_common import tensors_of
from transformers import PreTrainedConfig

from hf_attention import REGISTRY
from hf_attention.configuration_base import COUNT_FIELD, SIZE_FIELD

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "bad-input.md"
TABLE_START, TABLE_END = "<!-- bad-input-table:start -->", "<!-- bad-input-table:end -->"
MODELS = [(config, model_class) for config, base, heads in REGISTRY for model_class in (base, *heads.values())]
NOT_APPLICABLE = "n/a"


def raised(error: Exception) -> str:
    """The exception's type, unwrapped from `@strict`'s validation error, marked "deep" when no check of ours
    raised it (its last frame is outside hf_attention and huggingface_hub's validation)."""
    frame = traceback.extract_tb(error.__traceback__)[-1].filename
    ours = "/hf_attention/" in frame or "huggingface_hub" in frame
    if type(error).__name__.startswith("StrictDataclass") and error.__cause__ is not None:
        error = error.__cause__
    return type(error).__name__ if ours else f"deep {type(error).__name__}"


def outcome(run) -> str | list[torch.Tensor]:
    try:
        with torch.no_grad():
            return tensors_of(run())
    except Exception as error:  # noqa: BLE001 - the table records whatever is raised
        return raised(error)


def batch_tensors(inputs: dict, rows: slice) -> dict:
    batch_size = next(value.shape[0] for value in inputs.values() if isinstance(value, torch.Tensor))
    return {
        name: value[rows] if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == batch_size else value
        for name, value in inputs.items()
    }


def mask_name(inputs: dict) -> str | None:
    return next((name for name in inputs if name.endswith("mask")), None)


# --- the kinds --------------------------------------------------------------------------------------------------


def wrong_rank(model, inputs):
    main = model.main_input_name
    return outcome(lambda: model(**{**inputs, main: inputs[main][None]}))


def wrong_dtype(model, inputs):
    """A float input given as integers, or token ids given as floats."""
    main = model.main_input_name
    value = inputs[main]
    return outcome(lambda: model(**{**inputs, main: value.long() if value.is_floating_point() else value.float()}))


def float64_input(model, inputs):
    """Float inputs in float64 for a float32 model: "cast" when the output equals the float32 one."""
    reference = outcome(lambda: model(**inputs))
    doubled = {name: value.double() if torch.is_tensor(value) and value.is_floating_point() else value
               for name, value in inputs.items()}  # fmt: skip
    if not any(torch.is_tensor(value) and value.is_floating_point() for value in inputs.values()):
        return NOT_APPLICABLE
    result = outcome(lambda: model(**doubled))
    if isinstance(result, str):
        return result
    pairs = zip(result, reference, strict=True)
    close = all(torch.allclose(one.double(), two.double(), atol=1e-4) for one, two in pairs)
    return "cast" if close else "different result"


def bad_mask(model, inputs):
    """A padding mask of fractions (0.5) instead of 0/1."""
    name = mask_name(inputs)
    if name is None:
        return NOT_APPLICABLE
    return outcome(lambda: model(**{**inputs, name: torch.full_like(inputs[name], 0.5, dtype=torch.float)}))


def padding_only_row(model, inputs):
    """The first sample's mask all 0: "zeros" when its output is all zeros, "finite" when it is finite."""
    name = mask_name(inputs)
    if name is None:
        return NOT_APPLICABLE
    mask = inputs[name].clone()
    mask[0] = 0
    result = outcome(lambda: model(**{**inputs, name: mask}))
    if isinstance(result, str):
        return result
    first = result[0][0]
    if not torch.isfinite(first).all():
        return "NaN"
    return "zeros" if not first.any() else "finite"


def empty_batch(model, inputs):
    result = outcome(lambda: model(**batch_tensors(inputs, slice(0, 0))))
    if isinstance(result, str):
        return result
    return "empty output" if result[0].shape[0] == 0 else "non-empty output"


def misspelt_keyword(model, inputs):
    name = mask_name(inputs) or "attention_mask"
    result = outcome(lambda: model(**inputs, **{name.replace("mask", "maks"): torch.ones(1)}))
    return result if isinstance(result, str) else "ignored"


def labels_of(model, inputs, dtype=torch.long) -> torch.Tensor | None:
    if "labels" not in inspect.signature(type(model).forward).parameters:
        return None
    if "decoder_input_ids" in inputs:  # token labels, aligned with the decoder inputs
        return inputs["decoder_input_ids"].to(dtype)
    batch_size = inputs.get("pixel_values", inputs[model.main_input_name]).shape[0]  # a video-text model's batch
    return torch.arange(batch_size).remainder(model.config.num_labels).to(dtype)


def out_of_range_labels(model, inputs):
    labels = labels_of(model, inputs)
    if labels is None:
        return NOT_APPLICABLE
    return outcome(lambda: model(**inputs, labels=labels + 1000))


def int32_labels(model, inputs):
    """int32 class labels: "as int64" when the loss equals the int64 labels' loss."""
    labels = labels_of(model, inputs)
    if labels is None:
        return NOT_APPLICABLE
    torch.manual_seed(0)
    reference = outcome(lambda: model(**inputs, labels=labels).loss)
    torch.manual_seed(0)
    result = outcome(lambda: model(**inputs, labels=labels.int()).loss)
    if isinstance(result, str) or isinstance(reference, str):
        return result if isinstance(result, str) else f"int64 labels: {reference}"
    return "as int64" if torch.allclose(result[0], reference[0]) else "different loss"


def own_fields(config_class) -> list[dataclasses.Field]:
    inherited = {field.name for field in dataclasses.fields(PreTrainedConfig)}
    return [field for field in dataclasses.fields(config_class) if field.name not in inherited]


def negative_size(config_class):
    """The first size or count field of the config set to -1."""
    names = [field.name for field in own_fields(config_class) if SIZE_FIELD.search(field.name)]
    if not names:
        return NOT_APPLICABLE
    result = outcome(lambda: config_class.tiny(**{names[0]: -1}))
    return result if isinstance(result, str) else "accepted"


def zero_size(config_class):
    """The first size field (not a count) set to 0."""
    names = [
        field.name
        for field in own_fields(config_class)
        if SIZE_FIELD.search(field.name) and not COUNT_FIELD.search(field.name)
    ]
    if not names:
        return NOT_APPLICABLE
    result = outcome(lambda: config_class.tiny(**{names[0]: 0}))
    return result if isinstance(result, str) else "accepted"


def nan_float(config_class):
    """The first float field of the config set to NaN."""
    tiny = config_class.tiny()
    names = [field.name for field in own_fields(config_class) if isinstance(getattr(tiny, field.name), float)]
    if not names:
        return NOT_APPLICABLE
    result = outcome(lambda: config_class.tiny(**{names[0]: math.nan}))
    return result if isinstance(result, str) else "accepted"


INPUT_KINDS = {
    "wrong rank": wrong_rank,
    "int/float swapped": wrong_dtype,
    "float64 input": float64_input,
    "mask of 0.5s": bad_mask,
    "padding-only row": padding_only_row,
    "empty batch": empty_batch,
    "misspelt keyword": misspelt_keyword,
    "labels out of range": out_of_range_labels,
    "int32 labels": int32_labels,
}
CONFIG_KINDS = {"size -1": negative_size, "size 0": zero_size, "NaN float": nan_float}


def behaviour_row(config_class, model_class) -> list[str]:
    model = model_class(config_class.tiny()).eval()
    inputs = model.dummy_inputs
    row = [kind(model, inputs) for kind in INPUT_KINDS.values()]
    return row + [kind(config_class) for kind in CONFIG_KINDS.values()]


def behaviour_table() -> str:
    """The markdown table: one row per REGISTRY model, one column per kind of bad input."""
    header = ["model", *INPUT_KINDS, *CONFIG_KINDS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for config_class, model_class in MODELS:
        cells = [f"`{model_class.__name__}`", *behaviour_row(config_class, model_class)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


TABLE_SPAN = re.compile(re.escape(TABLE_START) + r"\n(.*?)\n?" + re.escape(TABLE_END), re.DOTALL)


def table_in_page() -> str:
    match = TABLE_SPAN.search(PAGE.read_text())
    assert match, f"{PAGE} has no table between {TABLE_START} and {TABLE_END}"
    return match.group(1).strip()


def write_table() -> None:
    torch.manual_seed(0)
    table = f"{TABLE_START}\n{behaviour_table()}\n{TABLE_END}"
    PAGE.write_text(TABLE_SPAN.sub(lambda _: table, PAGE.read_text()))


if __name__ == "__main__":
    write_table()
