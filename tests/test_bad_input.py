"""Bad input gets a clear error or the documented result, never a deep torch error or a silent wrong answer.

One test per kind: the REGISTRY-wide table of docs/reference/bad-input.md (measured by bad_input_cases.py), the
keywords, dtypes and constructor arguments of the plain modules, labels, config sizes, position ids, the GRU
encoder-decoder's targets and image folders.
"""

import inspect
import math

import pytest
import torch
from bad_input_cases import MODELS, PAGE, behaviour_table, labels_of, own_fields, table_in_page
from huggingface_hub.errors import StrictDataclassClassValidationError
from PIL import Image
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import hf_attention as h
from hf_attention import REGISTRY
from hf_attention.apps.data import load_external
from hf_attention.attention import ATTENTION_KWARGS
from hf_attention.configuration_base import COUNT_FIELD, SIZE_FIELD

CONFIGS = [config_class for config_class, _, _ in REGISTRY]


def test_the_bad_input_page_says_what_every_model_does():
    table = behaviour_table()
    assert table == table_in_page(), f"{PAGE} is out of date: run `python tests/bad_input_cases.py`"
    cells = {cell.strip() for line in table.splitlines()[2:] for cell in line.strip("|").split("|")[1:]}
    silent_or_deep = {cell for cell in cells if cell.startswith(("deep", "accepted", "ignored", "different", "NaN"))}
    assert not silent_or_deep, silent_or_deep


# --- the plain modules ------------------------------------------------------------------------------------------


def plain_modules() -> dict:
    """(module, keyword arguments of a good call) for every module whose forward takes **kwargs."""
    r = torch.randn
    return {
        "MultiHeadAttention": (h.MultiHeadAttention(8, 2), {"hidden_states": r(2, 3, 8)}),
        "AdditiveAttention": (h.AdditiveAttention(6, 4, 8), {"queries": r(2, 3, 6), "keys": r(2, 5, 4)}),
        "NadarayaWatsonAttention": (
            h.NadarayaWatsonAttention(),
            {"queries": r(2, 3), "keys": r(2, 5), "values": r(2, 5)},
        ),
        "FeatureMapCrossAttention": (
            h.FeatureMapCrossAttention(3, 8, 2, context_dim=4),
            {"feature_map": r(2, 3, 4, 5), "context": r(2, 6, 4)},
        ),
        "LinformerSelfAttention": (h.LinformerSelfAttention(8, 2, 6, 3), {"hidden_states": r(2, 5, 8)}),
        "CLIPResidualAttentionBlock": (h.CLIPResidualAttentionBlock(8, 2), {"hidden_states": r(2, 5, 8)}),
        "DETRTransformerEncoderLayer": (h.DETRTransformerEncoderLayer(8, 2, 16), {"hidden_states": r(2, 5, 8)}),
        "DETRTransformerDecoderLayer": (
            h.DETRTransformerDecoderLayer(8, 2, 16),
            {"hidden_states": r(2, 3, 8), "encoder_hidden_states": r(2, 5, 8)},
        ),
    }  # fmt: skip


PLAIN = list(plain_modules())


@pytest.mark.parametrize("name", PLAIN)
def test_a_misspelt_keyword_to_a_plain_module_is_refused_naming_the_near_miss(name):
    module, inputs = plain_modules()[name]
    mask_name = next((n for n in inspect.signature(module.forward).parameters if n.endswith("mask")), None)
    misspelt = (mask_name or "attention_mask").replace("mask", "maks")
    with pytest.raises(
        TypeError, match=rf"`{misspelt}`" + (rf" \(did you mean `{mask_name}`\?\)" if mask_name else "")
    ):
        module(**inputs, **{misspelt: torch.ones(2, 5)})
    module(**inputs, output_hidden_states=True, num_items_in_batch=torch.tensor(4))  # what models pass down


def test_transformers_keywords_still_reach_a_registered_attention_function():
    received = []

    def recording_attention(module, query, key, value, attention_mask, **kwargs):
        received.append(sorted(kwargs))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("recording_for_bad_input_test", recording_attention)
    attention = h.MultiHeadAttention(8, 2, attn_implementation="recording_for_bad_input_test")
    attention(torch.randn(2, 3, 8), position_ids=torch.arange(3)[None], output_hidden_states=False)
    assert received and {"position_ids", "output_hidden_states"} <= set(received[0])
    assert {"position_ids", "output_hidden_states", "num_items_in_batch", "cu_seq_lens_q"} <= ATTENTION_KWARGS
    with pytest.raises(TypeError, match=r"`is_causal` is fixed when MultiHeadAttention is built"):
        attention(torch.randn(2, 3, 8), is_causal=True)  # transformers' keyword, but causality is built in


@pytest.mark.parametrize("name", PLAIN)
def test_a_plain_module_refuses_a_float_input_of_another_dtype_naming_it(name):
    module, inputs = plain_modules()[name]
    first = next(iter(inputs))
    if name == "NadarayaWatsonAttention":  # computes in float32 whatever its inputs: any float dtype is fine
        module(**{**inputs, first: inputs[first].double()})
        return
    with pytest.raises(TypeError, match=rf"`[a-z_]+` has dtype float64 but the weights of {type(module).__name__}"):
        module(**{**inputs, first: inputs[first].double()})
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast mixes dtypes on purpose: no refusal
        module(**{**inputs, first: inputs[first].bfloat16()})


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: h.AdditiveAttention(20, 2, hidden_dim=0), r"`hidden_dim` must be positive, got 0"),
        (lambda: h.AdditiveAttention(20, -2, hidden_dim=8), r"`key_dim` must be positive, got -2"),
        (lambda: h.NadarayaWatsonAttention(initial_bandwidth=math.inf), r"`initial_bandwidth` .*finite"),
        (lambda: h.NadarayaWatsonAttention(initial_bandwidth=math.nan), r"`initial_bandwidth` must be positive"),
        (lambda: h.MultiHeadAttention(8, 2, key_dim=2.5), r"`key_dim` must be a positive integer, got 2.5"),
        (lambda: h.MultiHeadAttention(8, True), r"`num_heads` must be a positive integer, got True"),
        (lambda: h.FeatureMapCrossAttention(-1, 8, 2), r"`in_channels` must be positive, got -1"),
        (lambda: h.LinformerSelfAttention(8, 2, 0, 3), r"`max_length` must be positive, got 0"),
        (lambda: h.CLIPResidualAttentionBlock(-8, 2), r"`hidden_size` must be positive, got -8"),
        (lambda: h.CLIPResidualAttentionBlock(8, 2, layer_norm_eps=math.nan), r"`layer_norm_eps` must be positive"),
        (lambda: h.DETRTransformerEncoderLayer(8, 2, -16), r"`intermediate_size` must be positive, got -16"),
        (lambda: h.DETRTransformerEncoderLayer(8, 2, 16, dropout=-1.0), r"`dropout` must be in \[0, 1\)"),
        (lambda: h.SqueezeExcitation(8, reduction=2.5), r"`reduction` must be a positive integer, got 2.5"),
        (lambda: h.CrissCrossAttention(8, 2, recurrence=1.5), r"`recurrence` must be a positive integer"),
        (lambda: h.ResidualAttentionModule(8, num_pre_post_units=True), r"`num_pre_post_units` must be an integer"),
    ],
)
def test_a_plain_module_refuses_an_impossible_constructor_argument_by_name(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()


# --- labels -----------------------------------------------------------------------------------------------------

LABELLED = [
    (config, model_class)
    for config, model_class in MODELS
    if "labels" in inspect.signature(model_class.forward).parameters
]


@pytest.mark.parametrize(("config_class", "model_class"), LABELLED, ids=[cls.__name__ for _, cls in LABELLED])
def test_integer_labels_of_any_width_give_the_loss_of_int64_labels(config_class, model_class):
    model = model_class(config_class.tiny()).eval()
    inputs = model.dummy_inputs
    labels = labels_of(model, inputs)
    torch.manual_seed(0)
    reference = model(**inputs, labels=labels).loss
    for dtype in (torch.int32, torch.int16, torch.uint8):
        torch.manual_seed(0)
        torch.testing.assert_close(model(**inputs, labels=labels.to(dtype)).loss, reference)


def test_seq2seq_targets_that_do_not_match_the_source_are_refused():
    model = h.RecurrentSeq2SeqForConditionalGeneration(h.RecurrentSeq2SeqConfig.tiny()).eval()
    inputs = model.dummy_inputs
    targets = inputs.pop("decoder_input_ids")
    with pytest.raises(ValueError, match=r"decoder_input_ids hold 1 sequences but the source batch .* holds 2"):
        model(**inputs, decoder_input_ids=targets[:1])
    with pytest.raises(ValueError, match=r"labels hold 1 sequences but input_ids hold 2"):
        model(**inputs, labels=targets[:1])
    with pytest.raises(ValueError, match=r"labels \(2, 8\) must have the shape of decoder_input_ids \(2, 4\)"):
        model(**inputs, decoder_input_ids=targets, labels=torch.cat((targets, targets), dim=1))
    with pytest.raises(ValueError, match=r"decoder_input_ids hold 3 sequences"):
        model.model(**inputs, decoder_input_ids=torch.cat((targets, targets[:1])))


# --- configurations ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config_class", CONFIGS, ids=[cls.__name__ for cls in CONFIGS])
def test_every_size_field_refuses_impossible_values_by_name(config_class):
    sizes = [field.name for field in own_fields(config_class) if SIZE_FIELD.search(field.name)]
    for name in sizes:
        impossible = [-1] if COUNT_FIELD.search(name) else [-1, 0]
        for value in impossible:
            with pytest.raises(StrictDataclassClassValidationError, match=rf"`{name}(\[0\])?` must be"):
                config_class.tiny(**{name: [value] if isinstance(getattr(config_class.tiny(), name), list) else value})
    tiny = config_class.tiny()
    for field in own_fields(config_class):
        if isinstance(getattr(tiny, field.name), float):
            for value in (math.nan, math.inf):
                with pytest.raises(StrictDataclassClassValidationError, match=rf"`{field.name}` must be"):
                    config_class.tiny(**{field.name: value})


def test_initializer_range_zero_is_refused_rather_than_dividing_by_zero():
    with pytest.raises(StrictDataclassClassValidationError, match=r"`initializer_range` must be positive, got 0.0"):
        h.VisionTransformerConfig.tiny(initializer_range=0.0)


def test_an_initial_temperature_beyond_its_clamp_is_refused():
    with pytest.raises(StrictDataclassClassValidationError, match=r"`logit_scale_init_value` \(2\) must not exceed"):
        h.VisionTextCrossAttentionConfig.tiny(logit_scale_init_value=2.0, max_logit_scale=1.0)


# --- position ids -----------------------------------------------------------------------------------------------

WITH_POSITIONS = [
    (config, model_class)
    for config, model_class in MODELS
    if "position_ids" in inspect.signature(model_class.forward).parameters
]


@pytest.mark.parametrize(
    ("config_class", "model_class"), WITH_POSITIONS, ids=[cls.__name__ for _, cls in WITH_POSITIONS]
)
def test_position_ids_outside_the_position_table_name_both_numbers(config_class, model_class):
    model = model_class(config_class.tiny()).eval()
    inputs = model.dummy_inputs
    length = inputs["input_ids"].shape[1]
    with pytest.raises(
        ValueError, match=r"`position_ids` must lie in \[0, max_position_embeddings=\d+\), got .* to 1004"
    ):
        model(**inputs, position_ids=torch.arange(length)[None] + 1000)
    with pytest.raises(TypeError, match=r"`position_ids` must be an integer tensor"):
        model(**inputs, position_ids=torch.arange(length)[None].float())


# --- data -------------------------------------------------------------------------------------------------------


def test_an_image_folder_with_one_class_names_the_folders_it_found(tmp_path):
    (tmp_path / "cat").mkdir()
    for index in range(3):
        Image.new("RGB", (8, 8), (40 * index, 0, 0)).save(tmp_path / "cat" / f"{index}.png")
    with pytest.raises(ValueError, match=r"found 1 class sub-folder\(s\) \['cat'\]; a classifier needs at least two"):
        load_external(str(tmp_path))


# --- what must still be accepted -------------------------------------------------------------------------------


class Float8Linear(torch.nn.Module):
    """A quantized linear as FP8 quantizers build one: float8 weights, dequantized in forward."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = torch.nn.Parameter(linear.weight.detach().to(torch.float8_e4m3fn), requires_grad=False)
        self.bias = linear.bias

    def forward(self, hidden_states):
        return torch.nn.functional.linear(hidden_states, self.weight.to(hidden_states.dtype), self.bias)


def test_float8_weights_are_not_the_dtype_inputs_must_have(caplog):
    attention = h.MultiHeadAttention(16, 2).to(torch.bfloat16)
    attention.q_proj = Float8Linear(attention.q_proj)  # the first parameter is now a float8 one
    dequantized = h.MultiHeadAttention(16, 2).to(torch.bfloat16)
    dequantized.load_state_dict({**attention.state_dict(), "q_proj.weight": attention.q_proj.weight.to(torch.bfloat16)})
    states = torch.randn(2, 5, 16, dtype=torch.bfloat16)
    torch.testing.assert_close(attention(states)[0], dequantized(states)[0])
    assert h.pretrained.parameter_dtype(attention, torch.float32) == torch.bfloat16

    attention.q_proj.weight.data[0, 0] = float("nan")
    with caplog.at_level("WARNING"):
        h.pretrained.warn_about_non_finite_weights(attention, "a-folder")
    assert "q_proj.weight" in caplog.text


def test_sizes_may_be_any_integer_type_but_not_a_bool():
    import numpy as np

    assert h.MultiHeadAttention(np.int64(16), np.int32(2)).num_heads == 2
    assert h.AdditiveAttention(16, 16, np.int64(8)).query_proj.out_features == 8
    with pytest.raises(TypeError, match="`num_heads` must be a positive integer, got True"):
        h.MultiHeadAttention(16, True)
