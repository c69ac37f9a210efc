"""The model contract every family keeps, checked over `hf_attention.REGISTRY` with `tiny()` configs.

A new family gets all of this by joining the registry: its config has `tiny()`, its models `dummy_inputs`.
A model declares what it records with `_can_record_outputs`: one that records "attentions" must return real maps,
shaped (batch, heads, queries, keys) or as its docstring documents, that carry gradients back to the output.
"""

import collections
import copy
import dataclasses
import inspect
import json
import logging

import pytest
import torch
from accelerate import init_empty_weights
from huggingface_hub.errors import StrictDataclassClassValidationError
from padding_checks import MASK_IDS, bad_masks
from transformers import AttentionInterface, AutoConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_outputs import ModelOutput
from transformers.utils.output_capturing import CompileableContextVar

from hf_attention import REGISTRY

MODELS = [(config, model_class) for config, base, heads in REGISTRY for model_class in (base, *heads.values())]
IDS = [model_class.__name__ for _, model_class in MODELS]
CONFIGS = [config_class for config_class, _, _ in REGISTRY]
LOSS_OUTPUT = "loss"


def build(config_class, model_class, **overrides):
    return model_class(config_class.tiny(**overrides)).eval()


def tensors_of(output) -> list[torch.Tensor]:
    """Every tensor of an output (ModelOutput, tuple, nested), in order, None skipped."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, ModelOutput):
        output = output.to_tuple()
    if isinstance(output, (tuple, list)):
        return [tensor for item in output for tensor in tensors_of(item)]
    return []


def assert_same(first, second, atol=1e-5, rtol=1e-5):
    first, second = tensors_of(first), tensors_of(second)
    assert len(first) == len(second)
    for one, other in zip(first, second, strict=True):
        torch.testing.assert_close(one, other, atol=atol, rtol=rtol, equal_nan=True)


def records_attentions(model) -> bool:
    """Whether the model, or a sub-model it is built from (DETR's encoder and decoder), records attention maps."""
    return any(
        {"attentions", "cross_attentions"} & set(getattr(module, "_can_record_outputs", None) or {})
        for module in model.modules()
    )


def fields_ending(output, suffix: str) -> dict:
    """The output's tuples of per-layer tensors named `...{suffix}` (not last_hidden_state, not stacked tensors)."""
    return {name: value for name, value in output.items() if name.endswith(suffix) and isinstance(value, tuple)}


def wake_up(model) -> None:
    """Give every all-zero parameter (gamma scales, zero-init batch norms, identity warps) random values, so that
    attention reaches the output and a comparison of backends proves something."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() and not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


def batch_slice(inputs: dict, rows: slice) -> dict:
    batch_size = next(value.shape[0] for value in inputs.values() if isinstance(value, torch.Tensor))
    return {
        name: value[rows] if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == batch_size else value
        for name, value in inputs.items()
    }


def float_inputs(inputs: dict, dtype: torch.dtype) -> dict:
    return {name: value.to(dtype) if value.is_floating_point() else value for name, value in inputs.items()}


# --- outputs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_hidden_states_from_the_call_and_from_the_config(config_class, model_class):
    model = build(config_class, model_class)
    from_call = model(**model.dummy_inputs, output_hidden_states=True)
    hidden = fields_ending(from_call, "hidden_states")
    assert hidden, f"{model_class.__name__} returned no hidden states"
    for name, states in hidden.items():
        assert isinstance(states, tuple) and len(states) >= 2, name
        assert all(isinstance(state, torch.Tensor) for state in states), name
    layers = getattr(model.config, "num_hidden_layers", None)
    if "hidden_states" in hidden and isinstance(layers, int):
        assert len(hidden["hidden_states"]) == layers + 1
    model = build(config_class, model_class, output_hidden_states=True)
    assert_same(fields_ending(model(**model.dummy_inputs), "hidden_states"), hidden)
    assert not fields_ending(build(config_class, model_class)(**model.dummy_inputs), "hidden_states")


@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_attention_maps_are_returned_when_the_model_computes_attention(config_class, model_class):
    model = build(config_class, model_class)
    output = model(**model.dummy_inputs, output_attentions=True)
    maps = fields_ending(output, "attentions")
    if not records_attentions(model):
        assert all(attention.dim() == 4 for layers in maps.values() for attention in layers)
        return
    assert maps, f"{model_class.__name__} records attentions but returned none"
    batch_size = tensors_of(output)[0].shape[0]
    # video encoders fold frames into the batch of their per-frame maps, as transformers' X-CLIP does
    num_frames = getattr(getattr(model.config, "video_config", model.config), "num_frames", 1)
    for name, layers in maps.items():
        for attention in layers:
            batches = (batch_size, batch_size * num_frames)
            assert attention.dim() == 4 and attention.shape[0] in batches, (name, tuple(attention.shape))
            assert torch.isfinite(attention).all()
    model = build(config_class, model_class, output_attentions=True)
    assert_same(fields_ending(model(**model.dummy_inputs), "attentions"), maps)


@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_returned_attention_maps_are_the_tensors_the_output_came_from(config_class, model_class):
    model = build(config_class, model_class)
    if not records_attentions(model):
        pytest.skip("computes no attention maps")
    wake_up(model)
    output = model(**model.dummy_inputs, output_attentions=True)
    maps = [attention for layers in fields_ending(output, "attentions").values() for attention in layers]
    for attention in maps:
        attention.retain_grad()
    sum(tensor.float().sum() for tensor in tensors_of(output)[:1]).backward()
    reached = [attention.grad is not None and bool(attention.grad.abs().sum() > 0) for attention in maps]
    assert any(reached), "no returned attention map is on the path to the output"


# --- backends --------------------------------------------------------------------------------------------------

CALLS = []


def counting_sdpa(module, query, key, value, attention_mask, **kwargs):
    CALLS.append(module)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register("hf_attention_counting_sdpa", counting_sdpa)


@torch.no_grad()
@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_set_attn_implementation_switches_in_place_with_equal_outputs(config_class, model_class):
    model = build(config_class, model_class)
    wake_up(model)
    inputs = model.dummy_inputs
    model.set_attn_implementation("eager")
    eager = model(**inputs)
    flags = {"sdpa": model_class._supports_sdpa, "flex_attention": model_class._supports_flex_attn}
    for implementation in [name for name, supported in flags.items() if supported]:
        # transformers compiles flex once per process; after many shapes dynamo turns them dynamic, and torch 2.13's
        # CPU inductor then emits C++ that does not compile (`cur_kvSplitSize5`): start each family from static shapes
        torch._dynamo.reset()
        model.set_attn_implementation(implementation)
        assert model.config._attn_implementation == implementation
        assert_same(model(**inputs), eager, atol=1e-4, rtol=1e-4)
    # models that dispatch through ALL_ATTENTION_FUNCTIONS say so; criss-cross computes its own row/column softmax
    if not model_class._supports_attention_backend:
        return
    CALLS.clear()
    model.set_attn_implementation("hf_attention_counting_sdpa")
    assert_same(model(**inputs), eager, atol=1e-4, rtol=1e-4)
    if records_attentions(model):
        assert CALLS, "the registered backend was never called: a module does not read the live config"


# --- keywords --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_forward_takes_transformers_kwargs_and_refuses_unknown_keywords(config_class, model_class):
    model = build(config_class, model_class)
    annotation = str(inspect.signature(model_class.forward).parameters["kwargs"].annotation)
    assert "TransformersKwargs" in annotation, annotation
    with pytest.raises(TypeError, match="attention_maks"):
        model(**model.dummy_inputs, attention_maks=torch.ones(1))
    model(**model.dummy_inputs, num_items_in_batch=torch.tensor(2))  # what Trainer passes keeps working


@torch.no_grad()
@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_return_dict_false_gives_the_same_values_as_a_tuple(config_class, model_class):
    model = build(config_class, model_class)
    inputs = model.dummy_inputs
    output = model(**inputs, output_attentions=True, output_hidden_states=True)
    as_tuple = model(**inputs, output_attentions=True, output_hidden_states=True, return_dict=False)
    assert isinstance(as_tuple, tuple)
    assert_same(as_tuple, output, atol=0, rtol=0)


FEATURE_METHODS = [
    (config_class, model_class, name)
    for config_class, model_class in MODELS
    for name in dir(model_class)
    if name.startswith("get_") and name.endswith("_features") and callable(getattr(model_class, name))
]


@torch.no_grad()
@pytest.mark.parametrize(
    ("config_class", "model_class", "method"),
    FEATURE_METHODS,
    ids=[f"{cls.__name__}.{name}" for _, cls, name in FEATURE_METHODS],
)
def test_feature_methods_give_the_same_values_as_a_tuple_with_return_dict_false(config_class, model_class, method):
    """`get_image_features` / `get_text_features` / `get_video_features` follow transformers 5's CLIP: a ModelOutput,
    or its values as a tuple with `return_dict=False`."""
    model = build(config_class, model_class)
    parameters = inspect.signature(getattr(model_class, method)).parameters
    inputs = {name: value for name, value in model.dummy_inputs.items() if name in parameters}
    output = getattr(model, method)(**inputs, output_hidden_states=True)
    as_tuple = getattr(model, method)(**inputs, output_hidden_states=True, return_dict=False)
    assert isinstance(output, ModelOutput), type(output)
    assert isinstance(as_tuple, tuple), type(as_tuple)
    assert_same(as_tuple, output, atol=0, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_output_capture_is_never_chained_for_the_same_output(config_class, model_class, monkeypatch):
    """transformers' `test_capture_outputs_decorator`: `capture_outputs` belongs on the base models, and a call that
    captures an output must not run inside another that captures the same output (the outer one would lose the
    layers the inner one took). Counted on the context variable each capture sets and resets."""
    model = build(config_class, model_class)
    depth, deepest = collections.Counter(), collections.Counter()
    original_set, original_reset = CompileableContextVar.set, CompileableContextVar.reset

    def counting_set(variable, value):
        for key in value or {}:
            depth[key] += 1
            deepest[key] = max(deepest[key], depth[key])
        return original_set(variable, value)

    def counting_reset(variable, token):
        for key in variable.get() or {}:
            depth[key] -= 1
        return original_reset(variable, token)

    monkeypatch.setattr(CompileableContextVar, "set", counting_set)
    monkeypatch.setattr(CompileableContextVar, "reset", counting_reset)
    model(**model.dummy_inputs, output_attentions=True, output_hidden_states=True)
    chained = {key: count for key, count in deepest.items() if count > 1}
    assert not chained, f"capture_outputs runs {chained} deep"


# --- masks -----------------------------------------------------------------------------------------------------

MASKED_MODELS = [
    (config_class, model_class)
    for config_class, model_class in MODELS
    if any(name.endswith("attention_mask") for name in inspect.signature(model_class.forward).parameters)
]


@pytest.mark.parametrize("kind", MASK_IDS)
@pytest.mark.parametrize(("config_class", "model_class"), MASKED_MODELS, ids=[cls.__name__ for _, cls in MASKED_MODELS])
def test_padding_masks_that_are_not_zero_one_of_batch_by_length_are_refused(config_class, model_class, kind):
    model = build(config_class, model_class)
    inputs = model.dummy_inputs
    names = [name for name in inputs if name.endswith("attention_mask")]
    assert names, f"{model_class.__name__} takes a padding mask, but its dummy_inputs hold none"
    for name in names:
        _, mask, message = dict((bad[0], bad) for bad in bad_masks(*inputs[name].shape))[kind]
        with pytest.raises(ValueError, match=message):
            model(**{**inputs, name: mask})


# --- batches ---------------------------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_one_sample_equals_its_row_of_the_batch_and_runs_are_deterministic(config_class, model_class):
    model = build(config_class, model_class)
    inputs = model.dummy_inputs
    batch = model(**inputs)
    assert_same(model(**inputs), batch, atol=0, rtol=0)
    for row in range(2):
        single = tensors_of(model(**batch_slice(inputs, slice(row, row + 1))))
        compared = 0
        for one, full in zip(single, tensors_of(batch), strict=False):  # an empty output is absent, not None
            if one.dim() and full.dim() and full[row : row + 1].shape == one.shape:
                torch.testing.assert_close(one, full[row : row + 1], atol=1e-5, rtol=1e-5)
                compared += 1
        assert compared, "no output could be compared row by row"


@torch.no_grad()
@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_a_batch_of_size_zero_gives_empty_outputs(config_class, model_class):
    model = build(config_class, model_class)
    inputs = model.dummy_inputs
    full = tensors_of(model(**inputs))[0]
    empty = tensors_of(model(**batch_slice(inputs, slice(0, 0))))[0]
    assert empty.shape == (0, *full.shape[1:])


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_half_precision_runs_and_stays_close_to_float32(config_class, model_class, dtype):
    model = build(config_class, model_class)
    wake_up(model)
    inputs = model.dummy_inputs
    reference = tensors_of(model(**inputs))[0]
    model.to(dtype)
    output = tensors_of(model(**float_inputs(inputs, dtype)))[0]
    assert output.dtype == dtype or not output.is_floating_point()
    assert torch.isfinite(output).all()
    scale = reference.abs().max().clamp(min=1)
    assert (output.float() - reference).abs().max() <= 0.1 * scale


@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_integer_pixel_values_are_refused_with_a_pointer_to_the_image_processor(config_class, model_class):
    model = build(config_class, model_class)
    inputs = model.dummy_inputs
    if "pixel_values" not in inputs:
        pytest.skip("takes no pixel values")
    inputs["pixel_values"] = (inputs["pixel_values"] * 50 + 128).clamp(0, 255).to(torch.uint8)
    with pytest.raises(TypeError, match="image processor"):
        model(**inputs)


# --- training --------------------------------------------------------------------------------------------------


def gradients(model, inputs) -> dict:
    """The gradient of every parameter that gets one, from a loss on every floating-point output tensor."""
    model.zero_grad()
    torch.manual_seed(0)
    outputs = [tensor for tensor in tensors_of(model(**inputs)) if tensor.is_floating_point() and tensor.requires_grad]
    sum(tensor.float().pow(2).mean() for tensor in outputs).backward()
    return {name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}


@pytest.mark.parametrize("use_reentrant", [False, True], ids=["non-reentrant", "reentrant"])
@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_gradient_checkpointing_gives_the_same_gradients_to_every_parameter(config_class, model_class, use_reentrant):
    """With `use_reentrant=True` a checkpointed block whose inputs need no gradient passes none to its parameters
    (torch only warns): every parameter must get the gradient it gets without checkpointing."""
    if not model_class.supports_gradient_checkpointing:
        pytest.skip("supports_gradient_checkpointing = False")
    model = build(config_class, model_class).train()
    wake_up(model)
    inputs = model.dummy_inputs
    plain = gradients(model, inputs)
    model.activation_checkpointing_enable({"use_reentrant": use_reentrant})
    checkpointed = gradients(model, inputs)
    assert plain, "no parameter got a gradient"
    missing, extra = sorted(plain.keys() - checkpointed.keys()), sorted(checkpointed.keys() - plain.keys())
    assert not missing, f"no gradient under checkpointing: {missing}"
    assert not extra, f"a gradient only under checkpointing: {extra}"
    assert_same(list(checkpointed.values()), list(plain.values()), atol=1e-5, rtol=1e-4)


HEADS_WITH_LABELS = [
    (config_class, model_class)
    for config_class, model_class in MODELS
    if "labels" in inspect.signature(model_class.forward).parameters and model_class.main_input_name == "pixel_values"
]


@pytest.mark.parametrize(
    ("config_class", "model_class"), HEADS_WITH_LABELS, ids=[cls.__name__ for _, cls in HEADS_WITH_LABELS]
)
def test_labels_are_checked_and_never_change_the_problem_type(config_class, model_class):
    model = build(config_class, model_class)
    inputs, num_labels = model.dummy_inputs, model.config.num_labels
    batch_size = inputs["pixel_values"].shape[0]
    for labels, message in [
        (torch.full((batch_size,), num_labels), "class indices"),
        (torch.full((batch_size,), -3), "class indices"),
        (torch.zeros(batch_size + 1, dtype=torch.long), "shape"),
        (torch.zeros(batch_size, 1, 2, dtype=torch.long), "shape"),
    ]:
        with pytest.raises(ValueError, match=message):
            model(**inputs, labels=labels)
    model(**inputs, labels=torch.rand(batch_size, num_labels))  # float labels: multi-label, for this call only
    assert model.config.problem_type is None
    model.train()
    loss = model(**inputs, labels=torch.full((batch_size,), -100)).loss
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


# --- construction and initialisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_builds_on_the_meta_device_and_init_weights_fills_every_parameter_and_buffer(config_class, model_class):
    config = config_class.tiny()
    with init_empty_weights():
        assert all(p.device.type == "meta" for p in model_class(config).parameters())
    with torch.device("meta"):
        model = model_class(config)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.fill_(float("nan"))
    for module in model.modules():
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            tensor.__dict__.pop("_is_hf_initialized", None)
        module.__dict__.pop("_is_hf_initialized", None)
    model.init_weights()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        assert not tensor.is_floating_point() or torch.isfinite(tensor).all(), f"{name} was not initialised"


# what transformers' machinery and a user write on configs and expect back: its test utilities' epsilons,
# `tie_word_embeddings`, a note of the user's
EXTRAS = {"layer_norm_epsilon": 1.0, "batch_norm_eps": 1.0, "norm_eps": 1.0, "tie_word_embeddings": True, "note": "x"}


def set_extras(config) -> None:
    for name, value in EXTRAS.items():
        setattr(config, name, value)
    for name in config.sub_configs:
        set_extras(getattr(config, name))


def assert_extras(config) -> None:
    for name, value in EXTRAS.items():
        assert getattr(config, name) == value, (type(config).__name__, name)
    for name in config.sub_configs:
        assert_extras(getattr(config, name))


@pytest.mark.parametrize("config_class", CONFIGS, ids=[cls.__name__ for cls in CONFIGS])
def test_configs_keep_extra_attributes_and_name_a_misspelt_field(config_class, tmp_path, caplog):
    config = config_class.tiny()
    set_extras(config)
    config.save_pretrained(tmp_path)
    assert_extras(config_class.from_pretrained(tmp_path))
    assert_extras(AutoConfig.from_pretrained(tmp_path))
    assert config_class.tiny(dataset_name="digits").dataset_name == "digits"  # a keyword that is no near-miss

    field = next(f.name for f in dataclasses.fields(config_class) if not f.name.startswith("_") and f.name != "dtype")
    with pytest.raises(TypeError, match=rf"`{field}x` \(did you mean `{field}`\?\)"):
        config_class.tiny(**{f"{field}x": 1})
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, f"{field}x": 1}))
    with caplog.at_level(logging.WARNING):
        assert getattr(config_class.from_pretrained(tmp_path), f"{field}x") == 1  # read, never refused
    assert f"`{field}x` (did you mean `{field}`?)" in caplog.text


ACTIVATION_FIELD_ENDINGS = ("_act", "activation", "activation_function")


@pytest.mark.parametrize("config_class", CONFIGS, ids=[cls.__name__ for cls in CONFIGS])
def test_every_activation_field_is_checked_at_construction(config_class):
    fields = [field.name for field in dataclasses.fields(config_class) if field.name.endswith(ACTIVATION_FIELD_ENDINGS)]
    for name in fields:
        with pytest.raises(StrictDataclassClassValidationError, match=rf"`{name}` 'gelu_bogus' is not a known"):
            config_class.tiny(**{name: "gelu_bogus"})


# --- saving, loading, compiling --------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_save_load_round_trip_with_code_and_device_map(config_class, model_class, tmp_path):
    model = build(config_class, model_class)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    module_name, class_name = config["auto_map"]["AutoModel"].split(".")
    assert (tmp_path / f"{module_name}.py").exists() and (tmp_path / "pretrained.py").exists()
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob(".*"))
    for kwargs in ({}, {"device_map": "auto"}):
        loaded = model_class.from_pretrained(tmp_path, **kwargs).eval()
        restored_state = loaded.state_dict()
        for name, saved in model.state_dict().items():
            restored = restored_state[name]
            torch.testing.assert_close(restored, saved, atol=0, rtol=0, msg=name)
        # weights are bit-identical; memory-mapped tensors may take another (unaligned) GRU kernel path: 1e-10
        assert_same(loaded(**model.dummy_inputs), model(**model.dummy_inputs), atol=1e-6, rtol=1e-6)


# loading a saved folder with its own code, in a process without the package: tests/test_remote_code.py


@torch.no_grad()
@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_compiles_with_fullgraph_where_it_says_it_can(config_class, model_class):
    if not model_class._can_compile_fullgraph:
        pytest.skip("_can_compile_fullgraph = False")
    model = build(config_class, model_class)
    inputs = model.dummy_inputs
    torch._dynamo.reset()
    compiled = torch.compile(copy.copy(model), fullgraph=True, backend="eager")
    assert_same(compiled(**inputs), model(**inputs), atol=1e-5, rtol=1e-5)
