"""Sharing what a job trained: the end-of-job report and `push_folder` (weights, code, processor, model card)."""

import argparse
import json
from pathlib import Path


def report(title: str, summary, args: argparse.Namespace) -> int:
    """Print a finished job's summary (on the main process only) and push its folder if `--push-to-hub` asks."""
    from accelerate import PartialState

    if not PartialState().is_main_process:  # under `accelerate launch` one process reports and pushes
        return 0
    print("\n".join(["", f"{title}: done", *summary.lines()]))
    if args.push_to_hub:
        push_folder(summary.output_dir, args.push_to_hub)
    return 0


# `push_to_hub` writes these itself from the loaded model
WRITTEN_BY_PUSH = {"config.json", "README.md", "model.safetensors.index.json"}


def push_folder(folder: str | Path, repo_id: str, revision: str | None = None, private: bool | None = None) -> str:
    """Push a saved model with its code, a model card (with the results `hf-attention train` saved, if any) and
    the folder's other files, such as the image processor's, in one commit; returns the commit URL."""
    from transformers import PreTrainedConfig

    from .. import REGISTRY
    from ..pretrained import PICKLE_SUFFIXES
    from .training import TRAINING_SUMMARY_FILE

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        what = "has no config.json" if folder.is_dir() else "does not exist"
        raise FileNotFoundError(f"Cannot push {folder}: the folder {what}; save a model there first.")
    classes = {cls.__name__: cls for _, base, heads in REGISTRY for cls in (base, *heads.values())}
    architecture = (PreTrainedConfig.from_pretrained(folder).architectures or ["?"])[0]
    if architecture not in classes:
        raise ValueError(f"{folder} holds a {architecture}, not a model hf_attention defines: {sorted(classes)}.")
    summary_file = folder / TRAINING_SUMMARY_FILE
    extra_files = [
        path
        for path in folder.iterdir()
        if path.is_file() and path.name not in WRITTEN_BY_PUSH and path.suffix not in (".safetensors", *PICKLE_SUFFIXES)
    ]
    model = classes[architecture].from_pretrained(folder)
    commit = model.push_to_hub(
        repo_id,
        revision=revision,
        private=private,
        training_results=json.loads(summary_file.read_text()) if summary_file.exists() else None,
        extra_files=extra_files,
    )
    print(f"pushed {architecture} from {folder} to {commit.commit_url}")
    return commit.commit_url


__all__ = ["push_folder", "report"]
