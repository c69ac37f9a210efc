"""Client steps of the Hub tests. Each runs in its own process (`python hub_client.py STEP FOLDER`), because
huggingface_hub reads HF_ENDPOINT / HF_HOME / HF_HUB_DISABLE_XET at import; tests/test_hub.py sets them.

A step writes what it made or saw under FOLDER and prints one `RESULT <json>` line for the test to check.
Loading steps compare every weight and every output with what the pushing step recorded, and must work
whether or not `hf_attention` can be imported (the blocked case loads with `trust_remote_code=True`).
"""

import json
import re
import sys
import traceback
from functools import partial
from pathlib import Path

import torch
import transformers
from huggingface_hub import HfApi, hf_hub_download
from safetensors.torch import load_file, save_file

try:
    import hf_attention  # registers the Auto classes, as a user's `import hf_attention` does

    HAS_HF_ATTENTION = True
except ModuleNotFoundError:  # the process stands for a machine without hf_attention
    HAS_HF_ATTENTION = False
NAMESPACE = "test-user"


def report(result) -> None:
    print("RESULT " + json.dumps(result))


def tensors_of(model, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights and buffers under their names, plus every output tensor as `output.{i}`."""
    with torch.no_grad():
        outputs = model(**inputs).to_tuple()
    named = {**model.state_dict(), **{f"output.{i}": output for i, output in enumerate(outputs)}}
    return {name: tensor.detach().contiguous() for name, tensor in named.items() if isinstance(tensor, torch.Tensor)}


def tiny_model(config_class, model_class):
    """A tiny `model_class` (seeded, eval mode) and its example inputs, by the convention every family follows."""
    if not callable(getattr(config_class, "tiny", None)):
        raise TypeError(f"{config_class.__name__} has no `tiny()` classmethod.")
    torch.manual_seed(0)
    model = model_class(config_class.tiny()).eval()
    inputs = model.dummy_inputs
    if model.main_input_name not in inputs:
        raise TypeError(f"{model_class.__name__}.dummy_inputs has no {model.main_input_name!r}: override it.")
    return model, inputs


def tiny_registry_models() -> list[tuple[str, object, dict]]:
    """(Auto class name, tiny model, example inputs) for every class REGISTRY holds; names every class that the
    convention cannot build (a `tiny()` config classmethod, a `dummy_inputs` model property) rather than skip it."""
    built, problems = [], []
    for config_class, base_model, heads in hf_attention.REGISTRY:
        for auto_class, model_class in [(transformers.AutoModel, base_model), *heads.items()]:
            try:
                built.append((auto_class.__name__, *tiny_model(config_class, model_class)))
            except Exception as error:
                problems.append(f"{model_class.__name__}: {type(error).__name__}: {error}")
    if problems:
        raise TypeError("Registered classes the Hub test cannot build tiny:\n" + "\n".join(problems))
    return built


def push_registry(folder: Path) -> None:
    """Push a tiny instance of every registered class, and every registered config, recording references."""
    manifest = []
    for auto_class, model, inputs in tiny_registry_models():
        name = type(model).__name__
        save_file({f"input.{key}": tensor.contiguous() for key, tensor in inputs.items()}, folder / f"{name}.in")
        save_file(tensors_of(model, inputs), folder / f"{name}.out")
        repo_id = f"{NAMESPACE}/{name.lower()}"
        commit = model.push_to_hub(repo_id)
        manifest.append(
            {
                "repo_id": repo_id,
                "auto_class": auto_class,
                "class": name,
                "base_model_prefix": model.base_model_prefix,
                "commit": commit.oid,
            }
        )
    configs = []
    for config_class, _, _ in hf_attention.REGISTRY:
        config = config_class.tiny()
        repo_id = f"{NAMESPACE}/{config_class.__name__.lower()}"
        config.push_to_hub(repo_id)
        configs.append({"repo_id": repo_id, "config": config.to_diff_dict()})
    (folder / "manifest.json").write_text(json.dumps({"models": manifest, "configs": configs}))
    report(manifest)


def load_and_compare(auto_class: str, repo_id: str, reference: dict, prefix: str = "", **kwargs):
    """Load `repo_id` with the Auto class and check weights (exactly) and outputs against the reference."""
    if not HAS_HF_ATTENTION:
        kwargs["trust_remote_code"] = True
    model = getattr(transformers, auto_class).from_pretrained(repo_id, **kwargs).eval()
    expected_module = "hf_attention." if HAS_HF_ATTENTION else "transformers_modules."
    assert type(model).__module__.startswith(expected_module), type(model).__module__
    weights = model.state_dict()
    expected = {name.removeprefix(prefix): t for name, t in reference.items() if name.startswith(prefix)}
    expected = {name: t for name, t in expected.items() if not name.startswith("output.")}
    assert weights.keys() == expected.keys(), sorted(weights.keys() ^ expected.keys())
    for name, tensor in weights.items():
        assert torch.equal(tensor, expected[name]), f"{repo_id}: weight {name} differs"
    return model


def load_registry(folder: Path) -> None:
    """Load every pushed model with its own Auto class and, for heads, as a base model through AutoModel."""
    manifest = json.loads((folder / "manifest.json").read_text())
    seen = []
    for entry in manifest["models"]:
        inputs = {k.removeprefix("input."): v for k, v in load_file(folder / f"{entry['class']}.in").items()}
        reference = load_file(folder / f"{entry['class']}.out")
        model = load_and_compare(entry["auto_class"], entry["repo_id"], reference)
        assert type(model).__name__ == entry["class"], type(model).__name__
        loaded = tensors_of(model, inputs)
        for name in (name for name in reference if name.startswith("output.")):
            torch.testing.assert_close(loaded[name], reference[name], msg=f"{entry['repo_id']}: {name} differs")
        if entry["auto_class"] != "AutoModel":
            load_and_compare("AutoModel", entry["repo_id"], reference, prefix=entry["base_model_prefix"] + ".")
        assert run_card_snippet(entry["repo_id"]).__name__ == entry["class"]
        seen.append({"repo_id": entry["repo_id"], "class": type(model).__name__, "module": type(model).__module__})
    if HAS_HF_ATTENTION:  # a config alone carries no code: it loads where hf_attention is installed
        for entry in manifest["configs"]:
            config = transformers.AutoConfig.from_pretrained(entry["repo_id"])
            loaded = json.loads(json.dumps(config.to_diff_dict()))  # as the manifest stores it: JSON keys are strings
            assert {key: loaded.get(key) for key in entry["config"]} == entry["config"], (loaded, entry["config"])
    report(seen)


def run_card_snippet(repo_id: str, revision: str | None = None) -> type:
    """Run the usage snippet of the model card as a user would paste it; returns the class it loaded."""
    card = Path(hf_hub_download(repo_id, "README.md", revision=revision)).read_text()
    snippet = re.search(r"```python\n(.*?)```", card, re.DOTALL).group(1)
    namespace = {}
    exec(snippet, namespace)
    return type(namespace["model"])


def tiny_classifier(seed: int):
    torch.manual_seed(seed)
    return hf_attention.VisionTransformerForImageClassification(hf_attention.VisionTransformerConfig.tiny()).eval()


def push_revisions(folder: Path) -> None:
    """main <- model 0; branch dev <- model 1, tagged v1; dev <- model 2 (the tag stays on model 1)."""
    repo_id, api = f"{NAMESPACE}/revisions", HfApi()
    commits = {}
    for seed, revision in ((0, None), (1, "dev"), (2, "dev")):
        model = tiny_classifier(seed)
        save_file(tensors_of(model, model.dummy_inputs), folder / f"seed{seed}.out")
        commits[seed] = model.push_to_hub(repo_id, revision=revision).oid
        if seed == 1:
            api.create_tag(repo_id, tag="v1", revision="dev")
    (folder / "commits.json").write_text(json.dumps(commits))
    report(commits)


def load_revisions(folder: Path) -> None:
    repo_id = f"{NAMESPACE}/revisions"
    commits = json.loads((folder / "commits.json").read_text())
    expected_seed = {"main": 0, "dev": 2, "v1": 1, commits["1"]: 1, commits["0"]: 0}
    for revision, seed in expected_seed.items():
        reference = load_file(folder / f"seed{seed}.out")
        load_and_compare("AutoModelForImageClassification", repo_id, reference, revision=revision)
    assert run_card_snippet(repo_id, revision="dev").__name__ == "VisionTransformerForImageClassification"
    report(expected_seed)


def outcome(step) -> dict:
    """What a failing step raised: its type, the types it was caused by, and its message."""
    try:
        step()
    except Exception as error:
        chain, cause = [], error
        while cause is not None:
            chain.append([klass.__name__ for klass in type(cause).__mro__])
            cause = cause.__cause__
        return {"types": chain, "message": str(error)}
    return {"types": [], "message": "no error"}


def failures(folder: Path) -> None:
    """Missing repo, file and revision; then pushes that the server breaks in the middle (armed by the test)."""
    api, existing = HfApi(), f"{NAMESPACE}/existing"
    results = {
        "missing repo (api)": outcome(lambda: api.model_info(f"{NAMESPACE}/missing")),
        "missing repo (from_pretrained)": outcome(
            lambda: transformers.AutoModel.from_pretrained(f"{NAMESPACE}/missing")
        ),
        "missing file": outcome(lambda: hf_hub_download(existing, "missing.json")),
        "missing file (from_pretrained)": outcome(lambda: tiny_classifier(0).from_pretrained(existing)),
        "missing revision": outcome(lambda: hf_hub_download(existing, "README.md", revision="no-such-branch")),
        "missing revision (from_pretrained)": outcome(
            lambda: transformers.AutoConfig.from_pretrained(existing, revision="no-such-branch")
        ),
    }
    for name, repo_id, revision in json.loads((folder / "failing_pushes.json").read_text()):
        results[name] = outcome(partial(tiny_classifier(0).push_to_hub, repo_id, revision=revision))
    results["repo exists"] = {name: api.repo_exists(name) for name in (existing, f"{NAMESPACE}/new-repo")}
    results["branches"] = [branch.name for branch in api.list_repo_refs(existing).branches]
    report(results)


def push_with_trainer(folder: Path) -> None:
    """`Trainer(push_to_hub=True)`: transformers' own route, which calls `save_pretrained` and uploads the folder."""
    repo_id = f"{NAMESPACE}/trainer-route"
    model = tiny_classifier(0).train()
    inputs = model.dummy_inputs
    pixels = inputs["pixel_values"]
    examples = [{"pixel_values": image, "labels": torch.tensor(i % 3)} for i, image in enumerate(pixels)]
    arguments = transformers.TrainingArguments(
        output_dir=str(folder / "trainer"), max_steps=1, per_device_train_batch_size=2, report_to="none",
        push_to_hub=True, hub_model_id=repo_id, hub_strategy="end", save_strategy="no", use_cpu=True,
    )  # fmt: skip
    trainer = transformers.Trainer(model=model, args=arguments, train_dataset=examples)
    trainer.train()
    trainer.push_to_hub()
    save_file(tensors_of(model.eval(), inputs), folder / "trainer.out")
    report({"repo_id": repo_id})


def load_trainer_push(folder: Path) -> None:
    reference = load_file(folder / "trainer.out")
    load_and_compare("AutoModelForImageClassification", f"{NAMESPACE}/trainer-route", reference)
    report({"loaded": True, "has_hf_attention": HAS_HF_ATTENTION})


STEPS = {
    "push-with-trainer": push_with_trainer,
    "load-trainer-push": load_trainer_push,
    "push-registry": push_registry,
    "load-registry": load_registry,
    "push-revisions": push_revisions,
    "load-revisions": load_revisions,
    "failures": failures,
}

if __name__ == "__main__":
    try:
        STEPS[sys.argv[1]](Path(sys.argv[2]))
    except Exception:
        traceback.print_exc()
        sys.exit(1)
