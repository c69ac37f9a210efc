"""The base of every hf_attention configuration: unknown keys are refused, common fields are validated.

transformers' `PreTrainedConfig` stores any unknown keyword as an attribute, so `is_casual=True` builds a non-causal
model without a word. Ours names the unknown key and the closest valid one, both at construction and when a
`config.json` is loaded. Torch-free, like every configuration file.
"""

import dataclasses
import math
from difflib import get_close_matches

from transformers import PreTrainedConfig

from .checks import check_choice, check_non_negative, check_positive

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
# keys `PreTrainedConfig.__post_init__` consumes or that transformers writes into config.json besides the fields
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


class HFAttentionConfig(PreTrainedConfig):
    """`PreTrainedConfig` that refuses unknown keys and validates the fields most configs share.

    Subclasses are `@strict` dataclasses. A family that renamed a field keeps old checkpoints loading through
    `attribute_map` (old name -> new name), which this check accepts.
    """

    def __post_init__(self, **kwargs):
        self._refuse_unknown_keys(kwargs)
        super().__post_init__(**kwargs)

    def _refuse_unknown_keys(self, kwargs: dict) -> None:
        known = {field.name for field in dataclasses.fields(self)} | set(self.attribute_map)
        known |= set(self.sub_configs) | TRANSFORMERS_KEYS
        unknown = [key for key in kwargs if key not in known]
        unknown = [key for key in unknown if key not in _generation_keys()]
        if not unknown:
            return
        valid = sorted(field.name for field in dataclasses.fields(self) if not field.name.startswith("_"))
        reasons = []
        for key in unknown:
            close = get_close_matches(key, valid, n=1)
            reasons.append(f"`{key}`" + (f" (did you mean `{close[0]}`?)" if close else ""))
        raise TypeError(
            f"{type(self).__name__} got unknown keys: {', '.join(reasons)}. Valid keys: {', '.join(valid)}."
        )

    def validate_common_fields(self):
        """Part of `@strict` validation: the fields many configs share, when this config has them."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name, None)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"`{field.name}` must be a finite number, got {value}.")
        for name in ("layer_norm_eps", "norm_eps", "batch_norm_eps"):
            check_positive(name, getattr(self, name, None))
        check_non_negative("initializer_range", getattr(self, "initializer_range", None))
        if self.problem_type is not None:
            check_choice("problem_type", self.problem_type, PROBLEM_TYPES)
        hidden_act = getattr(self, "hidden_act", None)
        if isinstance(hidden_act, str):
            from transformers.activations import ACT2FN  # lazily: configs import no torch at module level

            if hidden_act not in ACT2FN:
                close = get_close_matches(hidden_act, list(ACT2FN), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"`hidden_act` {hidden_act!r} is not a known activation{hint}.")

    def validate_token_ids(self):
        """Part of `@strict` validation; transformers only logs a warning for an id outside the vocabulary."""
        vocab_size = getattr(self, "vocab_size", None)
        if not isinstance(vocab_size, int):
            return
        for field in dataclasses.fields(self):
            value = getattr(self, field.name, None)
            if field.name.endswith("_token_id") and isinstance(value, int) and not 0 <= value < vocab_size:
                raise ValueError(f"`{field.name}` must lie in [0, vocab_size={vocab_size}), got {value}.")


__all__ = ["HFAttentionConfig", "PROBLEM_TYPES"]
