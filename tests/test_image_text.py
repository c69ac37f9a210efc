"""The cross-attention image-text model: ITC/ITM numbers against formulas and references, the pipeline, Trainer,
pretrained parts, and bad input. The CLIP text model has its own file (tests/test_clip_text.py); the REGISTRY-wide
contract (tests/test_modeling_common.py) covers the rest."""

import re

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from torch import nn
from transformers import (
    BertConfig,
    GPT2Config,
    Trainer,
    TrainingArguments,
    VisionTextDualEncoderProcessor,
    pipeline,
)

from hf_attention import (
    CLIPResidualTextConfig,
    VisionTextCrossAttentionConfig,
    VisionTextCrossAttentionForImageTextRetrieval,
    VisionTextCrossAttentionModel,
    VisionTransformerConfig,
    VisionTransformerModel,
)

TINY_BERT = dict(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)


def tiny_model(head=True, **overrides):
    config = VisionTextCrossAttentionConfig.tiny(**overrides)
    model_class = VisionTextCrossAttentionForImageTextRetrieval if head else VisionTextCrossAttentionModel
    return model_class(config).eval()


def batch(model, num_images=3, num_texts=3, length=6):
    text = model.config.text_config
    vision = model.config.vision_config
    mask = torch.ones(num_texts, length, dtype=torch.long)
    mask[1:, length - 2 :] = 0
    return {
        "input_ids": torch.randint(1, text.vocab_size, (num_texts, length)),
        "attention_mask": mask,
        "pixel_values": torch.randn(num_images, 3, vision.image_size, vision.image_size),
    }


def test_itc_logits_and_loss_follow_the_formula():
    model = tiny_model()
    inputs = batch(model)
    with torch.no_grad():
        outputs = model(**inputs, return_loss=True)
        base = model.vision_text_model
        image = base.visual_projection(base.vision_model(inputs["pixel_values"]).pooler_output)
        text = base.text_model(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        text = base.text_projection(text)
    scale = base.logit_scale.exp()
    expected = scale * nn.functional.normalize(image, dim=-1) @ nn.functional.normalize(text, dim=-1).T
    torch.testing.assert_close(outputs.logits_per_image, expected)
    torch.testing.assert_close(outputs.logits_per_text, expected.T)
    targets = torch.arange(3)
    itc = (nn.functional.cross_entropy(expected, targets) + nn.functional.cross_entropy(expected.T, targets)) / 2
    torch.testing.assert_close(outputs.itc_loss, itc)
    assert abs(float(base.logit_scale.detach()) - float(torch.log(torch.tensor(1 / 0.07)))) < 1e-6


def test_itm_hard_negative_loss_in_eval_mode_is_the_cross_entropy_of_the_hardest_pairs():
    model = tiny_model()
    inputs = batch(model, 4, 4)
    with torch.no_grad():
        outputs = model(**inputs, return_loss=True)
        logits = outputs.logits_per_image.clone()
        logits.fill_diagonal_(-float("inf"))
        hardest_text, hardest_image = logits.argmax(1), logits.argmax(0)
        base, mask = model.vision_text_model, inputs["attention_mask"]
        negative_texts = base(inputs["input_ids"][hardest_text], mask[hardest_text], inputs["pixel_values"]).itm_logits
        negative_images = base(inputs["input_ids"], mask, inputs["pixel_values"][hardest_image]).itm_logits
    all_logits = torch.cat((outputs.itm_logits, negative_texts, negative_images))
    labels = torch.tensor([1] * 4 + [0] * 8)
    torch.testing.assert_close(outputs.itm_loss, nn.functional.cross_entropy(all_logits, labels))
    torch.testing.assert_close(outputs.loss, outputs.itc_loss + outputs.itm_loss)


@pytest.mark.parametrize("direction", ["text_to_image", "image_to_text"])
def test_one_image_is_broadcast_against_k_texts(direction):
    model = tiny_model(fusion_direction=direction)
    inputs = batch(model, 1, 4)
    with torch.no_grad():
        one = model(**inputs)
        repeated = model(**{**inputs, "pixel_values": inputs["pixel_values"].expand(4, -1, -1, -1)})
    assert one.logits_per_image.shape == (1, 4)
    torch.testing.assert_close(one.itm_logits, repeated.itm_logits)
    torch.testing.assert_close(one.logits_per_image[0], repeated.logits_per_image[0])


def test_rank_scores_by_itc_and_reranks_the_top_k_by_itm():
    model = tiny_model()
    inputs = batch(model, 3, 5)
    itc_only = model.rank(**inputs, top_k=0)
    torch.testing.assert_close(itc_only.indices, itc_only.scores.argsort(dim=-1, descending=True))
    ranking = model.rank(**inputs, top_k=3)
    assert torch.equal(ranking.indices[:, 3:], itc_only.indices[:, 3:])
    for image in range(3):
        top = ranking.indices[image, :3]
        with torch.no_grad():
            pairs = model(
                input_ids=inputs["input_ids"][top],
                attention_mask=inputs["attention_mask"][top],
                pixel_values=inputs["pixel_values"][image : image + 1],
            ).itm_logits
        log_odds = pairs[:, 1] - pairs[:, 0]
        torch.testing.assert_close(log_odds, ranking.itm_scores[image])
        assert torch.all(log_odds[:-1] >= log_odds[1:])
        assert set(top.tolist()) == set(itc_only.indices[image, :3].tolist())
    by_text = model.rank(**inputs, query="text", top_k=2)
    assert by_text.indices.shape == (5, 3)


def test_sdpa_agrees_with_eager_and_attention_maps_are_real():
    model = tiny_model(head=False, fusion_direction="image_to_text")
    inputs = batch(model)
    with torch.no_grad():
        eager = model(**inputs, output_attentions=True)
        model.set_attn_implementation("sdpa")
        other = model(**inputs)
    torch.testing.assert_close(other.itm_logits, eager.itm_logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(other.logits_per_image, eager.logits_per_image, atol=1e-5, rtol=1e-4)
    (cross,) = eager.cross_attentions
    assert cross.shape == (3, 4, 17, 6)  # (pairs, heads, image tokens, text tokens)
    torch.testing.assert_close(cross.sum(-1), torch.ones(3, 4, 17))
    assert float(cross[1:, :, :, -2:].abs().max()) == 0.0  # padded text keys get no attention
    assert len(eager.vision_model_output.attentions) == 2 and len(eager.text_model_output.attentions) == 2


def test_per_tower_attention_implementation():
    model = tiny_model(head=False)
    model.set_attn_implementation({"vision_config": "eager", "text_config": "sdpa", "": "sdpa"})
    assert model.vision_model.config._attn_implementation == "eager"
    assert model.text_model.config._attn_implementation == "sdpa"
    assert model.config._attn_implementation == "sdpa"


def test_pipeline_zero_shot_on_a_saved_folder(tmp_path):
    from hf_attention.apps.data_image_text import train_caption_tokenizer
    from hf_attention.apps.training import make_image_processor

    labels = ["grinning face", "red apple", "black cat"]
    tokenizer = train_caption_tokenizer(labels * 3, vocab_size=80)
    model = tiny_model(text_config=CLIPResidualTextConfig.tiny(vocab_size=len(tokenizer)).to_dict())
    processor = VisionTextDualEncoderProcessor(image_processor=make_image_processor(16), tokenizer=tokenizer)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    from PIL import Image

    image = Image.new("RGB", (20, 20), "orange")
    classifier = pipeline("zero-shot-image-classification", model=str(tmp_path))
    results = classifier(image, candidate_labels=labels, hypothesis_template="{}")
    inputs = processor(images=[image], text=labels, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model(**inputs).logits_per_image.softmax(-1)[0]
    got = {result["label"]: result["score"] for result in results}
    torch.testing.assert_close(torch.tensor([got[label] for label in labels]), expected, atol=1e-5, rtol=1e-4)


def test_trainer_fine_tunes_the_retrieval_head(tmp_path):
    model = tiny_model()
    model.train()
    data = batch(model, 8, 8)
    examples = [{key: value[i] for key, value in data.items()} for i in range(8)]

    def collate(rows):
        return {**{key: torch.stack([row[key] for row in rows]) for key in rows[0]}, "return_loss": True}

    with torch.no_grad():
        before = model(**collate(examples)).loss
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=30, per_device_train_batch_size=8, learning_rate=3e-3,
        report_to="none", save_strategy="no", logging_steps=100, disable_tqdm=True, remove_unused_columns=False,
        use_cpu=True,
    )  # fmt: skip
    Trainer(model=model, args=args, train_dataset=examples, data_collator=collate).train()
    model.eval()
    with torch.no_grad():
        after = model(**collate(examples)).loss
    assert float(after) < 0.7 * float(before)


def test_from_vision_text_pretrained_keeps_the_towers_weights(tmp_path):
    from transformers import BertModel

    vision = VisionTransformerModel(VisionTransformerConfig.tiny())
    text = BertModel(BertConfig(**TINY_BERT))
    vision.save_pretrained(tmp_path / "vit")
    text.save_pretrained(tmp_path / "bert")
    model = VisionTextCrossAttentionForImageTextRetrieval.from_vision_text_pretrained(
        str(tmp_path / "vit"), str(tmp_path / "bert"), projection_dim=16, num_fusion_heads=4, num_fusion_layers=1
    )
    base = model.vision_text_model
    for ours, theirs in ((base.vision_model, vision), (base.text_model, text)):
        for (name, parameter), reference in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
            torch.testing.assert_close(parameter, reference, msg=name)
    model.save_pretrained(tmp_path / "joint")
    reloaded = VisionTextCrossAttentionForImageTextRetrieval.from_pretrained(tmp_path / "joint").eval()
    inputs = batch(model.eval(), 2, 2)
    inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).itm_logits, model(**inputs).itm_logits)


@pytest.mark.parametrize("text_config", [None, BertConfig(**TINY_BERT)], ids=["clip", "bert"])
@pytest.mark.parametrize("direction", ["text_to_image", "image_to_text"])
def test_all_padding_text_rows_give_finite_outputs_and_a_zero_embedding(text_config, direction):
    overrides = {} if text_config is None else {"text_config": text_config.to_dict()}
    model = tiny_model(fusion_direction=direction, **overrides)
    inputs = batch(model)
    inputs["attention_mask"][1] = 0
    with torch.no_grad():
        outputs = model(**inputs, return_loss=True)
    for name in ("logits_per_image", "itm_logits", "loss", "text_embeds"):
        assert torch.isfinite(outputs[name]).all(), name
    assert float(outputs.text_embeds[1].abs().max()) == 0.0
    assert float(outputs.logits_per_image[:, 1].abs().max()) == 0.0


def test_pairwise_calls_refuse_unequal_numbers_of_images_and_texts():
    model = tiny_model()
    inputs = batch(model, 2, 3)
    with torch.no_grad():
        outputs = model(**inputs)  # scoring every image with every text is fine
        assert outputs.logits_per_image.shape == (2, 3) and outputs.itm_logits is None
        with pytest.raises(
            ValueError, match=re.escape("needs matched pairs (image i with text i): got 2 images and 3")
        ):
            model(**inputs, return_loss=True)
        base = model.vision_text_model
        with pytest.raises(ValueError, match="Image-text matching scores pairs: got 2 images and 3 texts"):
            base.match(torch.randn(2, 17, 32), torch.randn(3, 6, 32))


def test_images_of_the_wrong_size_channels_or_dtype_are_refused():
    model = tiny_model()
    inputs = batch(model)
    with pytest.raises(ValueError, match="doesn't match the model's 16x16"):
        model(**{**inputs, "pixel_values": torch.randn(3, 3, 32, 32)})
    with pytest.raises(ValueError, match="have 1 channels but the model expects num_channels=3"):
        model(**{**inputs, "pixel_values": torch.randn(3, 1, 16, 16)})
    with pytest.raises(TypeError, match="image processor"):
        model(**{**inputs, "pixel_values": torch.randint(0, 255, (3, 3, 16, 16))})
    with pytest.raises(ValueError, match=r"input_ids` must lie in \[0, 64\)"):
        model(**{**inputs, "input_ids": inputs["input_ids"] + 100})
    with pytest.raises(ValueError, match="max_position_embeddings=64; truncate"):
        model(**{**inputs, "input_ids": torch.ones(3, 70, dtype=torch.long), "attention_mask": None})
    with pytest.raises(TypeError, match="attention_maks"):
        model(**inputs, attention_maks=inputs["attention_mask"])


def test_text_configs_the_fusion_cannot_take_are_refused():
    with pytest.raises(StrictDataclassClassValidationError, match="is a decoder or an encoder-decoder"):
        VisionTextCrossAttentionConfig.tiny(text_config=GPT2Config(n_embd=32, n_layer=1, is_decoder=True).to_dict())
    with pytest.raises(
        StrictDataclassClassValidationError, match="text tower's width 30, which num_fusion_heads=4 does not divide"
    ):
        text_config = CLIPResidualTextConfig.tiny(hidden_size=30, num_attention_heads=3)
        VisionTextCrossAttentionConfig.tiny(text_config=text_config.to_dict())
    with pytest.raises(StrictDataclassClassValidationError, match="fusion_direction"):
        VisionTextCrossAttentionConfig.tiny(fusion_direction="both")


def test_model_card_credits_the_training_data():
    from hf_attention.apps.data_image_text import OPENMOJI_CREDIT

    model = tiny_model()
    results = {"dataset": "openmoji", "accuracy": 0.5, "data_credit": OPENMOJI_CREDIT}
    card = str(model.model_card("me/emoji-itm", training_results=results))
    assert "pipeline_tag: zero-shot-image-classification" in card
    assert "## Training data" in card and "CC BY-SA 4.0" in card
    assert "Training data" not in str(model.model_card("me/emoji-itm"))
