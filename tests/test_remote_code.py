"""A saved model answers the same with the code in its folder as with the installed package.

Every class of `hf_attention.REGISTRY` is saved, then loaded with `trust_remote_code=True` in one subprocess (one for
all models: each start costs seconds) that runs tests/remote_code_client.py, and every tensor of its output (embeddings,
logits, contrastive logits, hidden states, attention maps, nested sub-model outputs) must equal what the installed
model gives on the same input. transformers loads each folder's files as modules of their own, so any behaviour that
depends on `isinstance` against a class of another copy of the same file shows up here.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from remote_code_client import record_outputs
from safetensors.torch import load_file, save_file
from test_hub import BLOCK_HF_ATTENTION, PACKAGE_ROOT
from test_modeling_common import wake_up
from transformers import AutoModel

from hf_attention import REGISTRY

pytestmark = pytest.mark.slow  # a subprocess: `pytest -m "not slow"` skips it

CLIENT = Path(__file__).parent / "remote_code_client.py"


def save_every_registry_model(folder: Path) -> tuple[list[dict], dict[str, dict[str, torch.Tensor]]]:
    """Each REGISTRY class, tiny and with its zero-initialised scales woken up (so that every branch reaches the
    output), saved with its inputs; returns the client's manifest and the installed model's outputs by name."""
    manifest, expected = [], {}
    for config_class, base_model, heads in REGISTRY:
        for auto_class, model_class in [(AutoModel, base_model), *heads.items()]:
            torch.manual_seed(0)
            model = model_class(config_class.tiny()).eval()
            wake_up(model)
            name = model_class.__name__
            model.save_pretrained(folder / name)
            inputs = model.dummy_inputs
            save_file({key: value.contiguous() for key, value in inputs.items()}, folder / f"{name}.inputs.safetensors")
            entry = {"folder": str(folder / name), "auto_class": auto_class.__name__}
            manifest.append({"name": name, **entry, "inputs": str(folder / f"{name}.inputs.safetensors")})
            expected[name] = record_outputs(model, inputs)
    return manifest, expected


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[list[dict], dict[str, dict[str, torch.Tensor]]]:
    return save_every_registry_model(tmp_path_factory.mktemp("saved"))


def run_client(tmp_path: Path, manifest: list[dict], *options: str, block: bool) -> Path:
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    out.mkdir()
    inherited = {name: value for name, value in os.environ.items() if not name.startswith(("HF_", "PYTHONPATH"))}
    # a fresh HF_HOME: the folders' code is imported from a module cache of this test's own
    environment = {**inherited, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if block:
        blocker = tmp_path / "blocker"
        blocker.mkdir()
        (blocker / "sitecustomize.py").write_text(BLOCK_HF_ATTENTION)
        environment["PYTHONPATH"] = str(blocker)
    else:
        environment["PYTHONPATH"] = str(PACKAGE_ROOT)
    command = [sys.executable, str(CLIENT), str(tmp_path / "manifest.json"), str(out), *options]
    finished = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=600)
    assert finished.returncode == 0, finished.stderr[-4000:]
    assert f"recorded {len(manifest)}" in finished.stdout
    return out


def differences(expected: dict[str, dict[str, torch.Tensor]], out: Path, suffix: str = "") -> list[str]:
    """Every model whose recorded outputs differ from the installed model's, with the tensors that differ."""
    problems = []
    for name, tensors in expected.items():
        error = out / f"{name}{suffix}.error"
        if error.exists():
            problems.append(f"{name}: failed in the subprocess:\n{error.read_text()}")
            continue
        loaded = load_file(out / f"{name}{suffix}.safetensors")
        if loaded.keys() != tensors.keys():
            problems.append(f"{name}: outputs {sorted(loaded.keys() ^ tensors.keys())} only on one side")
            continue
        for key, tensor in tensors.items():
            if tensor.shape != loaded[key].shape or not torch.allclose(tensor, loaded[key], atol=1e-6, rtol=1e-5):
                gap = (tensor - loaded[key]).abs().max().item() if tensor.shape == loaded[key].shape else "shape"
                problems.append(f"{name}.{key}: differs by {gap}")
    return problems


def test_every_model_gives_the_same_outputs_from_its_folders_code_in_a_process_without_the_package(saved, tmp_path):
    manifest, expected = saved
    out = run_client(tmp_path, manifest, block=True)
    problems = differences(expected, out)
    assert not problems, "\n".join(problems)


def test_folders_code_loaded_before_import_hf_attention_gives_the_same_outputs_and_so_does_the_package(saved, tmp_path):
    """The package's own Python: trust_remote_code loads the folders' code first, then `import hf_attention` registers
    the installed classes and the same folders load as those, all in one process."""
    manifest, expected = saved
    out = run_client(tmp_path, manifest, "--then-import-hf-attention", block=False)
    problems = differences(expected, out) + differences(expected, out, ".after-import")
    assert not problems, "\n".join(problems)


def config_class_checks(source: str) -> list[tuple[int, str]]:
    """`isinstance(x, SomethingConfig)` / `issubclass(...)` calls in a file: (line, class names)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("isinstance", "issubclass"):
            classes = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
            names = [ast.unparse(cls) for cls in classes]
            if any(name.split(".")[-1].endswith("Config") for name in names):
                found.append((node.lineno, ", ".join(names)))
    return found


def test_no_shipped_file_decides_by_isinstance_on_a_config_class():
    """Under trust_remote_code a config and the model code may come from two copies of one file (transformers loads
    each folder's files as modules of their own), so `isinstance` against a config class is False for a config that
    is in every other way the right one: decide by a config field (`model_type`) instead."""
    shipped = sorted(PACKAGE_ROOT.joinpath("hf_attention").glob("*.py"))
    found = [
        f"{path.name}:{line}: {names}" for path in shipped for line, names in config_class_checks(path.read_text())
    ]
    assert not found, "\n".join(found)
