"""The base of every hf_attention configuration: extra keys kept as transformers keeps them, near-misses of our own
fields named, common fields validated.

transformers' `PreTrainedConfig` stores any unknown keyword as an attribute, and its machinery and tests set attributes
on configs that must survive a save and a load; ours do the same. But `is_casual=True` would then build a non-causal
model without a word, so a keyword that is a near-miss of one of our fields is refused at construction, naming the
field, while reading a saved config only warns (a `config.json` is data, perhaps from a newer release: it must load).
Torch-free, like every configuration file.
"""

import dataclasses
import math
import re
from contextvars import ContextVar
from difflib import get_close_matches

from transformers import PreTrainedConfig
from transformers.utils import logging

from .checks import check_choice, check_counts, check_positive, check_sizes

logger = logging.get_logger(__name__)

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
# keys transformers itself passes or writes besides the fields: never taken for a misspelt field
TRANSFORMERS_KEYS = frozenset(
    {
        "num_labels", "torch_dtype", "name_or_path", "_name_or_path", "_commit_hash", "output_attentions",
        "attn_implementation", "experts_implementation", "per_layer_config", "model_type", "auto_map",
        "transformers_version", "_attn_implementation_internal", "_experts_implementation_internal",
    }
)  # fmt: skip


def _generation_keys() -> frozenset:
    from transformers.generation.configuration_utils import GenerationConfig

    return frozenset(GenerationConfig._get_default_generation_params())


# our fields that hold a size or a count, by name: each must be a positive integer (a width, a number of heads, a
# length, a stride, ...), or an integer >= 0 for a number of layers, units or top-k candidates (a family may ask for
# more), so that a negative or zero value fails at construction, naming the field, instead of deep inside torch
SIZE_FIELD = re.compile(
    r"^num_|_size$|_sizes$|_dim$|_channels$|_heads$|_length$|_layers$|^depths$|_depth$|_units$|_k$"
    r"|^max_position_embeddings$|^reduction$|^recurrence$|^stride$"
)
COUNT_FIELD = re.compile(r"_layers$|_units$|^depths$|_top_k$")  # rerank_top_k=0: rank by ITC alone
_TRANSFORMERS_FIELDS = frozenset(field.name for field in dataclasses.fields(PreTrainedConfig))

# True while a saved config is read (`from_dict`, which `from_pretrained` and the Auto classes use)
_READING_SAVED_CONFIG: ContextVar[bool] = ContextVar("hf_attention_reading_saved_config", default=False)
NEAR_MISS_CUTOFF = 0.8  # difflib's ratio: `is_casual` / `is_causal` scores 0.89, `hidden_sizes` / `hidden_size` 0.96


class HFAttentionConfig(PreTrainedConfig):
    """`PreTrainedConfig` that keeps extra keys, refuses near-misses of its fields and validates common fields.

    Subclasses are `@strict` dataclasses. A family that renamed a field keeps old checkpoints loading through
    `attribute_map` (old name -> new name).
    """

    def __post_init__(self, **kwargs):
        self._check_near_misses(kwargs)
        super().__post_init__(**kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        token = _READING_SAVED_CONFIG.set(True)
        try:
            return super().from_dict(config_dict, **kwargs)
        finally:
            _READING_SAVED_CONFIG.reset(token)

    def _check_near_misses(self, kwargs: dict) -> None:
        """Raise (a keyword) or warn (a saved config) for extra keys that look like a misspelt field of ours."""
        fields = [field.name for field in dataclasses.fields(self) if not field.name.startswith("_")]
        known = set(fields) | set(self.attribute_map) | set(self.sub_configs) | TRANSFORMERS_KEYS | _generation_keys()
        near_misses = {}
        for key in kwargs:
            close = [] if key in known else get_close_matches(key, fields, n=1, cutoff=NEAR_MISS_CUTOFF)
            if close:
                near_misses[key] = close[0]
        if not near_misses:
            return
        reasons = ", ".join(f"`{key}` (did you mean `{field}`?)" for key, field in near_misses.items())
        message = f"{type(self).__name__} got {reasons}"
        if _READING_SAVED_CONFIG.get():
            logger.warning(f"{message}; kept as an extra attribute, which this model does not read.")
            return
        raise TypeError(
            f"{message}. To keep an extra attribute of that name, set it after construction "
            f"(`config.{next(iter(near_misses))} = ...`). Fields: {', '.join(sorted(fields))}."
        )

    def validate_architecture(self):
        """Part of `@strict` validation: the common fields, then transformers' own checks.

        A family's `validate_architecture` calls this first: its own checks compute with these values
        (`hidden_size % num_heads`), so a zero or a NaN must be refused here first, by name."""
        self.check_common_fields()
        super().validate_architecture()

    def check_common_fields(self) -> None:
        """The fields many configs share, when this config has them, and every size."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name, None)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"`{field.name}` must be a finite number, got {value}.")
        for name in ("layer_norm_eps", "norm_eps", "batch_norm_eps", "initializer_range"):
            check_positive(name, getattr(self, name, None))
        self._check_sizes()
        if self.problem_type is not None:
            check_choice("problem_type", self.problem_type, PROBLEM_TYPES)
        for field in dataclasses.fields(self):
            if field.name.endswith(("_act", "activation", "activation_function")):
                check_activation(field.name, getattr(self, field.name, None))

    def _check_sizes(self) -> None:
        """Every size or count field of ours (by name, `SIZE_FIELD`): integers, > 0 for sizes, >= 0 for counts."""
        for field in dataclasses.fields(self):
            if field.name in _TRANSFORMERS_FIELDS or not SIZE_FIELD.search(field.name):
                continue
            value = getattr(self, field.name, None)
            values = enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]
            check = check_counts if COUNT_FIELD.search(field.name) else check_sizes
            for index, item in values:
                check(**{field.name if index is None else f"{field.name}[{index}]": item})

    def validate_token_ids(self):
        """Part of `@strict` validation; transformers only logs a warning for an id outside the vocabulary."""
        vocab_size = getattr(self, "vocab_size", None)
        if not isinstance(vocab_size, int):
            return
        for field in dataclasses.fields(self):
            value = getattr(self, field.name, None)
            if field.name.endswith("_token_id") and isinstance(value, int) and not 0 <= value < vocab_size:
                raise ValueError(f"`{field.name}` must lie in [0, vocab_size={vocab_size}), got {value}.")


def check_activation(name: str, value) -> None:
    """Raise unless `value` (a string) names an activation of `transformers.activations.ACT2FN`."""
    if not isinstance(value, str):
        return
    from transformers.activations import ACT2FN  # lazily: configs import no torch at module level

    if value not in ACT2FN:
        close = get_close_matches(value, list(ACT2FN), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"`{name}` {value!r} is not a known activation{hint}.")


__all__ = ["HFAttentionConfig", "PROBLEM_TYPES", "check_activation"]
