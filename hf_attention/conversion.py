"""Weights from transformers' own models into ours: the one home of every weight-name map.

`from_transformers(model)` looks the model's class up in `CONVERTERS` and returns our equivalent with the same
weights. Each family adds one converter: a config translation plus a state-dict translation.

    >>> from transformers import ViTForImageClassification
    >>> from hf_attention import from_transformers
    >>> ours = from_transformers(ViTForImageClassification.from_pretrained("google/vit-base-patch16-224"))
"""

import logging
import re
from collections.abc import Callable

import torch
from transformers import PreTrainedModel, ViTForImageClassification, ViTModel

from .configuration_vit import VisionTransformerConfig
from .modeling_vit import VisionTransformerForImageClassification, VisionTransformerModel

logger = logging.getLogger(__name__)

# transformers' ViT name -> ours, applied in order; q/k/v projections are fused separately
VIT_RENAMES = [(r"\.attention\.o_proj\.", ".attention.out_proj.")]
VIT_FUSED_QKV = (r"(.*\.attention)\.(q|k|v)_proj\.(weight|bias)$", "{prefix}.qkv_proj.{kind}")
VIT_DROPPED = [r"^(vit\.)?pooler\."]

# our config field <- transformers' ViTConfig field (same meaning, same name)
VIT_CONFIG_FIELDS = [
    "image_size",
    "patch_size",
    "num_channels",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "layer_norm_eps",
    "initializer_range",
    "qkv_bias",
]


def rename_state_dict(
    state_dict: dict[str, torch.Tensor],
    renames: list[tuple[str, str]],
    fused: tuple[str, str] | None = None,
    dropped: list[str] = (),
) -> dict[str, torch.Tensor]:
    """Apply regex renames, drop unwanted keys, and concatenate q/k/v pieces matched by `fused` in q, k, v order."""
    converted, pieces = {}, {}
    for name, tensor in state_dict.items():
        if any(re.search(pattern, name) for pattern in dropped):
            continue
        for pattern, replacement in renames:
            name = re.sub(pattern, replacement, name)
        match = re.match(fused[0], name) if fused else None
        if match:
            prefix, which, kind = match.groups()
            pieces.setdefault(fused[1].format(prefix=prefix, kind=kind), {})[which] = tensor
            continue
        converted[name] = tensor
    for name, parts in pieces.items():
        if sorted(parts) != ["k", "q", "v"]:
            raise ValueError(f"Cannot fuse {name}: found only the {sorted(parts)} projections, expected q, k and v.")
        converted[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return converted


def _vit_config(source_config, **overrides) -> VisionTransformerConfig:
    fields = {name: getattr(source_config, name) for name in VIT_CONFIG_FIELDS}
    labels = {"id2label": source_config.id2label, "label2id": source_config.label2id}
    return VisionTransformerConfig(pooling="cls", **fields, **labels, **overrides)


def convert_vit(model: ViTModel | ViTForImageClassification) -> VisionTransformerModel:
    if isinstance(model, ViTModel) and model.pooler is not None:
        logger.warning(
            "transformers' ViTModel pooler (dense + tanh on the class token) has no counterpart here and is "
            "dropped; our pooler_output is the normalised class token. last_hidden_state is unchanged."
        )
    config = _vit_config(model.config)
    target_class = VisionTransformerForImageClassification
    if isinstance(model, ViTModel):
        target_class = VisionTransformerModel
    state_dict = rename_state_dict(model.state_dict(), VIT_RENAMES, VIT_FUSED_QKV, VIT_DROPPED)
    return _load_converted(target_class, config, state_dict, model.dtype)


def _load_converted(target_class, config, state_dict, dtype) -> PreTrainedModel:
    converted = target_class(config)
    missing, unexpected = converted.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"Converting into {target_class.__name__} left weights unmatched: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}. The conversion table in hf_attention/conversion.py needs updating."
        )
    return converted.to(dtype).eval()


CONVERTERS: dict[type, Callable[[PreTrainedModel], PreTrainedModel]] = {
    ViTModel: convert_vit,
    ViTForImageClassification: convert_vit,
}


def from_transformers(model: torch.nn.Module) -> PreTrainedModel:
    """Our equivalent of a transformers model, with the same weights (outputs agree within 1e-5 in fp32).

    Supported: `ViTModel` -> `VisionTransformerModel`, `ViTForImageClassification` ->
    `VisionTransformerForImageClassification`.
    """
    converter = CONVERTERS.get(type(model))
    if converter is None:
        supported = ", ".join(sorted(cls.__name__ for cls in CONVERTERS))
        raise TypeError(f"No conversion for {type(model).__name__}; supported: {supported}.")
    return converter(model)
