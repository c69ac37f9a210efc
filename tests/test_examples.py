"""Every example runs offline and prints what it promises."""

import runpy
from pathlib import Path

import pytest

from hf_attention.apps.data import FASHION_MNIST_DIR

pytestmark = pytest.mark.slow  # subprocesses and training runs: `pytest -m "not slow"` skips them

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))
# data that no pip install brings, by example, with the command that installs it
SYSTEM_DATA = {"glimpse_translated_fashion_mnist.py": (FASHION_MNIST_DIR, "apt-get install -y dataset-fashion-mnist")}


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.name)
def test_example_runs(script, capsys, tmp_path, monkeypatch):
    data_dir, install = SYSTEM_DATA.get(script.name, (None, None))
    if data_dir is not None and not data_dir.is_dir():
        pytest.skip(f"{script.name} needs the data in {data_dir}: `{install}`")
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    printed = capsys.readouterr().out
    differences = [float(line.split("= ")[1].split(",")[0]) for line in printed.splitlines() if "= " in line]
    assert differences and max(differences) < 1e-4, printed
