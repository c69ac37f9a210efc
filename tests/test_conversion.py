"""transformers' ViT and CLIP weights load into ours and give the same outputs."""

import math

import pytest
import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
)

from hf_attention import (
    VisionTextCrossAttentionForImageTextRetrieval,
    VisionTextCrossAttentionModel,
    VisionTransformerForImageClassification,
    VisionTransformerModel,
    from_transformers,
)


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


# --- CLIP ----------------------------------------------------------------------------------------------------------

# tiny CLIP towers of different widths, so that a projection or a tower swapped by the conversion cannot fit
CLIP_TEXT = dict(
    vocab_size=60, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=16, bos_token_id=1, pad_token_id=0, eos_token_id=59,
)  # fmt: skip
CLIP_VISION = dict(
    image_size=16, patch_size=4, hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4
)


def clip_texts():
    """Three right-padded texts ending in the end-of-text token (the highest id), one at full length."""
    input_ids = torch.tensor([[5, 9, 13, 59, 0, 0], [7, 8, 9, 10, 11, 59], [3, 4, 59, 0, 0, 0]])
    return input_ids, (input_ids != 0).long()


@torch.no_grad()
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_clip_model_converts_to_the_image_text_model_with_the_same_embeddings_and_logits(implementation):
    reference = CLIPModel(CLIPConfig(text_config=CLIP_TEXT, vision_config=CLIP_VISION, projection_dim=12)).eval()
    reference.logit_scale.fill_(5.0)  # above our default clamp at log(100): the conversion must keep it
    reference.set_attn_implementation(implementation)
    ours = from_transformers(reference)
    ours.set_attn_implementation(implementation)
    assert type(ours) is VisionTextCrossAttentionModel
    input_ids, mask = clip_texts()
    for pixels in (torch.randn(3, 3, 16, 16), torch.randn(2, 3, 16, 16)):  # as many images as texts, and fewer
        expected = reference(input_ids=input_ids, attention_mask=mask, pixel_values=pixels, output_hidden_states=True)
        got = ours(input_ids=input_ids, attention_mask=mask, pixel_values=pixels, output_hidden_states=True)
        for name in ("image_embeds", "text_embeds", "logits_per_image", "logits_per_text"):
            torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-5, msg=name)
        got_states, expected_states = got.vision_model_output.hidden_states, expected.vision_model_output.hidden_states
        for mine, theirs in zip(got_states, expected_states, strict=True):
            torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)
    features = ours.get_image_features(pixels).pooler_output
    torch.testing.assert_close(features, reference.get_image_features(pixels).pooler_output, atol=1e-5, rtol=0)
    features = ours.get_text_features(input_ids, mask).pooler_output
    expected = reference.get_text_features(input_ids, mask).pooler_output
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=0)


@torch.no_grad()
def test_converted_clip_ranks_by_its_contrastive_scores_alone_after_a_save_and_load(tmp_path):
    reference = CLIPModel(CLIPConfig(text_config=CLIP_TEXT, vision_config=CLIP_VISION, projection_dim=12)).eval()
    ours = from_transformers(reference)
    assert ours.config.rerank_top_k == 0  # CLIP has no ITM: rank() must not re-order by an untrained one
    assert ours.config.max_logit_scale >= math.log(100.0) and ours.logit_scale == reference.logit_scale
    ours.save_pretrained(tmp_path)
    retrieval = VisionTextCrossAttentionForImageTextRetrieval.from_pretrained(tmp_path).eval()
    input_ids, mask = clip_texts()
    pixels = torch.randn(3, 3, 16, 16)
    ranking = retrieval.rank(pixel_values=pixels, input_ids=input_ids, attention_mask=mask)
    logits = reference(input_ids=input_ids, attention_mask=mask, pixel_values=pixels).logits_per_image
    torch.testing.assert_close(ranking.scores, logits, atol=1e-5, rtol=1e-5)  # the saved weights, reloaded
    assert ranking.itm_scores is None
    assert torch.equal(ranking.indices, logits.argsort(dim=-1, descending=True))


@torch.no_grad()
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_clip_vision_model_converts_to_our_vit_with_a_norm_before_the_first_layer(implementation):
    reference = CLIPVisionModel(CLIPVisionConfig(**CLIP_VISION)).eval()
    reference.set_attn_implementation(implementation)
    ours = from_transformers(reference)
    ours.set_attn_implementation(implementation)
    assert type(ours) is VisionTransformerModel and ours.config.pre_layernorm
    pixels = torch.randn(2, 3, 16, 16)
    expected, got = reference(pixels, output_hidden_states=True), ours(pixels, output_hidden_states=True)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, atol=1e-5, rtol=1e-5)
    for mine, theirs in zip(got.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)
    # ours normalises every token, as transformers' ViT; CLIP only the class token it pools
    normed = reference.post_layernorm(expected.last_hidden_state)
    torch.testing.assert_close(got.last_hidden_state, normed, atol=1e-5, rtol=1e-5)
    larger = torch.randn(1, 3, 24, 24)
    torch.testing.assert_close(
        ours(larger, interpolate_pos_encoding=True).pooler_output,
        reference(larger, interpolate_pos_encoding=True).pooler_output,
        atol=1e-5,
        rtol=1e-5,
    )
