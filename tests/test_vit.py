"""The Vision Transformer honours the transformers model contract."""

import pytest
import torch
from conftest import BACKENDS
from datasets import Dataset
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, Trainer, TrainingArguments

from hf_attention import VisionTransformerConfig, VisionTransformerForImageClassification, VisionTransformerModel


def tiny_classifier(**overrides):
    return VisionTransformerForImageClassification(VisionTransformerConfig.tiny(**overrides)).eval()


@torch.no_grad()
def test_shapes_and_pooling():
    pixels = torch.randn(2, 3, 16, 16)
    model = VisionTransformerModel(VisionTransformerConfig.tiny(pooling="mean")).eval()
    output = model(pixels)
    assert output.last_hidden_state.shape == (2, 17, 32)
    torch.testing.assert_close(output.pooler_output, output.last_hidden_state[:, 1:].mean(1))
    model.config.pooling = "cls"
    torch.testing.assert_close(model(pixels).pooler_output, output.last_hidden_state[:, 0])
    assert tiny_classifier()(pixels).logits.shape == (2, 3)


@torch.no_grad()
def test_every_backend_gives_the_same_logits_and_can_be_switched_later():
    pixels = torch.randn(2, 3, 16, 16)
    model = tiny_classifier()
    logits = {}
    for implementation in BACKENDS:
        model.set_attn_implementation(implementation)
        assert model.config._attn_implementation == implementation
        logits[implementation] = model(pixels).logits
    for implementation in BACKENDS[1:]:
        torch.testing.assert_close(logits[implementation], logits["eager"], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_output_attentions_and_hidden_states_under_sdpa():
    model = tiny_classifier()
    pixels = torch.randn(2, 3, 16, 16)
    model.set_attn_implementation("sdpa")
    output = model(pixels, output_attentions=True, output_hidden_states=True)
    assert len(output.attentions) == 2 and output.attentions[0].shape == (2, 4, 17, 17)
    torch.testing.assert_close(output.attentions[1].sum(-1), torch.ones(2, 4, 17))
    assert len(output.hidden_states) == 3
    model.set_attn_implementation("eager")
    eager = model(pixels, output_attentions=True)
    for got, expected in zip(output.attentions, eager.attentions, strict=True):
        torch.testing.assert_close(got, expected)


def test_save_load_round_trip_through_safetensors_and_auto_classes(tmp_path):
    model = tiny_classifier(id2label={0: "cat", 1: "dog", 2: "emu"}, label2id={"cat": 0, "dog": 1, "emu": 2})
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    assert isinstance(AutoConfig.from_pretrained(tmp_path), VisionTransformerConfig)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is VisionTransformerForImageClassification and loaded.config.id2label[2] == "emu"
    saved = load_file(tmp_path / "model.safetensors")
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0)
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).logits, model(pixels).logits, rtol=0, atol=0)
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base) is VisionTransformerModel
    torch.testing.assert_close(base.layernorm.weight, model.vit.layernorm.weight, rtol=0, atol=0)


def test_load_options_dtype_and_attn_implementation(tmp_path):
    tiny_classifier().save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(
        tmp_path, dtype=torch.bfloat16, attn_implementation="eager"
    )
    assert loaded.dtype == torch.bfloat16 and loaded.config._attn_implementation == "eager"
    with torch.no_grad():
        logits = loaded(torch.randn(2, 3, 16, 16)).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    from_config = VisionTransformerForImageClassification._from_config(
        VisionTransformerConfig.tiny(), attn_implementation="sdpa"
    )
    assert from_config.config._attn_implementation == "sdpa"


def test_every_parameter_is_initialised_and_loading_does_not_reinitialise(tmp_path):
    model = tiny_classifier()
    for name, parameter in model.named_parameters():
        assert torch.isfinite(parameter).all(), name
        if "embeddings" in name and "projection" not in name:
            assert parameter.std() > 0, f"{name} left at zero"
    model.save_pretrained(tmp_path)
    reloaded = VisionTransformerForImageClassification.from_pretrained(tmp_path)
    for (name, expected), (_, got) in zip(model.state_dict().items(), reloaded.state_dict().items(), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0, msg=name)


def test_a_missing_weight_is_initialised_not_left_empty(tmp_path):
    VisionTransformerModel(VisionTransformerConfig.tiny()).save_pretrained(tmp_path)
    model = VisionTransformerForImageClassification.from_pretrained(tmp_path)  # no classifier in the checkpoint
    assert model.classifier.weight.std() > 0 and torch.isfinite(model.classifier.weight).all()
    assert model.classifier.bias.abs().max() == 0


@pytest.mark.parametrize(
    ("problem_type", "labels", "formula"),
    [
        ("single_label_classification", torch.tensor([0, 2]), torch.nn.functional.cross_entropy),
        (
            "multi_label_classification",
            torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),
            torch.nn.functional.binary_cross_entropy_with_logits,
        ),
        ("regression", torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, 0.0]]), torch.nn.functional.mse_loss),
    ],
)
def test_loss_follows_problem_type(problem_type, labels, formula):
    model = tiny_classifier(problem_type=problem_type)
    output = model(torch.randn(2, 3, 16, 16), labels=labels)
    torch.testing.assert_close(output.loss, formula(output.logits, labels))


@torch.no_grad()
def test_interpolate_pos_encoding_runs_other_sizes_and_refuses_without_it():
    model = tiny_classifier()
    pixels = torch.randn(1, 3, 24, 32)
    with pytest.raises(
        ValueError, match=r"Input image size 24x32 doesn't match the model's 16x16.*interpolate_pos_encoding"
    ):
        model(pixels)
    assert model(pixels, interpolate_pos_encoding=True).logits.shape == (1, 3)
    same = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(model(same, interpolate_pos_encoding=True).logits, model(same).logits)


def test_bad_inputs_raise_errors_that_name_the_problem():
    model = tiny_classifier()
    with pytest.raises(ValueError, match="1 channels but the model expects num_channels=3"):
        model(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match="not a multiple of the patch size 4x4"):
        model(torch.randn(2, 3, 18, 16), interpolate_pos_encoding=True)
    with pytest.raises(ValueError, match=r"`pixel_values` must have shape \(batch, 3, height, width\)"):
        model(torch.randn(3, 16, 16))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": 30}, r"hidden size \(30\) is not a multiple of the number of attention heads \(4\)"),
        ({"hidden_dropout_prob": -0.1}, r"hidden_dropout_prob.*must be in \[0, 1\), got -0.1"),
        ({"attention_probs_dropout_prob": 1.0}, r"attention_probs_dropout_prob.*must be in \[0, 1\), got 1.0"),
        ({"drop_path_rate": 1.5}, r"drop_path_rate.*must be in \[0, 1\)"),
        ({"image_size": 18}, r"image_size 18x18 must be positive multiples of patch_size 4x4"),
        ({"pooling": "max"}, r"pooling.*must be one of \('cls', 'mean'\), got 'max'"),
    ],
)
def test_impossible_configs_fail_at_construction(overrides, message):
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        VisionTransformerConfig.tiny(**overrides)


@pytest.mark.slow
def test_trainer_steps_lower_the_loss(tmp_path):
    torch.manual_seed(0)
    labels = torch.arange(32) % 2
    pixels = torch.randn(32, 3, 16, 16) + (2.0 * labels - 1.0)[:, None, None, None]  # a rule the model can learn
    dataset = Dataset.from_dict({"pixel_values": pixels.numpy(), "labels": labels.numpy()}).with_format("torch")
    model = VisionTransformerForImageClassification(VisionTransformerConfig.tiny(num_labels=2))
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=8, learning_rate=3e-3,
        report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < 0.5 * before, (before, after)


@torch.no_grad()
def test_torch_compile_fullgraph_matches_eager():
    model = tiny_classifier()
    pixels = torch.randn(2, 3, 16, 16)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(pixels).logits, model(pixels).logits, atol=1e-5, rtol=1e-5)
