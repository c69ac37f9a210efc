import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hf_attention  # noqa: E402  (registers the Auto classes)

BACKENDS = ["eager", "sdpa", "flex_attention"]


def tiny_vit_config(**overrides) -> hf_attention.VisionTransformerConfig:
    settings = dict(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
    )
    settings.update(overrides)
    return hf_attention.VisionTransformerConfig(**settings)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
