"""Loads saved folders with `trust_remote_code=True` and records every output tensor; tests/test_remote_code.py runs it.

    python remote_code_client.py MANIFEST.json OUT_FOLDER [--then-import-hf-attention]

MANIFEST lists `{"name", "folder", "auto_class", "inputs"}`; for each entry the folder is loaded with
`getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=True)`, run on the safetensors `inputs`
with every output flag on, and each output tensor is written to `OUT_FOLDER/<name>.safetensors` under its path in the
output (`hidden_states.2`, `vision_model_output.attentions.0`, ...). The loaded class must come from the folder's code
(`transformers_modules`), never from an installed hf_attention. A model that fails writes its traceback to
`OUT_FOLDER/<name>.error` and the others still run. `--then-import-hf-attention` imports the package
after all of that and loads every folder a second time, to `OUT_FOLDER/<name>.after-import.safetensors`.

This file never imports hf_attention itself: the test decides whether the process can.
"""

import json
import sys
import traceback
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers.modeling_outputs import ModelOutput


def named_tensors(output, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a model output under its path: ModelOutput fields by name, tuple items by index."""
    if isinstance(output, torch.Tensor):
        return {prefix: output}
    if isinstance(output, ModelOutput):
        items = output.items()
    elif isinstance(output, (tuple, list)):
        items = enumerate(output)
    else:
        return {}
    named = {}
    for key, value in items:
        named.update(named_tensors(value, f"{prefix}.{key}" if prefix else str(key)))
    return named


@torch.no_grad()
def record_outputs(model, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    output = model.eval()(**inputs, output_hidden_states=True, output_attentions=True)
    # contiguous copies: fields may share storage (last_hidden_state is a view of hidden_states[-1])
    named = named_tensors(output)
    return {name: tensor.detach().clone(memory_format=torch.contiguous_format) for name, tensor in named.items()}


def load_and_record(entry: dict, out: Path, suffix: str, remote: bool) -> None:
    auto_class = getattr(transformers, entry["auto_class"])
    model = auto_class.from_pretrained(entry["folder"], trust_remote_code=remote)
    module = type(model).__module__
    if remote != module.startswith("transformers_modules"):
        raise AssertionError(f"{entry['name']} loaded as {module}.{type(model).__name__}")
    save_file(record_outputs(model, load_file(entry["inputs"])), out / f"{entry['name']}{suffix}.safetensors")


def load_and_record_all(manifest: list[dict], out: Path, suffix: str, remote: bool) -> None:
    """Every entry, each failure written to `<name><suffix>.error` (its last frames) instead of stopping."""
    for entry in manifest:
        try:
            load_and_record(entry, out, suffix, remote)
        except Exception as error:  # the last frames and the start of the message (some list every config class)
            frames = "".join(traceback.format_tb(error.__traceback__)[-3:])
            (out / f"{entry['name']}{suffix}.error").write_text(f"{frames}{type(error).__name__}: {str(error)[:600]}")


def main() -> None:
    manifest, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    load_and_record_all(manifest, out, "", remote=True)
    if "--then-import-hf-attention" in sys.argv:
        import hf_attention  # noqa: F401  (registers the installed classes after the folders' code was loaded)

        load_and_record_all(manifest, out, ".after-import", remote=False)
    print("recorded", len(manifest))


if __name__ == "__main__":
    main()
