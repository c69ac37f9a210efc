"""Render `benchmarks/results/*.json` as Markdown, so the numbers on the documentation's pages are the numbers in
the files.

    python docs/gen_results.py                  # the results page, on stdout
    python docs/gen_results.py --output x.md    # ... into a file
    python docs/gen_results.py --readme         # rewrite README.md's headline table from the files
    python docs/gen_results.py --check-readme   # exit 1 if README.md's headline table is out of date

`mkdocs build` calls this module through `docs/hooks.py`: the results page is generated on every build (it is never
a file under docs/), and a `<!-- results: NAME -->` line in any page becomes the table of `NAME.json`.

Any JSON renders: its description (`benchmark`, `task`, ...) and `command`, its setup (scalars, `setup`, `settings`,
`machine`, ...) folded away, and one table per list of records or mapping of named records. Records with `seeds`
show the mean and every seed's value; `criterion` / `criterion_met` become a pass or fail line. A `previous` list
holds superseded figures: it stays in the file, not on the page.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"

# (section title, family page relative to docs/, file-name prefixes), in page order
GROUPS = [
    ("Against reference implementations", "families/multi-head-attention.md", ("reference_parity",)),
    ("Vision Transformer", "families/vit.md", ("vit_",)),
    ("Attention CNN", "families/attention-cnn.md", ("attention_cnn",)),
    ("Criss-cross attention", "families/criss-cross.md", ("criss_cross",)),
    ("Additive attention: the encoder-decoder", "families/additive.md", ("seq2seq",)),
    ("Linformer", "families/linformer.md", ("linformer",)),
    ("Video (X-CLIP)", "families/video.md", ("video",)),
    ("Image-text", "families/image-text.md", ("image_text",)),
    ("Hard attention (glimpses)", "families/glimpse.md", ("glimpse",)),
    (
        "CPU kernels and precision",
        "guides/optimize-for-cpu.md",
        ("cpu_", "bf16_", "half_precision", "fused_qkv", "python_overhead"),
    ),
    ("GPU", "guides/attention-backends.md", ("gpu",)),
]
# files kept for their history: a measurement of an older commit, machine or code path
EARLIER = re.compile(r"(_at_[0-9a-f]{7,}|_before_|_first_machine)")
# in each section, the files that show the mechanism doing its job come before speed and precision files
LEADS = {"vit_digits", "vit_fashion_mnist", "video_temporal", "video_distractor", "image_text_relations",
         "image_text_openmoji", "glimpse_cluttered_mnist", "glimpse_table"}  # fmt: skip
DESCRIPTION_KEYS = ("benchmark", "task", "description", "title", "claim", "what", "question")
SETUP_KEYS = ("setup", "settings", "machine", "method", "environment", "config", "data")
COMMAND_KEYS = ("command", "arguments", "argv")
MAIN_KEYS = ("results", "rows", "runs", "metrics", "models", "variants_results")
NOISE_KEYS = ("other_processes",)  # what else ran: kept in the file, too long for a table cell
FINDINGS_KEYS = ("findings", "notes")
SKIPPED_KEYS = ("previous",)  # superseded figures: they stay in the JSON
IMAGES = "benchmark-images/"  # where docs/hooks.py serves benchmarks/results/*.png on the site
MAX_COLUMNS = 14
MAX_ROWS = 60


# --- values ---------------------------------------------------------------------------------------------------


def number(value: float) -> str:
    """Four significant figures, thousands separated; integers as they are."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value != 0 and abs(value) >= 1000:
        return f"{value:,.0f}"
    if value != 0 and abs(value) >= 100:
        return f"{value:.1f}"
    text = f"{value:.4g}"
    return text if "." in text or "e" in text or "n" in text else text + ".0"


def escape(text: str) -> str:
    """Text from a file as Markdown text, not HTML or links: `<script ...>` in a command must not become a tag, nor
    `[--seed 1]` a cross-reference."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("[", "\\[").replace("]", "\\]")


def cell(value, limit: int | None = 160) -> str:
    """One table cell: numbers formatted, short lists joined, long lists summarised, pipes escaped, text cut at
    `limit` characters (None: never)."""
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return number(value)
    if isinstance(value, list):
        if all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in value) and value:
            if len(value) > 6:
                return f"{number(min(value))} to {number(max(value))} ({len(value)} values)"
            return " / ".join(number(item) for item in value)
        text = ", ".join(cell(item) for item in value)
    elif isinstance(value, dict):
        text = ", ".join(f"{key} {cell(item)}" for key, item in value.items())
    else:
        text = str(value)
    text = escape(text).replace("|", "\\|").replace("\n", " ")
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def is_record(value) -> bool:
    return isinstance(value, dict) and any(not isinstance(item, dict) for item in value.values())


def holds_table(record: dict) -> bool:
    """A record with a mapping of mappings inside (per-variant or per-seed rows): rendered as its own part."""
    return any(
        isinstance(value, dict) and value and all(isinstance(item, dict) for item in value.values())
        for value in record.values()
    )


def seed_summary(seeds) -> dict:
    """`seeds` as a list of numbers or of per-seed records: each numeric field's mean and the values per seed."""
    if all(isinstance(item, (int, float)) for item in seeds):
        return {"seeds": f"{number(statistics.fmean(seeds))} ({' / '.join(number(s) for s in seeds)})"}
    if not all(isinstance(item, dict) for item in seeds):
        return {"seeds": cell(seeds)}
    summary = {}
    for key in seeds[0]:
        values = [item.get(key) for item in seeds]
        if key == "seed":
            summary["seeds"] = " / ".join(str(value) for value in values)
        elif all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
            summary[key] = f"{number(statistics.fmean(values))} ({' / '.join(number(v) for v in values)})"
    return summary


def flatten(record: dict, prefix: str = "") -> dict:
    """A record's fields as columns: nested records one level deep as `outer.inner`, per-round lists dropped."""
    columns = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if key.endswith("_per_round") or key in SKIPPED_KEYS or key in NOISE_KEYS:
            continue
        if key == "seeds" and isinstance(value, list) and value:
            columns.update({f"{prefix}{k}": v for k, v in seed_summary(value).items()})
        elif key == "criterion_met" and isinstance(value, bool):
            columns[name] = "met" if value else "**not met**"
        elif isinstance(value, dict) and not prefix:
            if all(isinstance(item, dict) for item in value.values()):
                for inner, item in value.items():
                    columns.update(flatten(item, f"{name}.{inner}."))
            else:
                columns.update(flatten(value, f"{name}."))
        else:
            columns[name] = value
    return columns


# --- tables ---------------------------------------------------------------------------------------------------


def table(rows: list[dict], first_column: str | None = None) -> str:
    """A Markdown table over the union of the rows' columns (in first-seen order)."""
    flat = [flatten(row) for row in rows[:MAX_ROWS]]
    commands = [row.pop(key) for row in flat for key in COMMAND_KEYS if key in row]
    columns: list[str] = []
    for row in flat:
        columns += [key for key in row if key not in columns]
    dropped = columns[MAX_COLUMNS:]
    columns = columns[:MAX_COLUMNS]
    numeric = {c: all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in flat) for c in columns}
    header = "| " + " | ".join(c.replace("_", " ") for c in columns) + " |"
    rule = "|" + "|".join("---:" if numeric[c] and c != first_column else "---" for c in columns) + "|"
    lines = [header, rule] + ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in flat]
    notes = []
    if len(rows) > MAX_ROWS:
        notes.append(f"{len(rows) - MAX_ROWS} more rows in the file")
    if dropped:
        notes.append(
            f"{len(dropped)} more columns in the file ({', '.join(dropped[:6])}{', ...' if len(dropped) > 6 else ''})"
        )
    text = "\n".join(lines) + ("\n\n*" + "; ".join(notes) + ".*" if notes else "")
    if commands:
        listed = "\n".join(f"    {' '.join(map(str, c)) if isinstance(c, list) else c}" for c in commands)
        text += f'\n\n??? note "Commands"\n\n    ```\n{listed}\n    ```'
    return text


def named_table(mapping: dict, key_name: str) -> str:
    """A mapping of named records (`{"cfa+mit": {...}, ...}`) as a table whose first column is the name."""
    rows = [
        {key_name: name, **(value if isinstance(value, dict) else {"value": value})} for name, value in mapping.items()
    ]
    return table(rows, first_column=key_name)


def mean(values) -> float | int:
    """The mean; a value every seed shares (steps, parameters) stays as it is."""
    values = list(values)
    return values[0] if len(set(values)) == 1 else statistics.fmean(values)


def per_seed_table(variants: dict) -> str:
    """`{variant: {seed: record}}` as one row per seed, and a mean row per variant run on several seeds."""
    rows = []
    for variant, seeds in variants.items():
        ordered = sorted(
            seeds.items(), key=lambda item: (not item[0].isdigit(), int(item[0]) if item[0].isdigit() else 0)
        )
        records = [{"variant": variant, "seed": seed, **record} for seed, record in ordered]
        rows += records
        if len(records) > 1:
            numeric = [key for key, value in records[0].items() if isinstance(value, (int, float)) and key != "seed"]
            numeric = [key for key in numeric if all(isinstance(r.get(key), (int, float)) for r in records)]
            rows.append({"variant": f"**{variant}, mean**", "seed": f"{len(records)} seeds",
                         **{key: mean(r[key] for r in records) for key in numeric}})  # fmt: skip
    return table(rows, first_column="variant")


def setup_block(data: dict) -> str:
    """Everything that says how the numbers were made, folded away."""
    items = {key: value for key, value in data.items() if not isinstance(value, (dict, list)) and value is not None}
    items = {
        key: value
        for key, value in items.items()
        if key not in DESCRIPTION_KEYS + ("command", "criterion", "criterion_met")
    }
    for key in SETUP_KEYS:
        if isinstance(data.get(key), dict):
            items.update(flatten(data[key], f"{key}." if key != "setup" else ""))
    if not items:
        return ""
    body = "\n".join(f"    - **{key.replace('_', ' ')}**: {cell(value, None)}" for key, value in items.items())
    return f'??? info "How it was measured"\n\n{body}\n'


def tables(data: dict, depth: int = 0) -> list[str]:
    """One table per list of records or mapping of records; small mappings of numbers as two-column tables; a
    mapping that mixes them becomes a titled part with its own notes and tables."""
    out = []
    # the main results first, pilots and diagnoses after them
    items = sorted(data.items(), key=lambda item: depth > 0 or item[0] not in MAIN_KEYS)
    for key, value in items:
        if (depth == 0 and key in SETUP_KEYS) or key in SKIPPED_KEYS:
            continue
        title = f"**{key.replace('_', ' ')}**\n\n"
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            out.append(title + table(value))
        elif not isinstance(value, dict) or not value:
            continue
        elif all(is_record(item) and not holds_table(item) for item in value.values()):
            out.append(title + named_table(value, "variant"))
        elif any(value.values()) and all(
            isinstance(item, dict) and all(is_record(r) for r in item.values()) for item in value.values()
        ):
            out.append(title + per_seed_table(value))
        elif all(not isinstance(item, (dict, list)) for item in value.values()):
            out.append(title + named_table(value, "field"))
        elif depth < 4:
            notes = [f"**{k.replace('_', ' ')}**: {cell(v, None)}" for k, v in value.items()
                     if not isinstance(v, (dict, list)) and v is not None]  # fmt: skip
            inner = tables({k: v for k, v in value.items() if isinstance(v, (dict, list))}, depth + 1)
            if inner:
                out.append(title + "".join(f"- {note}\n" for note in notes) + "\n" + "\n\n".join(inner))
    return out


def criterion_line(data: dict) -> str:
    """The claim the file tests and whether it held (`criterion`, `criterion_met`)."""
    if "criterion_met" not in data:
        return (
            f'!!! question "Criterion"\n\n    {escape(" ".join(data["criterion"].split()))}\n'
            if isinstance(data.get("criterion"), str)
            else ""
        )
    met = bool(data["criterion_met"])
    kind, word = ("success", "Criterion met") if met else ("failure", "Criterion not met")
    text = escape(" ".join(str(data.get("criterion", "")).split())) or "see the file"
    return f'!!! {kind} "{word}"\n\n    {text}\n'


def findings_list(data: dict) -> str:
    """What the file says it found (`findings`, `notes`: lists of sentences), as bullets under the criterion."""
    sentences = [
        sentence
        for key in FINDINGS_KEYS
        if isinstance(data.get(key), list)
        for sentence in data[key]
        if isinstance(sentence, str)
    ]
    return "**What was found**\n\n" + "".join(f"- {escape(s)}\n" for s in sentences) if sentences else ""


def pictures_of(name: str, directory: Path = RESULTS) -> list[str]:
    """The PNGs a results file owns: those named after it (`NAME.png`, `NAME_*.png`), unless a longer file name
    claims them."""
    names = [path.stem for path in directory.glob("*.json")]
    owned = []
    for picture in sorted(directory.glob("*.png")):
        owners = [n for n in names if picture.stem == n or picture.stem.startswith(n + "_")]
        if owners and max(owners, key=len) == name:
            owned.append(picture.name)
    return owned


def render(name: str, data, directory: Path = RESULTS, images: str = IMAGES) -> str:
    """One results file, without a heading: description, command, criterion, tables, pictures, setup, superseded
    count. `images` is where the site serves `benchmarks/results/*.png`, relative to the page."""
    parts = [f"From `benchmarks/results/{name}.json`."]
    if not isinstance(data, dict):
        return "\n\n".join(
            parts + [table(data) if isinstance(data, list) and all(isinstance(i, dict) for i in data) else cell(data)]
        )
    description = next((data[key] for key in DESCRIPTION_KEYS if isinstance(data.get(key), str)), None)
    if description:
        description = escape(description)
        parts.append(description[0].upper() + description[1:] + ("" if description.endswith(".") else "."))
    if isinstance(data.get("command"), str):
        parts.append(f"```bash\n{data['command']}\n```")
    parts += [line for line in [criterion_line(data)] if line]
    parts += [findings for findings in [findings_list(data)] if findings]
    found = tables(data)
    parts += found or ["*(no table in this file: see the setup)*"]
    parts += [f"![{picture}]({images}{picture})" for picture in pictures_of(name, directory)]
    parts += [block for block in [setup_block(data)] if block]
    previous = [data[key] for key in SKIPPED_KEYS if isinstance(data.get(key), list)]
    if previous:
        parts.append(f"*{sum(len(p) for p in previous)} superseded measurements stay in the file, not on this page.*")
    return "\n\n".join(parts)


# --- the page -------------------------------------------------------------------------------------------------


def load(directory: Path = RESULTS) -> dict:
    """Every results file by name (the stem), sorted; a file that does not parse is reported, not skipped."""
    results = {}
    for path in sorted(directory.glob("*.json")):
        try:
            results[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            results[path.stem] = {"description": f"this file does not parse as JSON ({error})"}
    return results


def run_parent(name: str, results: dict) -> str | None:
    """`X_run_Y.json` is one run behind `X.json`: shown folded under it."""
    parent = name.split("_run_", 1)[0]
    return parent if "_run_" in name and parent in results else None


def group_of(name: str) -> int:
    for index, (_, _, prefixes) in enumerate(GROUPS):
        if name.startswith(prefixes):
            return index
    return len(GROUPS)


def results_page(directory: Path = RESULTS, docs_root: str = "") -> str:
    """The whole results page: the headline table, then every file by topic, earlier measurements last."""
    results = load(directory)
    lines = [
        "# Results",
        "",
        "Every number on this page is read from `benchmarks/results/*.json` by `docs/gen_results.py` when the site is "
        "built, so the page and the files cannot disagree. A file says how it was made (the command, the machine, "
        "the load); figures a later run superseded stay in the repository's history or in a file's `previous` list, "
        "not here. Speed is always measured side by side with the reference in one run, and the ratio is what counts: "
        "these are shared 2-core machines, where a lone absolute time means little.",
        "",
        "## Headline",
        "",
        headline_table(results),
        "",
    ]
    current = {name: data for name, data in results.items() if not EARLIER.search(name)}
    for index, (title, page, _) in enumerate([*GROUPS, ("Other", None, ())]):
        names = sorted((name for name in current if group_of(name) == index), key=lambda n: n not in LEADS)
        if not names:
            continue
        lines += [f"## {title}", ""]
        if page:
            lines += [f"The mechanism and how to use it: [{Path(page).stem.replace('-', ' ')}]({docs_root}{page}).", ""]
        for name in names:
            if run_parent(name, current):
                continue
            lines += [f"### {name}", "", render(name, current[name], directory), ""]
            for run in [other for other in names if run_parent(other, current) == name]:
                body = render(run, current[run], directory).splitlines()
                lines += [f'??? note "{run}"', "", *("    " + line if line else "" for line in body), ""]
    earlier = [name for name in results if EARLIER.search(name)]
    if earlier:
        lines += [
            "## Earlier measurements",
            "",
            "Kept for comparison with the files above: the same benchmark on an older commit, machine or code "
            "path (the name says which).",
            "",
        ]
        for name in earlier:
            lines += [
                f'??? note "{name}"',
                "",
                *("    " + line if line else "" for line in render(name, results[name], directory).splitlines()),
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


# --- the headline ---------------------------------------------------------------------------------------------


def _vit_digits(results):
    runs = [v for k, v in results["vit_digits"]["results"].items() if k.startswith("60 epochs (the default)")]
    accuracies = " / ".join(f"{run['accuracy']:.3f}" for run in runs)
    wall = f"{min(r['wall_seconds'] for r in runs):.0f}-{max(r['wall_seconds'] for r in runs):.0f} s"
    return (
        "ViT, `hf-attention train vit` (digits)",
        f"test accuracy {accuracies} (seeds 0-2)",
        f"{wall} wall each, 2 CPU cores",
    )


def _vit_fashion(results):
    data = results["vit_fashion_mnist"]["results"]
    runs = [
        v for k, v in data.items() if "default" in k and "until" not in k and isinstance(v, dict) and "accuracy" in v
    ]
    if not runs:
        return None
    accuracies = " / ".join(f"{run['accuracy']:.4f}" for run in runs)
    return ("ViT on Fashion-MNIST (`--dataset fashion-mnist`)", f"test accuracy {accuracies}", f"{len(runs)} seeds")


def _seq2seq(results):
    models = results["seq2seq_reversal"]["models"]
    longest = max(models["additive"]["accuracy_by_length"], key=int)
    additive = models["additive"]["accuracy_by_length"][longest]["exact_match"]
    fixed = models["fixed"]["accuracy_by_length"][longest]["exact_match"]
    return (
        "Additive attention vs a fixed context (reverse a digit string)",
        f"exact match at length {longest}: {additive:.2f} vs {fixed:.2f}",
        "same GRU encoder-decoder",
    )


def _video(results):
    rows = results["video_temporal"]["results"]
    full, free = rows["cfa+mit"], rows["none+mean"]
    return (
        "X-CLIP (CFA + MIT) against an order-free mean pool, direction of motion",
        f"true direction above its opposite {full['reversal_accuracy']:.3f} vs {free['reversal_accuracy']:.3f}",
        f"1 seed, {results['video_temporal']['setup']['epochs']} epochs; "
        f"8-way {full['accuracy']:.3f} vs {free['accuracy']:.3f}",
    )


def _criss_cross(results):
    row = results["criss_cross_cpu"]["results"][-1]
    faster, smaller = row["speedup_vs_non_local_sdpa"], row["memory_ratio_non_local_sdpa_over_criss_cross"]
    return (
        f"Criss-cross vs non-local attention ({row['size']} map)",
        f"{faster:.1f}x faster, {smaller:.1f}x less memory",
        "forward + backward, one CPU thread",
    )


def _attention_cnn(results):
    rows = {row["attention"]: row for row in results["attention_cnn_fashion_mnist"]["results"]}
    best = max(rows.values(), key=lambda row: row["test_accuracy"])
    return (
        "Attention CNN on Fashion-MNIST (1 epoch, 3 seeds)",
        f"{best['attention']} {best['test_accuracy']:.4f} vs none {rows['none']['test_accuracy']:.4f}",
        f"{len(rows) - 1} blocks compared",
    )


def _vit_speed(results):
    rows = results["vit_cpu_epyc_avx512"]["results"]
    row = next(r for r in rows if r.get("case") == "inference fp32" and r.get("attn_implementation") == "sdpa")
    return (
        "ViT-S/16 vs transformers' ViT (fp32 inference, sdpa)",
        f"{row['ratio']:.2f}x its images/s",
        "same weights, interleaved rounds",
    )


def short_title(text: str, limit: int = 100) -> str:
    """The first sentence of a description (a period before a capital; "et al. 2014" is not an end), cut to `limit`."""
    first = re.split(r"(?<=[a-z0-9)][.:?])\s+(?=[A-Z])", text.strip().split("\n\n")[0], maxsplit=1)[0]
    first = " ".join(first.split()).rstrip(".:")
    return first if len(first) <= limit else first[: limit - 3].rsplit(" ", 1)[0] + "..."


def _demonstration(name: str, what: str, metric: str, label: str):
    """A headline row for a demonstration (top-level `rows` of variant/seed records, `seeds`, `criterion_met`):
    `metric`'s mean over the seeds for each variant, and the verdict."""

    def row(results):
        data = results[name]
        rows = data["rows"]
        if isinstance(rows, dict):  # {variant: {seed: record}}
            rows = [{"variant": variant, **record} for variant, seeds in rows.items() for record in seeds.values()]
        means = {}
        for record in rows:
            means.setdefault(record["variant"], []).append(record[metric])
        measured = ", ".join(f"{variant} {number(mean(values))}" for variant, values in means.items())
        verdict = "criterion met" if data["criterion_met"] else "**criterion not met**"
        return what, f"{label}, mean of {len(data['seeds'])} seeds: {measured}", f"{verdict}; `{name}.json`"

    return row


HEADLINES = [
    _vit_digits,
    _vit_fashion,
    _vit_speed,
    _seq2seq,
    _video,
    _criss_cross,
    _attention_cnn,
    _demonstration(
        "glimpse_cluttered_mnist", "Hard attention (RAM) on 60x60 cluttered MNIST", "error_percent", "test error %"
    ),
    _demonstration(
        "image_text_relations", "ITM re-ranking on three-garment relation captions", "R@1", "image-to-text R@1"
    ),
    _demonstration(
        "video_distractor", "Cross-frame attention, a glyph among its jumping twin", "accuracy", "8-way accuracy"
    ),
]


def headline_table(results: dict | None = None) -> str:
    """One small table of the figures that show the mechanisms doing their job; a row whose file is missing or
    has another shape is left out (the full page still renders that file)."""
    results = load() if results is None else results
    rows = []
    for headline in HEADLINES:
        try:
            row = headline(results)
        except (KeyError, StopIteration, TypeError, ValueError, IndexError):
            row = None
        if row:
            rows.append(row)
    lines = ["| what | result | notes |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


# --- README ---------------------------------------------------------------------------------------------------

START, END = "<!-- headline results: generated by docs/gen_results.py --readme -->", "<!-- end of headline results -->"


def readme_with_headline(text: str) -> str:
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{headline_table()}\n{END}{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, help="write the results page here instead of stdout")
    parser.add_argument("--readme", action="store_true", help="rewrite README.md's headline table")
    parser.add_argument("--check-readme", action="store_true", help="exit 1 if README.md's headline table is stale")
    args = parser.parse_args(argv)
    if args.readme or args.check_readme:
        text = README.read_text()
        updated = readme_with_headline(text)
        if args.check_readme:
            print("README.md's headline table is", "up to date" if updated == text else "stale: run --readme")
            return int(updated != text)
        README.write_text(updated)
        return 0
    page = results_page()
    if args.output:
        args.output.write_text(page)
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
