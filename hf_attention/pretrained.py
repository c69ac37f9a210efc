"""The base class every hf_attention model shares.

- Loading is safetensors-only and fails with a message that names the file.
- `save_pretrained` is atomic (a failure half-way leaves the previous checkpoint as it was) and writes the model's
  code and `auto_map` into every folder, so a folder uploaded by any route loads with `trust_remote_code=True`.
- `push_to_hub` uploads weights, code and a model card in one commit.
- `loss_function` checks the labels and never writes `config.problem_type`; `resolve_forward_kwargs` refuses
  keywords a model does not take, instead of swallowing them.

This file is itself uploaded with every model (the modeling files import it), so it imports only transformers, its
dependencies and its sibling `checks.py` (uploaded with every config), never `hf_attention`.
"""

import contextlib
import functools
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from huggingface_hub import CommitInfo, EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError
from torch import nn
from transformers import PreTrainedModel
from transformers.dynamic_module_utils import custom_object_save
from transformers.models.auto import modeling_auto
from transformers.utils import TransformersKwargs, logging

from .checks import is_compute_float, name_near_misses

logger = logging.get_logger(__name__)

LIBRARY_TAG = "hf-attention"
# what `forward(**kwargs)` passes on: transformers' own keywords (Trainer adds num_items_in_batch) and return_dict
FORWARD_KWARGS = frozenset(TransformersKwargs.__annotations__) | {"return_dict"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")  # never uploaded: loading them unpickles
# the Hub's pipeline tag of each task Auto class a family may register a head with
PIPELINE_TAGS = {
    "AutoModelForImageClassification": "image-classification",
    "AutoModelForVideoClassification": "video-classification",
    "AutoModelForSequenceClassification": "text-classification",
    "AutoModelForTokenClassification": "token-classification",
    "AutoModelForCausalLM": "text-generation",
    "AutoModelForSeq2SeqLM": "text2text-generation",
    "AutoModelForZeroShotImageClassification": "zero-shot-image-classification",
    "AutoModelForImageSegmentation": "image-segmentation",
    "AutoModelForSemanticSegmentation": "image-segmentation",
    "AutoModelForObjectDetection": "object-detection",
    "AutoModelForImageTextToText": "image-text-to-text",
}


class HFAttentionPreTrainedModel(PreTrainedModel):
    """`PreTrainedModel` that never unpickles and names the file when a checkpoint is corrupt or truncated."""

    # transformers guesses from a modeling file's source whether `set_attn_implementation` can switch in place
    # (it looks for `ALL_ATTENTION_FUNCTIONS.get_interface(`). Ours always can: every attention module reads the
    # live `config._attn_implementation` through `attention.dot_product_attention` (tests/test_modeling_common.py
    # proves it for every family with a counting backend).
    _can_set_attn_implementation_cached_value = True
    # What `from_pretrained` loads within. The hf_attention package sets the context in which the checkpoints of its
    # earlier layouts convert (conversion.py); code shipped with a checkpoint reads only its own layout.
    _loading_context = staticmethod(contextlib.nullcontext)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        if kwargs.get("use_safetensors") is False:
            raise ValueError("hf_attention loads safetensors weights only; pickled checkpoints are never loaded.")
        kwargs["use_safetensors"] = True
        check_local_folder(pretrained_model_name_or_path)
        try:
            with cls._loading_context():
                loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as error:
            raise OSError(
                f"The safetensors weights of {pretrained_model_name_or_path!r} are corrupt or truncated ({error}). "
                "Save the model again, or delete the cached file and download it again."
            ) from error
        warn_about_non_finite_weights(loaded[0] if isinstance(loaded, tuple) else loaded, pretrained_model_name_or_path)
        return loaded

    def _initialize_weights(self, module: nn.Module, is_custom_code: bool = False) -> None:
        # For code outside transformers, transformers skips `_init_weights` on any module whose own parameters are all
        # flagged as loaded, and a module with no parameters of its own (an attention block over its projections, an
        # MLP) passes that test vacuously: X-CLIP's attention and MLP init was silently skipped that way. Our
        # `_init_weights` only use `transformers.initialization`, which checks the flag tensor by tensor, so loaded
        # weights stay untouched without the shortcut.
        super()._initialize_weights(module, is_custom_code=False)

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func=None, **kwargs):
        # Reentrant checkpointing passes no gradient to a block's parameters when none of the block's tensor inputs
        # requires one (torch only warns): the first block of a model fed fixed `inputs_embeds` or features would
        # never train. transformers fixes it only for `input_ids` models (`enable_input_require_grads`); we give the
        # block's first floating-point input a gradient path for every model.
        if gradient_checkpointing_func is not None:
            kwargs["gradient_checkpointing_func"] = functools.partial(
                _checkpoint_with_a_gradient_path, gradient_checkpointing_func
            )
        super()._set_gradient_checkpointing(enable, **kwargs)

    def post_init(self):
        super().post_init()
        self.add_model_tags([LIBRARY_TAG, *self.hub_tags()])  # Trainer's model card reads these

    @property
    def loss_function(self):
        """The classification / regression loss of `config.problem_type`, with the labels checked first."""
        return classification_loss

    # --- saving ---------------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory, *args, is_main_process: bool = True, push_to_hub: bool = False, **kwargs):
        """`PreTrainedModel.save_pretrained`, atomic, with the code and `auto_map` in the folder.

        Everything is written into a temporary folder beside the target and moved into place only once all of it
        is written, so a failure half-way (disk full, permissions) leaves the previous checkpoint loadable and
        unchanged. `push_to_hub=True` then pushes with `push_to_hub` (code and model card included); `repo_id`,
        `commit_message`, `private`, `token` and `revision` go to it.

        In a distributed run every rank may call this, as DeepSpeed, FSDP and hand-written loops do: as in
        transformers, only the main process (`is_main_process`, and rank 0 once `torch.distributed` is initialised)
        writes; the other ranks write nothing and return. Weights sharded with FSDP2's `fully_shard` (or any DTensor)
        are gathered first, which needs every rank to call this.
        """
        target = Path(save_directory)
        if target.exists() and not target.is_dir():
            raise NotADirectoryError(f"Cannot save the model into {target}: it is a file, not a folder.")
        hub_options = {name: kwargs.pop(name) for name in HUB_OPTIONS if name in kwargs}
        gathered_by_transformers = getattr(self.config, "distributed_config", None) is not None
        if kwargs.get("state_dict") is None and _is_sharded(self) and not gathered_by_transformers:
            # FSDP2 / tensor-parallel weights (DTensors) that transformers' own `distributed_config` does not gather:
            # every rank joins the gather, rank 0 receives the full weights (safetensors cannot write shards)
            kwargs["state_dict"] = _full_state_dict(self)
        if not self.should_save_on_this_rank(is_main_process):
            return super().save_pretrained(target, *args, is_main_process=False, **kwargs)
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.saving-", dir=target.parent))
        try:
            super().save_pretrained(staging, *args, **kwargs)
            self._write_code(staging)
            _move_into(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if push_to_hub:
            repo_id = hub_options.pop("repo_id", target.name)
            self.push_to_hub(repo_id, **hub_options)

    def _write_code(self, folder: Path) -> None:
        """The files defining this model's classes (and their sibling imports), and `auto_map` in config.json."""
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        for auto_class, defined_class in self.auto_classes().items():
            custom_object_save(defined_class, folder)  # its file and, recursively, its single-dot sibling imports
            auto_map[auto_class] = f"{defined_class.__module__.split('.')[-1]}.{defined_class.__name__}"
        config_file = folder / "config.json"
        config = json.loads(config_file.read_text())
        config_file.write_text(json.dumps({**config, "auto_map": auto_map}, indent=2, sort_keys=True) + "\n")

    # --- sharing on the Hub -------------------------------------------------------------------------------------

    def hub_tags(self) -> list[str]:
        """Tags naming the mechanism on the model card; families override this to be more specific."""
        return [self.config.model_type.removeprefix("hf_attention_").replace("_", "-")]

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str = "50GB",
        tags: list[str] | None = None,
        license: str = "apache-2.0",
        training_results: dict | None = None,
        extra_files: Iterable[str | Path] = (),
    ) -> CommitInfo:
        """Upload the safetensors weights, the config (with `auto_map`), the code and a model card in one commit.

        The commit is all-or-nothing on the Hub; if it fails, a repo or branch this call created is deleted again,
        so a failed push leaves the Hub as it was. `training_results` (`{"dataset": ..., "accuracy": ...}`) puts
        the dataset and metrics on the card; `extra_files` (e.g. a processor's JSON) travel in the same commit.
        """
        api = HfApi(token=token)
        repo_id, created_repo = _create(lambda ok: api.create_repo(repo_id, private=private, exist_ok=ok).repo_id)
        created_branch = False
        try:
            if revision is not None and not revision.startswith("refs/pr/"):
                _, created_branch = _create(lambda ok: api.create_branch(repo_id, branch=revision, exist_ok=ok))
            with tempfile.TemporaryDirectory() as folder:
                self._save_for_hub(folder, max_shard_size, extra_files)
                card = self.model_card(repo_id, revision, tags, license, training_results)
                card.save(Path(folder) / "README.md")
                return api.upload_folder(
                    repo_id=repo_id,
                    folder_path=folder,
                    revision=revision,
                    create_pr=create_pr,
                    commit_message=commit_message or f"Upload {type(self).__name__}",
                    commit_description=commit_description,
                )
        except Exception as error:
            _undo_push(api, repo_id, revision if created_branch else None, created_repo, error)
            if isinstance(error, RuntimeError) and isinstance(error.__cause__, HfHubHTTPError):
                # huggingface_hub wraps a failed LFS upload in a RuntimeError: surface the Hub's own error type
                error.__cause__.add_note(str(error))
                raise error.__cause__ from None
            raise

    def _save_for_hub(self, folder: str, max_shard_size: int | str, extra_files: Iterable[str | Path]) -> None:
        for path in map(Path, extra_files):
            if path.suffix in PICKLE_SUFFIXES:
                raise ValueError(f"{path} is a pickle; hf_attention uploads safetensors weights only.")
            shutil.copy(path, Path(folder) / path.name)
        self.save_pretrained(folder, max_shard_size=max_shard_size)

    def auto_classes(self) -> dict[str, type]:
        """The Auto classes that build this model's family, by name: `AutoConfig`, `AutoModel` and its heads.

        Read from transformers' Auto registrations (which `hf_attention` fills from its REGISTRY, and
        `trust_remote_code` loading fills too), so that a pushed head also loads as a base model, and back.
        """
        config_class = type(self.config)
        found = {"AutoConfig": config_class}
        for name in filter(lambda name: name.startswith("AutoModel"), dir(modeling_auto)):
            mapping = getattr(modeling_auto, name)._model_mapping
            if config_class in mapping:
                found[name] = mapping[config_class]
        found.setdefault(self._auto_class or "AutoModel", type(self))
        return found

    def model_card(
        self,
        repo_id: str,
        revision: str | None = None,
        tags: list[str] | None = None,
        license: str = "apache-2.0",
        training_results: dict | None = None,
    ) -> ModelCard:
        """A card with the Hub's YAML metadata and a usage snippet that loads the model with or without hf_attention."""
        auto_class = next((name for name, cls in self.auto_classes().items() if cls is type(self)), "AutoModel")
        pipeline_tag = PIPELINE_TAGS.get(auto_class) or (
            "image-feature-extraction" if self.main_input_name.startswith("pixel_values") else "feature-extraction"
        )
        all_tags = [LIBRARY_TAG, *self.hub_tags(), *(self.model_tags or []), *(tags or []), "custom_code"]
        data = ModelCardData(
            library_name="transformers",
            license=license,
            pipeline_tag=pipeline_tag,
            tags=list(dict.fromkeys(all_tags)),
            model_name=repo_id.split("/")[-1],
        )
        if training_results:
            data.datasets = [training_results["dataset"]]
            data.metrics = ["accuracy"]
            data.eval_results = [
                EvalResult(
                    task_type=pipeline_tag,
                    dataset_type=training_results["dataset"],
                    dataset_name=training_results["dataset"],
                    dataset_split="test",
                    metric_type="accuracy",
                    metric_value=round(float(training_results["accuracy"]), 4),
                )
            ]
        body = _card_body(repo_id, revision, type(self).__name__, auto_class, self.num_parameters(), training_results)
        return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


HUB_OPTIONS = ("repo_id", "commit_message", "commit_description", "private", "token", "revision", "create_pr")
WEIGHT_PREFIXES = ("model.safetensors", "model-")


def _checkpoint_with_a_gradient_path(checkpoint, function, *args, **kwargs):
    """`checkpoint(function, *args, **kwargs)`, with the first floating-point tensor of `args` requiring a gradient when
    none does, so that reentrant checkpointing computes the parameters' gradients."""
    tensors = [index for index, value in enumerate(args) if isinstance(value, torch.Tensor)]
    if torch.is_grad_enabled() and not any(args[index].requires_grad for index in tensors):
        first = next((index for index in tensors if args[index].is_floating_point()), None)
        if first is not None:
            args = (*args[:first], args[first].detach().requires_grad_(), *args[first + 1 :])
    return checkpoint(function, *args, **kwargs)


def _is_sharded(model: nn.Module) -> bool:
    """Whether some parameter is a DTensor (FSDP2's `fully_shard`, tensor parallelism)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(parameter, DTensor) for parameter in model.parameters())


def _full_state_dict(model: nn.Module) -> dict:
    """The unsharded weights on CPU on rank 0 and {} on the other ranks; a collective that every rank must call."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _move_into(staging: Path, target: Path) -> None:
    """Move every file of `staging` into `target` (renames on one file system), then drop stale weight shards.

    The files it replaces are first moved aside into `staging`, so a rename that fails half-way puts them back:
    the folder never keeps a mix of the old checkpoint and the new one."""
    written = sorted(path.name for path in staging.iterdir())
    replaced = staging / ".replaced"
    replaced.mkdir()
    moved_in = []
    try:
        for name in written:
            if (target / name).exists():
                os.replace(target / name, replaced / name)
            os.replace(staging / name, target / name)
            moved_in.append(name)
    except BaseException:
        for name in moved_in:
            os.replace(target / name, staging / name)
        for path in replaced.iterdir():
            os.replace(path, target / path.name)
        raise
    for path in target.iterdir():
        if path.is_file() and path.name.startswith(WEIGHT_PREFIXES) and path.name not in written:
            path.unlink()


# --- loading -------------------------------------------------------------------------------------------------------


def check_local_folder(name_or_path) -> None:
    """A path that cannot be a Hub repo id (a `Path`, absolute, `./`, `~`, more than one `/`) must be a folder.

    transformers sends every name that is not an existing folder to the Hub, so a mistyped local path fails with
    "Repo id must be in the form 'repo_name' or 'namespace/repo_name'" instead of naming the missing folder.
    """
    if name_or_path is None:  # transformers builds from `config` and `state_dict` alone
        return
    path = os.fspath(name_or_path)
    if os.path.isdir(path) or os.path.isfile(path):
        return
    if not isinstance(name_or_path, os.PathLike) and is_repo_id(path):
        return  # transformers reports what the Hub or the cache says
    raise FileNotFoundError(
        f"No such folder: {path!r} ({os.path.abspath(path)} does not exist). from_pretrained takes "
        "a folder written by save_pretrained, or a Hub repo id such as 'namespace/name'."
    )


def widened(tensor: torch.Tensor) -> torch.Tensor:
    """float8 tensors in float16 (torch has no isnan/isfinite kernels for them); others as they are."""
    return tensor if is_compute_float(tensor) else tensor.to(torch.float16)


def is_repo_id(name: str) -> bool:
    """Whether `name` has the form of a Hub repo id ('name' or 'namespace/name')."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def warn_about_non_finite_weights(model: nn.Module, name_or_path, shown: int = 5) -> None:
    """Log a warning naming the loaded tensors that hold NaN (or an infinite parameter).

    transformers loads such a checkpoint silently, and the model then answers NaN for every input; a diverged
    training run saves exactly that. A warning rather than an error: such a checkpoint may be loaded on purpose, to
    inspect it. Buffers may hold -inf by design (additive masks), so only NaN counts for them.
    """
    parameters = {name for name, _ in model.named_parameters()}
    bad = [
        name
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point()
        and tensor.device.type != "meta"
        and not bool((torch.isfinite(widened(tensor)) if name in parameters else ~torch.isnan(widened(tensor))).all())
    ]
    if bad:
        more = f" and {len(bad) - shown} more" if len(bad) > shown else ""
        logger.warning(
            f"The weights loaded from {os.fspath(name_or_path)!r} hold NaN or infinite values in "
            f"{len(bad)} tensor(s): {', '.join(bad[:shown])}{more}. The model will give NaN outputs; the checkpoint "
            "was probably saved after training diverged."
        )


# --- forward keywords and losses ------------------------------------------------------------------------------------


def resolve_forward_kwargs(model: nn.Module, kwargs: dict) -> dict:
    """Refuse keywords `model.forward` does not take, and fill the output flags from the config.

    Every base model's `forward` calls this first. A typo such as `attention_maks=mask` would otherwise be
    swallowed by `**kwargs` and the result computed without a mask.
    """
    unknown = sorted(set(kwargs) - FORWARD_KWARGS)
    if unknown:
        parameters = [name for name in inspect.signature(model.forward).parameters if name != "kwargs"]
        raise TypeError(
            f"{type(model).__name__}.forward() got unexpected keyword arguments: "
            f"{name_near_misses(unknown, [*parameters, *sorted(FORWARD_KWARGS)])}. "
            f"It takes {', '.join(parameters)} and transformers' keywords ({', '.join(sorted(FORWARD_KWARGS))})."
        )
    kwargs["output_attentions"] = kwargs.get("output_attentions", model.config.output_attentions)
    kwargs["output_hidden_states"] = kwargs.get("output_hidden_states", model.config.output_hidden_states)
    return kwargs


def parameter_dtype(model: nn.Module, default: torch.dtype) -> torch.dtype:
    """The dtype of the model's first floating-point parameter, or `default` where it has none: transformers'
    `model.dtype` raises once a quantizer has turned every layer into packed integer weights."""
    return next((parameter.dtype for parameter in model.parameters() if is_compute_float(parameter)), default)


def in_model_dtype(model: nn.Module, tensor: torch.Tensor | None) -> torch.Tensor | None:
    """A float input in the model's dtype, as transformers' vision models cast `pixel_values`; integer and bool
    inputs are left for the checks to refuse (casting them would hide the mistake)."""
    if tensor is None or not tensor.is_floating_point():
        return tensor
    return tensor.to(parameter_dtype(model, tensor.dtype))


def problem_type_of(config, labels: torch.Tensor) -> str:
    """`config.problem_type`, or transformers' guess from the labels for this call only (the config is not written)."""
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    return "multi_label_classification" if labels.is_floating_point() else "single_label_classification"


def check_labels(labels: torch.Tensor, logits: torch.Tensor, problem_type: str) -> None:
    """Shape, dtype and range of `labels` for `problem_type`, each mistake with its own message."""
    batch_size, num_labels = logits.shape[0], logits.shape[-1]
    if problem_type == "single_label_classification":
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"Single-label classification takes integer class labels, got dtype {labels.dtype}.")
        if labels.shape != logits.shape[:-1]:
            raise ValueError(f"labels must have shape {tuple(logits.shape[:-1])}, got {tuple(labels.shape)}.")
        if not torch.compiler.is_compiling() and bool(((labels < 0) & (labels != -100) | (labels >= num_labels)).any()):
            raise ValueError(
                f"labels must be class indices in [0, {num_labels}) or -100 (ignored), got values from "
                f"{int(labels.min())} to {int(labels.max())}."
            )
        return
    if not labels.is_floating_point():
        raise ValueError(f"{problem_type} takes float labels, got dtype {labels.dtype}.")
    expected = [(batch_size, num_labels)] + ([(batch_size,)] if num_labels == 1 else [])
    if tuple(labels.shape) not in expected:
        raise ValueError(f"{problem_type} labels must have shape {expected[0]}, got {tuple(labels.shape)}.")
    if problem_type == "multi_label_classification" and not torch.compiler.is_compiling():
        if bool(((labels < 0) | (labels > 1)).any()):
            raise ValueError("multi_label_classification labels must be targets in [0, 1].")


def classification_loss(labels, logits, config, num_items_in_batch=None, **kwargs) -> torch.Tensor:
    """transformers' `ForSequenceClassificationLoss`, with the labels checked and `config.problem_type` unchanged.

    Single-label: cross-entropy over the labels that are not -100, summed and divided by their count (or by
    `num_items_in_batch`, which Trainer passes for gradient accumulation). A batch whose labels are all -100 gives
    0 with a zero gradient, never NaN.
    """
    problem_type = problem_type_of(config, labels)
    labels = labels.to(logits.device)
    check_labels(labels, logits, problem_type)
    if problem_type == "regression":
        return nn.functional.mse_loss(logits.float().reshape(labels.shape), labels.float())
    if problem_type == "multi_label_classification":
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
    # any integer dtype is a class index (datasets often stores int32): cross_entropy itself takes int64 only
    logits, labels = logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1).long()
    total = nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    count = (labels != -100).sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch)
    return total / count.to(total.device).clamp(min=1)


def _create(create) -> tuple[str, bool]:
    """Run `create(exist_ok)`: (its result, whether it created something). The Hub answers 409 when it exists."""
    try:
        return create(False), True
    except HfHubHTTPError as error:
        if error.response is None or error.response.status_code != 409:
            raise
        return create(True), False


def _undo_push(api: HfApi, repo_id: str, branch: str | None, repo: bool, error: Exception) -> None:
    """Delete what a failed push created; the error that made it fail is the one the caller sees."""
    try:
        if repo:
            api.delete_repo(repo_id)
        elif branch is not None:
            api.delete_branch(repo_id, branch=branch)
    except HfHubHTTPError as undo_error:
        error.add_note(f"hf_attention could not undo the failed push to {repo_id}: {undo_error}")


def _card_body(
    repo_id: str, revision: str | None, class_name: str, auto_class: str, num_parameters: int, results: dict | None
) -> str:
    revision_argument = f", revision={json.dumps(revision)}" if revision not in (None, "main") else ""
    lines = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"A `{class_name}` ({num_parameters:,} parameters) from the "
        f"[hf-attention](https://pypi.org/project/hf-attention/) package, pushed with its code.",
        "",
        "## Usage",
        "",
        "```python",
        f"from transformers import {auto_class}",
        "",
        f"model = {auto_class}.from_pretrained({json.dumps(repo_id)}{revision_argument}, trust_remote_code=True)",
        "```",
        "",
        "With `pip install hf-attention`, `import hf_attention` first and `trust_remote_code` is not needed: the",
        "installed code is used. Weights are safetensors only.",
    ]
    if results:
        lines += ["", "## Training", "", f"Trained with `hf-attention train` on `{results['dataset']}`.", ""]
        lines += ["| metric | value |", "|---|---|", f"| test accuracy | {float(results['accuracy']):.4f} |"]
        if "eval_loss" in results:
            lines.append(f"| test loss | {float(results['eval_loss']):.4f} |")
    return "\n".join(lines) + "\n"
