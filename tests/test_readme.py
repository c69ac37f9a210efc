"""The README's catalogue examples run as written."""

from pathlib import Path

import torch

README = Path(__file__).parent.parent / "README.md"


def test_catalogue_examples_run():
    text = README.read_text()
    block = text[text.index("### Three lines each") :].split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {}
    with torch.no_grad():
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["out"].shape == (2, 64, 28, 28)
    assert namespace["generated"].shape[0] == 2 and namespace["prediction"].shape == (1, 50)
    assert namespace["config"].attention_type == "linformer"
