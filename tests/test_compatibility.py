"""The tools a transformers user brings work on every family, checked over `hf_attention.REGISTRY`: dynamic
quantization, PEFT LoRA, TorchScript tracing in bfloat16, `torch.export`; and a saved folder ships only the code its
model runs. A new family gets all of this by joining the registry."""

import ast
import copy
import graphlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from test_modeling_common import IDS, MODELS, build, float_inputs, tensors_of, wake_up
from torch import nn
from transformers.dynamic_module_utils import get_relative_import_files

import hf_attention
from hf_attention import REGISTRY

# packed GRU sequences have data-dependent lengths, which torch.export cannot trace
NOT_EXPORTABLE = {"RecurrentSeq2SeqModel", "RecurrentSeq2SeqForConditionalGeneration"}
# what a saved model must never ship: CPU kernels, conversion, training, data, pictures, the CLI
NOT_SHIPPED = ("cpu_optimization", "fused_linear", "conversion", "cli", "training", "data", "show", "visualize")


def first_output(model, inputs) -> torch.Tensor:
    return tensors_of(model(**inputs))[0]


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.float() - expected.float()).abs().max() / expected.float().abs().max().clamp(min=1e-6)).item()


# --- plain layers ---------------------------------------------------------------------------------------------

TORCH_LAYERS = (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.Embedding, nn.BatchNorm2d, nn.GRU, nn.LSTM)


@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_every_layer_is_a_plain_torch_layer(config_class, model_class):
    """Quantizers, PEFT and tensor-parallel plans match exact types: no subclass of a torch layer in any model."""
    model = build(config_class, model_class)
    subclassed = [
        f"{name}: {type(module).__name__}"
        for name, module in model.named_modules()
        if isinstance(module, TORCH_LAYERS) and type(module) not in TORCH_LAYERS
    ]
    assert not subclassed, subclassed


# --- quantization ---------------------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_dynamic_quantization_swaps_every_linear_and_stays_close(config_class, model_class):
    model = build(config_class, model_class)
    wake_up(model)
    linears = [name for name, module in model.named_modules() if type(module) is nn.Linear]
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    assert not [name for name, module in quantized.named_modules() if type(module) is nn.Linear]
    swapped = [
        name for name, module in quantized.named_modules() if isinstance(module, torch.ao.nn.quantized.dynamic.Linear)
    ]
    assert sorted(swapped) == sorted(linears)
    if linears:
        inputs = model.dummy_inputs
        assert relative_error(first_output(quantized, inputs), first_output(model, inputs)) < 0.1


# --- PEFT -----------------------------------------------------------------------------------------------------


def lora_targets(model) -> list[str]:
    """transformers' recipe where the model has it (`q_proj`, `v_proj`), else every linear and convolution."""
    names = [name for name, module in model.named_modules() if type(module) in (nn.Linear, nn.Conv2d)]
    if any(name.endswith(".q_proj") for name in names):
        return ["q_proj", "v_proj"]
    return names


@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_lora_trains_a_step_and_merges_into_plain_layers(config_class, model_class):
    model = build(config_class, model_class)
    wake_up(model)
    targets = lora_targets(model)
    if not targets:
        pytest.skip("holds no linear layer or convolution (Nadaraya-Watson learns one bandwidth)")
    inputs = model.dummy_inputs
    with torch.no_grad():
        base_output = first_output(model, inputs)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=True))
    trainable = [parameter for name, parameter in peft_model.named_parameters() if parameter.requires_grad]
    assert trainable and all("lora_" in name for name, p in peft_model.named_parameters() if p.requires_grad)
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    first_output(peft_model, inputs).float().pow(2).mean().backward()
    optimizer.step()
    with torch.no_grad():
        adapted = first_output(peft_model, inputs)
        assert not torch.allclose(adapted, base_output), "the LoRA step changed nothing"
        merged = peft_model.merge_and_unload()
        torch.testing.assert_close(first_output(merged, inputs), adapted, atol=1e-5, rtol=1e-4)
    assert all(type(module) in (nn.Linear, nn.Conv2d) for name, module in merged.named_modules() if name in targets)


# --- tracing and export ---------------------------------------------------------------------------------------


class Positional(nn.Module):
    """The model called with its inputs as positional tensors and `return_dict=False`, as TorchScript traces it."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor):
        return self.model(**dict(zip(self.names, tensors, strict=True)), return_dict=False)


@torch.no_grad()
@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_bfloat16_torchscript_trace_gives_the_eager_outputs(config_class, model_class):
    model = build(config_class, model_class).to(torch.bfloat16)
    inputs = float_inputs(model.dummy_inputs, torch.bfloat16)
    traced = torch.jit.trace(Positional(model, list(inputs)), tuple(inputs.values()), check_trace=False)
    torch.testing.assert_close(tensors_of(traced(*inputs.values())), tensors_of(model(**inputs)), atol=0, rtol=0)


@torch.no_grad()
@pytest.mark.slow
@pytest.mark.parametrize(("config_class", "model_class"), MODELS, ids=IDS)
def test_torch_export_gives_the_eager_outputs(config_class, model_class):
    model = build(config_class, model_class)
    inputs = model.dummy_inputs
    if model_class.__name__ in NOT_EXPORTABLE:
        with pytest.raises(Exception):  # noqa: B017 - torch.export's error types change between releases
            torch.export.export(model, (), kwargs=inputs)
        return
    exported = torch.export.export(model, (), kwargs=inputs)
    torch.testing.assert_close(tensors_of(exported.module()(**inputs)), tensors_of(model(**inputs)), atol=0, rtol=0)


# --- what a saved model ships ---------------------------------------------------------------------------------


def file_and_relative_imports(module_name: str) -> set[str]:
    """A module's file and the sibling files it imports, recursively, as `custom_object_save` collects them."""
    module_file = sys.modules[module_name].__file__
    return {path.split("/")[-1].removesuffix(".py") for path in [module_file, *get_relative_import_files(module_file)]}


@pytest.mark.parametrize("entry", REGISTRY, ids=[base.__name__ for _, base, _ in REGISTRY])
def test_a_saved_folder_ships_exactly_the_code_its_model_imports(entry, tmp_path):
    config_class, base_model, _ = entry
    base_model(config_class.tiny()).save_pretrained(tmp_path)
    shipped = {path.stem for path in tmp_path.glob("*.py")}
    imported = file_and_relative_imports(base_model.__module__) | file_and_relative_imports(config_class.__module__)
    assert shipped == imported
    assert not [name for name in shipped if name.startswith(NOT_SHIPPED)], shipped


IMPORTED_MODEL_CODE = """
import sys
import hf_attention
print(sorted(name for name in sys.modules if name.startswith("transformers.models.") and ".auto" not in name))
"""


@pytest.mark.slow
def test_importing_the_package_loads_no_transformers_model_code():
    result = subprocess.run([sys.executable, "-c", IMPORTED_MODEL_CODE], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.replace("'", '"')) == []


def relative_imports(path: Path, package: str) -> set[str]:
    """The modules of this package that `path` imports, at any depth of the file (lazy imports included)."""
    base = package.split(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            parent = ".".join(base[: len(base) - node.level + 1])
            names = [node.module] if node.module else [alias.name for alias in node.names]
            found |= {f"{parent}.{name}" for name in names}
    return found


def test_no_module_of_the_package_imports_itself_through_a_circle():
    root = Path(hf_attention.__file__).parent
    graph = {}
    for path in root.rglob("*.py"):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        graph[module] = relative_imports(path, package)
    # the package's __init__ re-exports everything: an `from .. import REGISTRY` inside a function is not a circle
    graph = {module: {imported for imported in imports if imported in graph and imported != "hf_attention"}
             for module, imports in graph.items()}  # fmt: skip
    try:
        graphlib.TopologicalSorter(graph).prepare()
        circle = []
    except graphlib.CycleError as error:
        circle = error.args[1]
    assert not circle, f"import circle: {' -> '.join(circle)}"
