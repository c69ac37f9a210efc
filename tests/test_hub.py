"""Hub sharing, proven against a real Hub-protocol server on 127.0.0.1 (tests/hub_server.py), with no network.

Every client step runs in its own process (tests/hub_client.py) with HF_ENDPOINT pointing at the server, a fresh
HF_HOME, a dummy token and a dead proxy for any stray traffic. Both upload routes are covered: classic LFS
(HF_HUB_DISABLE_XET=1, the server asks for LFS) and the default environment with the server asking for regular
uploads. The round trip iterates over `hf_attention.REGISTRY`, so every family is covered as soon as it is
registered: its config needs a `tiny()` classmethod and its models a `dummy_inputs` property.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from hub_client import tiny_model
from hub_server import Hub, HubServer
from huggingface_hub import ModelCard
from safetensors.torch import load, load_file

import hf_attention

pytestmark = pytest.mark.slow  # subprocesses and training runs: `pytest -m "not slow"` skips them

TESTS = Path(__file__).parent
PACKAGE_ROOT = Path(hf_attention.__file__).parents[1]
NAMESPACE = "test-user"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

# Imported by site at start-up (it is first on PYTHONPATH): makes `hf_attention` unimportable even though the
# editable install's finder is on sys.meta_path, so the process stands for a machine without hf_attention.
BLOCK_HF_ATTENTION = """
import sys


class BlockHFAttention:
    def find_spec(self, name, path=None, target=None):
        if name == "hf_attention" or name.startswith("hf_attention."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, BlockHFAttention())
"""


@pytest.fixture
def hub_server():
    server = HubServer(Hub())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def client_environment(server: HubServer, route: str, hf_home: Path) -> dict[str, str]:
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("HF_", "HUGGINGFACE_", "PYTHONPATH")) and not name.lower().endswith("_proxy")
    }
    environment = {
        **inherited,
        "HF_ENDPOINT": server.endpoint,
        "HF_HOME": str(hf_home),
        "HF_TOKEN": "hf_dummy_token_for_the_test_server",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HTTPS_PROXY": "http://127.0.0.1:9",  # nothing listens on port 9: stray traffic fails at once
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONPATH": str(PACKAGE_ROOT),  # this checkout, whatever an editable install elsewhere points to
    }
    if route == "lfs":
        environment["HF_HUB_DISABLE_XET"] = "1"
    return environment


def run_client(server: HubServer, tmp_path: Path, step: str, route: str, hf_attention_installed: bool = True):
    """Run one client step in a fresh process with a fresh HF_HOME; returns the JSON it reports."""
    hf_home = Path(tempfile.mkdtemp(prefix="hf-home-", dir=tmp_path))
    environment = client_environment(server, route, hf_home)
    if not hf_attention_installed:
        (hf_home / "sitecustomize.py").write_text(BLOCK_HF_ATTENTION)
        environment["PYTHONPATH"] = str(hf_home)
    command = [sys.executable, str(TESTS / "hub_client.py"), step, str(tmp_path)]
    finished = subprocess.run(command, env=environment, cwd=hf_home, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, f"client step {step} failed:\n{finished.stdout[-4000:]}\n{finished.stderr[-8000:]}"
    result = next(line for line in reversed(finished.stdout.splitlines()) if line.startswith("RESULT "))
    return json.loads(result.removeprefix("RESULT "))


def files_at(hub: Hub, repo_id: str, revision: str = "main"):
    repo = hub.repo("model", repo_id)
    return repo.resolve(revision).files


def registered_model_classes() -> set[str]:
    return {cls.__name__ for _, base, heads in hf_attention.REGISTRY for cls in (base, *heads.values())}


def check_pushed_repo(hub: Hub, repo_id: str, model_class: str, route: str) -> None:
    files = files_at(hub, repo_id)
    assert not [path for path in files if path.endswith(PICKLE_SUFFIXES)], sorted(files)
    assert files["model.safetensors"].lfs == (route == "lfs")
    assert not any(file.lfs for path, file in files.items() if path != "model.safetensors")
    config = json.loads(files["config.json"].content)
    assert config["architectures"] == [model_class]
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModel"}
    code_files = {f"{reference.split('.')[0]}.py" for reference in config["auto_map"].values()}
    for path in [path for path in files if path.endswith(".py")]:
        code_files |= {f"{name}.py" for name in re.findall(r"^from \.(\w+) import", files[path].content.decode(), re.M)}
    assert "pretrained.py" in code_files and code_files <= set(files), sorted(code_files - set(files))
    card = ModelCard(files["README.md"].content.decode())
    assert card.data.library_name == "transformers" and card.data.license == "apache-2.0"
    assert "hf-attention" in card.data.tags and len(card.data.tags) >= 3, card.data.tags
    assert card.data.pipeline_tag
    assert f'from_pretrained("{repo_id}", trust_remote_code=True)' in card.text


@pytest.mark.parametrize(
    ("config_class", "model_class"),
    [(config, model) for config, base, heads in hf_attention.REGISTRY for model in (base, *heads.values())],
    ids=lambda cls: cls.__name__,
)
def test_every_registered_class_builds_tiny_with_example_inputs(config_class, model_class):
    """The convention the Hub round trip relies on: `Config.tiny()` and `model.dummy_inputs` (fast, in-process)."""
    model, inputs = tiny_model(config_class, model_class)
    assert model.num_parameters() < 1_000_000
    assert model(**inputs) is not None


@pytest.mark.parametrize("route", ["lfs", "regular"])
def test_every_registered_class_pushes_and_loads_with_and_without_hf_attention(hub_server, tmp_path, route):
    hub = hub_server.hub
    hub.upload_mode = route
    pushed = run_client(hub_server, tmp_path, "push-registry", route)
    assert {entry["class"] for entry in pushed} == registered_model_classes()
    lfs_uploads = [path for method, path in hub.requests if method == "PUT" and path.startswith("/lfs-objects/")]
    assert bool(lfs_uploads) == (route == "lfs")
    for entry in pushed:
        check_pushed_repo(hub, entry["repo_id"], entry["class"], route)

    loaded = run_client(hub_server, tmp_path, "load-registry", route)
    assert {entry["module"].split(".")[0] for entry in loaded} == {"hf_attention"}
    loaded = run_client(hub_server, tmp_path, "load-registry", route, hf_attention_installed=False)
    assert {entry["module"].split(".")[0] for entry in loaded} == {"transformers_modules"}
    assert {entry["class"] for entry in loaded} == registered_model_classes()


def test_push_to_a_branch_and_load_by_branch_tag_and_commit(hub_server, tmp_path):
    hub = hub_server.hub
    hub.upload_mode = "regular"
    commits = run_client(hub_server, tmp_path, "push-revisions", "regular")
    repo = hub.repo("model", f"{NAMESPACE}/revisions")
    assert repo.branches["main"] == commits["0"] and repo.branches["dev"] == commits["2"]
    assert repo.tags == {"v1": commits["1"]}
    assert 'revision="dev"' in ModelCard(files_at(hub, repo.repo_id, "dev")["README.md"].content.decode()).text
    loaded = run_client(hub_server, tmp_path, "load-revisions", "regular")
    assert set(loaded) == {"main", "dev", "v1", commits["1"], commits["0"]}


@pytest.mark.parametrize(("route", "failing_request"), [("lfs", "lfs-upload"), ("regular", "commit")])
def test_failures_raise_huggingface_hub_errors_and_leave_the_repo_as_it_was(
    hub_server, tmp_path, route, failing_request
):
    hub = hub_server.hub
    hub.upload_mode = route
    existing = f"{NAMESPACE}/existing"
    hub.seed(existing, {"README.md": b"# kept as it is\n", "notes.txt": b"written before the failed pushes\n"})
    before = hub.repo("model", existing).state()
    failing_pushes = [
        ("push to an existing repo", existing, None),
        ("push to a new repo", f"{NAMESPACE}/new-repo", None),
        ("push to a new branch", existing, "feature"),
    ]
    (tmp_path / "failing_pushes.json").write_text(json.dumps(failing_pushes))
    hub.fail_next(failing_request, times=len(failing_pushes))

    results = run_client(hub_server, tmp_path, "failures", route)

    def raised(name: str, error_type: str, depth: int = 0) -> str:
        assert error_type in results[name]["types"][depth], (name, results[name])
        return results[name]["message"]

    assert "Repository Not Found" in raised("missing repo (api)", "RepositoryNotFoundError")
    assert f"{NAMESPACE}/missing" in raised("missing repo (from_pretrained)", "RepositoryNotFoundError", depth=1)
    assert "Entry Not Found" in raised("missing file", "EntryNotFoundError")
    assert f"'{existing}'" in raised("missing file (from_pretrained)", "OSError")
    assert "Revision Not Found" in raised("missing revision", "RevisionNotFoundError")
    assert "no-such-branch" in raised("missing revision (from_pretrained)", "RevisionNotFoundError", depth=1)
    for name, _, _ in failing_pushes:
        message = raised(name, "HfHubHTTPError")
        assert "507" in message and f"Injected failure: the storage backend failed during {failing_request}" in message
    assert hub.failures == {}, "every armed failure was hit"
    assert hub.repo("model", existing).state() == before
    assert (("model", f"{NAMESPACE}/new-repo")) not in hub.repos
    assert results["repo exists"] == {existing: True, f"{NAMESPACE}/new-repo": False}
    assert results["branches"] == ["main"]


def run_cli(server: HubServer, tmp_path: Path, *arguments: str) -> str:
    hf_home = Path(tempfile.mkdtemp(prefix="hf-home-", dir=tmp_path))
    command = [sys.executable, "-m", "hf_attention.apps.cli", *arguments]
    environment = client_environment(server, "lfs", hf_home)
    finished = subprocess.run(command, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, f"{arguments} failed:\n{finished.stdout[-4000:]}\n{finished.stderr[-8000:]}"
    return finished.stdout


def test_cli_trains_and_pushes_with_results_on_the_card_then_pushes_a_folder_to_a_private_branch(hub_server, tmp_path):
    hub = hub_server.hub
    output_dir = tmp_path / "vit"
    train = ["train", "vit", "--output-dir", str(output_dir), "--epochs", "0.25", "--hidden-size", "32"]
    run_cli(hub_server, tmp_path, *train, "--num-layers", "1", "--mlp-size", "64", "--push-to-hub", "test-user/trained")
    run_cli(hub_server, tmp_path, "push", str(output_dir), "test-user/pushed", "--revision", "dev", "--private")

    summary = json.loads((output_dir / "training_summary.json").read_text())
    trained = files_at(hub, "test-user/trained")
    assert not (output_dir / "training_args.bin").exists() and "training_args.bin" not in trained  # no pickles
    assert {"preprocessor_config.json", "training_summary.json", "modeling_vit.py", "model.safetensors"} <= set(trained)
    assert load(trained["model.safetensors"].content).keys() == load_file(output_dir / "model.safetensors").keys()
    card = ModelCard(trained["README.md"].content.decode())
    assert card.data.datasets == ["digits"] and card.data.metrics == ["accuracy"]
    assert card.data.pipeline_tag == "image-classification" and "vision-transformer" in card.data.tags
    assert card.data.eval_results[0].metric_value == round(summary["accuracy"], 4)

    pushed = hub.repo("model", "test-user/pushed")
    assert pushed.private and set(pushed.resolve("main").files) == {".gitattributes"}
    assert set(pushed.resolve("dev").files) == set(trained)
    assert 'revision="dev"' in pushed.resolve("dev").files["README.md"].content.decode()


def test_trainer_push_to_hub_gives_a_repo_that_loads_without_the_package(hub_server, tmp_path):
    """transformers' own route (Trainer calls save_pretrained, then uploads the folder) carries the code too."""
    hub_server.hub.upload_mode = "regular"
    run_client(hub_server, tmp_path, "push-with-trainer", "regular")
    files = files_at(hub_server.hub, f"{NAMESPACE}/trainer-route")
    config = json.loads(files["config.json"].content)
    assert config["auto_map"]["AutoModelForImageClassification"] == (
        "modeling_vit.VisionTransformerForImageClassification"
    )
    assert {"modeling_vit.py", "configuration_vit.py", "attention.py", "pretrained.py"} <= set(files)
    # Trainer uploads its own pickled training_args.bin; the weights are safetensors, and loading reads no pickle
    assert [path for path in files if path.endswith(PICKLE_SUFFIXES)] == ["training_args.bin"], sorted(files)
    card = ModelCard(files["README.md"].content.decode())
    assert {"hf-attention", "vision-transformer"} <= set(card.data.tags), card.data.tags
    loaded = run_client(hub_server, tmp_path, "load-trainer-push", "regular", hf_attention_installed=False)
    assert loaded == {"loaded": True, "has_hf_attention": False}
