"""`accelerate launch` runs the training job on several processes and one loadable model comes out.

On CPUs the multi-process launcher is `accelerate launch --multi_gpu` (torchrun underneath, gloo on CPU);
`accelerate launch --cpu --num_processes 2` starts ONE process unless MPI is configured.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageClassification

import hf_attention  # registers the Auto classes

pytestmark = pytest.mark.slow  # subprocesses and training runs: `pytest -m "not slow"` skips them

ACCELERATE = shutil.which("accelerate")
PACKAGE_ROOT = Path(hf_attention.__file__).parents[1]


@pytest.mark.skipif(ACCELERATE is None, reason="the accelerate command is not installed")
def test_two_cpu_processes_train_and_the_main_process_saves_one_model(tmp_path):
    output_dir = tmp_path / "vit"
    command = [
        ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "-m", "hf_attention.apps.cli", "train", "vit", "--epochs", "1", "--train-size", "64",
        "--batch-size", "16", "--num-layers", "1", "--hidden-size", "32", "--mlp-size", "64", "--output-dir",
        str(output_dir),
    ]  # fmt: skip
    python_path = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))  # this checkout
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": python_path}
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=900)
    assert finished.returncode == 0, finished.stderr[-4000:]
    assert finished.stdout.count("hf-attention train vit: done") == 1  # one process reports
    assert "processes         2" in finished.stdout
    summary = json.loads((output_dir / "training_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["train_size"] == 64
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob(".*saving-*"))
    model = AutoModelForImageClassification.from_pretrained(output_dir).eval()
    with torch.no_grad():
        logits = model(**model.dummy_inputs).logits
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
