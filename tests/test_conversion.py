"""transformers' ViT weights load into ours and give the same outputs."""

import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification, ViTModel

from hf_attention import VisionTransformerForImageClassification, VisionTransformerModel, from_transformers


def reference_config(**overrides):
    settings = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=16, patch_size=4, num_labels=5, layer_norm_eps=1e-12, hidden_act="gelu",
    )  # fmt: skip
    settings.update(overrides)
    return ViTConfig(**settings)


@torch.no_grad()
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_classifier_parity(implementation):
    reference = ViTForImageClassification(reference_config()).eval()
    ours = from_transformers(reference)
    ours.set_attn_implementation(implementation)
    assert type(ours) is VisionTransformerForImageClassification
    pixels = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(ours(pixels).logits, reference(pixels).logits, atol=1e-5, rtol=1e-5)
    larger = torch.randn(1, 3, 24, 24)
    torch.testing.assert_close(
        ours(larger, interpolate_pos_encoding=True).logits,
        reference(larger, interpolate_pos_encoding=True).logits,
        atol=1e-5,
        rtol=1e-5,
    )


@torch.no_grad()
def test_base_model_parity_and_weights_are_copied_not_shared():
    reference = ViTModel(reference_config(qkv_bias=False, num_channels=1)).eval()
    ours = from_transformers(reference)
    assert type(ours) is VisionTransformerModel
    pixels = torch.randn(2, 1, 16, 16)
    expected = reference(pixels, output_hidden_states=True)
    got = ours(pixels, output_hidden_states=True)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, atol=1e-5, rtol=1e-5)
    for got_state, expected_state in zip(got.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(got_state, expected_state, atol=1e-5, rtol=1e-5)
    reference.layernorm.weight.add_(1.0)
    assert not torch.equal(ours.layernorm.weight, reference.layernorm.weight)


def test_labels_and_config_carry_over():
    reference = ViTForImageClassification(reference_config(id2label={i: f"class_{i}" for i in range(5)}))
    ours = from_transformers(reference)
    assert ours.config.id2label[3] == "class_3" and ours.config.layer_norm_eps == 1e-12


def test_unsupported_models_are_named():
    with pytest.raises(TypeError, match="No conversion for Linear; supported: .*ViTForImageClassification, ViTModel"):
        from_transformers(torch.nn.Linear(2, 2))
