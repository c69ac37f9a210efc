"""MkDocs hooks: the results page and every `<!-- results: NAME -->` line are generated from
`benchmarks/results/*.json` on each build (`docs/gen_results.py`), so no number is copied by hand; the PNGs beside
the files are served under `benchmark-images/`."""

import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).parent))
import gen_results  # noqa: E402

MARKER = re.compile(r"^<!-- results: ([\w.+-]+) -->$", re.MULTILINE)


def on_files(files, config):
    files.append(File.generated(config, "results.md", content=gen_results.results_page()))
    for picture in sorted(gen_results.RESULTS.glob("*.png")):
        files.append(File.generated(config, gen_results.IMAGES + picture.name, abs_src_path=str(picture)))
    return files


def on_page_markdown(markdown, page, config, files):
    results = gen_results.load()

    def rendered(match: re.Match) -> str:
        name = match.group(1)
        if name not in results:
            return f"*`benchmarks/results/{name}.json` has not been written yet.*"
        depth = page.file.src_uri.count("/")
        return gen_results.render(name, results[name], images="../" * depth + gen_results.IMAGES)

    return MARKER.sub(rendered, markdown)
