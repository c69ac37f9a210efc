"""The README is a front page: small, the house's two commands as .ci/run runs them, a catalogue that links a page per
family, and a headline table whose numbers are the numbers in benchmarks/results/ (its code blocks run in
tests/test_docs.py)."""

import re
import sys
from pathlib import Path

import hf_attention

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TEST_COMMAND = 'pip install torch==2.13.0 -e ".[dev]" && python -m pytest -q'
TRAIN_COMMAND = 'pip install torch==2.13.0 -e ".[train]" && hf-attention train vit'

sys.path.insert(0, str(ROOT / "docs"))
import gen_results  # noqa: E402


def test_the_readme_is_a_front_page_of_at_most_15000_bytes():
    assert len(README.read_bytes()) <= 15_000


def test_the_two_quick_start_commands_are_there_and_ci_runs_the_test_one_as_written():
    text = README.read_text()
    assert f"```bash\n{TRAIN_COMMAND}\n```" in text
    assert f"```bash\n{TEST_COMMAND}\n```" in text
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith(TEST_COMMAND)


def test_every_local_link_resolves_and_every_family_page_is_linked():
    text = README.read_text()
    links = re.findall(r"\]\(((?!https?://)[^)#]+)(?:#[^)]*)?\)", text)
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing
    pages = {path.relative_to(ROOT).as_posix() for path in (ROOT / "docs" / "families").glob("*.md")}
    assert pages <= set(links), sorted(pages - set(links))


def test_every_registered_model_is_named_in_the_catalogue():
    text = README.read_text()
    catalogue = text[text.index("## Catalogue") : text.index("## Three lines each")]
    heads = {head.__name__ for _, _, heads in hf_attention.REGISTRY for head in heads.values()}
    unnamed = sorted(name for name in heads if f"`{name}`" not in catalogue)
    assert not unnamed, unnamed


def test_the_headline_table_is_generated_from_the_results_files():
    text = README.read_text()
    assert gen_results.readme_with_headline(text) == text, "run `python docs/gen_results.py --readme`"
    assert text.count("\n| ", text.index(gen_results.START)) >= 5  # the table has rows
