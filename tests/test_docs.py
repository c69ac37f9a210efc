"""The documentation runs: every Python code block of README.md and docs/ is executed, the site builds with
`mkdocs build --strict` (a broken link, a missing page or an unknown API reference fails it), and the results page
shows the numbers of `benchmarks/results/*.json`.

A page's blocks run in order in one namespace (later blocks use what earlier ones built), in a temporary working
folder. A block right after a `<!-- no-run: REASON -->` line is not run: REASON says what it needs that the test
machine does not have (a download, a GPU, a trained model folder).
"""

import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
SLOW_PAGES = {"docs/guides/export.md"}  # the ONNX export: about 10 s
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
NO_RUN = re.compile(r"<!-- no-run: [^>]+ -->")

sys.path.insert(0, str(DOCS))
import gen_results  # noqa: E402


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(line number, code, runs) of every ```python block; `runs` is False after a no-run marker."""
    blocks = []
    for match in FENCE.finditer(text):
        if match.group(1) != "python":
            continue
        before = text[: match.start()]
        line_before = before.rstrip().rsplit("\n", 1)[-1].strip()
        runs = not NO_RUN.fullmatch(line_before)
        blocks.append((before.count("\n") + 1, match.group(2), runs))
    return blocks


def test_the_collector_reads_blocks_and_markers():
    text = "x\n\n```python\na = 1\n```\n\n<!-- no-run: download -->\n```python\nb = 2\n```\n\n```bash\nls\n```\n"
    assert python_blocks(text) == [(3, "a = 1\n", True), (8, "b = 2\n", False)]


def page_param(page: Path):
    name = page.relative_to(ROOT).as_posix()
    return pytest.param(page, id=name, marks=[pytest.mark.slow] if name in SLOW_PAGES else [])


@pytest.mark.parametrize("page", [page_param(page) for page in PAGES])
def test_the_python_blocks_of_a_page_run(page, tmp_path, monkeypatch):
    blocks = [(line, code) for line, code, runs in python_blocks(page.read_text()) if runs]
    if not blocks:
        pytest.skip("no Python block to run")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    namespace = {"__name__": "__docs__"}
    for line, code in blocks:
        # compiled with the page's line numbers, so a traceback points at the page
        exec(compile("\n" * (line) + code, str(page), "exec"), namespace)


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    """`mkdocs build --strict`: broken links, missing pages, unknown `:::` references and griffe warnings fail."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    cwd = os.getcwd()
    os.chdir(ROOT)  # the hooks and mkdocstrings' paths are relative to the root, as `mkdocs build` runs them
    try:
        config = load_config(str(ROOT / "mkdocs.yml"), strict=True, site_dir=str(tmp_path / "site"))
        build(config)
    finally:
        os.chdir(cwd)
    results = (tmp_path / "site" / "results" / "index.html").read_text()
    assert "criss_cross_cpu" in results
    assert (tmp_path / "site" / "families" / "vit" / "index.html").exists()


# --- the generated results ------------------------------------------------------------------------------------


def test_the_results_page_renders_every_file_and_its_numbers():
    page = gen_results.results_page()
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        assert path.stem in page, path.name
    # a number from a file is on the page as the file has it
    row = json.loads((ROOT / "benchmarks" / "results" / "criss_cross_cpu.json").read_text())["results"][-1]
    assert f"| {row['size']} | {row['positions']:,} | {gen_results.number(row['criss_cross_ms'])} |" in page


def test_an_unknown_schema_with_seeds_and_a_criterion_renders(tmp_path):
    (tmp_path / "new_demo.json").write_text(
        json.dumps(
            {
                "claim": "attention finds the digit",
                "criterion": "learned beats random by 5 points on every seed",
                "criterion_met": False,
                "setup": {"epochs": 3, "machine": "x86_64", "command": "train <script> [--seed 1]"},
                "findings": ["learned glimpses land on the digit"],
                "variants": {
                    "learned": {"seeds": [{"seed": 0, "accuracy": 0.9}, {"seed": 1, "accuracy": 0.8}]},
                    "random": {"seeds": [{"seed": 0, "accuracy": 0.5}, {"seed": 1, "accuracy": 0.7}]},
                },
                "previous": [{"accuracy": 0.1}],
            }
        )
    )
    page = gen_results.results_page(tmp_path)
    assert '!!! failure "Criterion not met"' in page
    assert "| learned | 0 / 1 | 0.85 (0.9 / 0.8) |" in page
    assert "1 superseded measurements stay in the file" in page
    assert "- learned glimpses land on the digit" in page
    assert "train &lt;script&gt; \\[--seed 1\\]" in page  # neither a tag nor a cross-reference
    assert gen_results.results_page(tmp_path / "missing").startswith("# Results")  # no files: still a page


# --- the shape of the family pages ----------------------------------------------------------------------------


def test_every_registered_config_has_its_reference_on_a_family_page_of_the_full_shape():
    import hf_attention

    pages = {path: path.read_text() for path in sorted((DOCS / "families").glob("*.md"))}
    for config_class, _, _ in hf_attention.REGISTRY:
        assert any(f"::: hf_attention.{config_class.__name__}\n" in text for text in pages.values()), config_class
    for path, text in pages.items():
        pictures = re.findall(r"!\[[^\]]*\]\(\.\./images/([^)]+)\)", text)
        assert pictures and all((DOCS / "images" / picture).exists() for picture in pictures), path.name
        for section in ("## The mechanism", "## Usage", "## Configuration", "## Measured", "## Limitations"):
            assert section in text, f"{path.name} has no {section!r}"
