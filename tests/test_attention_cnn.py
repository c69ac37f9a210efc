"""The attention CNN inserts the chosen block after its stages, trains with Trainer and honours the model contract."""

import pytest
import torch
from datasets import Dataset
from huggingface_hub.errors import StrictDataclassClassValidationError
from torch import nn
from transformers import AutoModelForImageClassification, Trainer, TrainingArguments

from hf_attention import (
    AttentionCNNConfig,
    AttentionCNNForImageClassification,
    AttentionCNNModel,
    CompressAIAttentionBlock,
    CrissCrossAttention,
    DualAttention,
    NonLocalBlock,
    ResidualAttentionModule,
    SpatialTransformer,
    SqueezeExcitation,
)
from hf_attention.apps.cli import build_parser, main
from hf_attention.configuration_attention_cnn import ATTENTION_CNN_TYPES

BLOCK_CLASSES = {
    "squeeze_excitation": SqueezeExcitation,
    "spatial_transformer": SpatialTransformer,
    "residual_attention": ResidualAttentionModule,
    "dual_attention": DualAttention,
    "non_local": NonLocalBlock,
    "criss_cross": CrissCrossAttention,
    "compressai": CompressAIAttentionBlock,
}


def tiny_config(**overrides) -> AttentionCNNConfig:
    settings = dict(hidden_sizes=[8, 16], depths=[1, 1], reduction=2, num_labels=3)
    settings.update(overrides)
    return AttentionCNNConfig(**settings)


def test_every_attention_type_is_a_choice_of_the_cli():
    assert set(ATTENTION_CNN_TYPES) == {"none", *BLOCK_CLASSES}
    args = build_parser().parse_args(["train", "attention-cnn", "--attention", "criss_cross"])
    assert args.attention == "criss_cross" and args.dataset == "digits"


@pytest.mark.parametrize("attention_type", ATTENTION_CNN_TYPES)
def test_the_block_follows_each_stage_and_any_image_size_works(attention_type):
    model = AttentionCNNForImageClassification(tiny_config(attention_type=attention_type)).eval()
    blocks = [stage.attention for stage in model.cnn.stages]
    if attention_type == "none":
        assert all(isinstance(block, nn.Identity) for block in blocks)
    else:
        assert all(isinstance(block, BLOCK_CLASSES[attention_type]) for block in blocks)
    with torch.no_grad():
        output = model(torch.randn(1, 3, 9, 7), output_hidden_states=True)
    assert output.logits.shape == (1, 3) and torch.isfinite(output.logits).all()
    assert [state.shape[1] for state in output.hidden_states] == [8, 8, 16]  # the stem, then each stage


def test_attention_stages_selects_where_blocks_go():
    model = AttentionCNNModel(tiny_config(attention_type="non_local", attention_stages=[1]))
    assert isinstance(model.stages[0].attention, nn.Identity) and isinstance(model.stages[1].attention, NonLocalBlock)


@torch.no_grad()
def test_identity_start_blocks_leave_the_network_unchanged():
    """Criss-cross and non-local blocks start as the identity: inserting them changes nothing until trained."""
    pixels = torch.randn(2, 3, 10, 10)
    torch.manual_seed(0)
    plain = AttentionCNNForImageClassification(tiny_config()).eval()
    for attention_type in ("criss_cross", "non_local"):
        model = AttentionCNNForImageClassification(tiny_config(attention_type=attention_type)).eval()
        model.load_state_dict(plain.state_dict(), strict=False)
        torch.testing.assert_close(model(pixels).logits, plain(pixels).logits)


@pytest.mark.parametrize(
    ("problem_type", "labels", "formula"),
    [
        ("single_label_classification", torch.tensor([0, 2]), nn.functional.cross_entropy),
        (
            "multi_label_classification",
            torch.tensor([[1.0, 0, 1], [0, 1, 0]]),
            nn.functional.binary_cross_entropy_with_logits,
        ),
        ("regression", torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, 0.0]]), nn.functional.mse_loss),
    ],
)
def test_loss_follows_problem_type(problem_type, labels, formula):
    model = AttentionCNNForImageClassification(tiny_config(problem_type=problem_type))
    output = model(torch.randn(2, 3, 8, 8), labels=labels)
    torch.testing.assert_close(output.loss, formula(output.logits, labels))


@pytest.mark.slow
def test_trainer_lowers_the_loss_and_gradients_reach_the_blocks(tmp_path):
    torch.manual_seed(0)
    pixels = torch.randn(32, 3, 8, 8)
    labels = (pixels[:, 0].mean(dim=(1, 2)) > 0).long() + (pixels[:, 1].mean(dim=(1, 2)) > 0).long()
    data = Dataset.from_dict({"pixel_values": pixels, "labels": labels}).with_format("torch")
    model = AttentionCNNForImageClassification(tiny_config(attention_type="criss_cross"))
    with torch.no_grad():
        start_loss = model.eval()(pixels, labels=labels).loss.item()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=15,
        per_device_train_batch_size=16,
        learning_rate=1e-2,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
    )
    Trainer(model=model, args=args, train_dataset=data).train()
    with torch.no_grad():
        end_loss = model.eval()(pixels, labels=labels).loss.item()
    assert end_loss < start_loss / 2
    assert all(stage.attention.gamma.abs().item() > 0 for stage in model.cnn.stages)  # the blocks left the identity


def test_bad_inputs_raise_errors_that_name_the_problem():
    model = AttentionCNNForImageClassification(tiny_config())
    with pytest.raises(ValueError, match=r"have 1 channels but the model expects num_channels=3"):
        model(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"must have shape \(batch, 3, height, width\), got \(3, 8, 8\)"):
        model(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="pixel_values` is required"):
        model()


@torch.no_grad()
def test_attentions_are_the_maps_of_the_blocks_in_the_order_they_ran():
    pixels = torch.randn(2, 3, 8, 6)
    non_local = AttentionCNNModel(tiny_config(attention_type="non_local")).eval()
    assert [tuple(a.shape) for a in non_local(pixels, output_attentions=True).attentions] == [
        (2, 1, 48, 48),  # stage 0 at 8x6
        (2, 1, 12, 12),  # stage 1 at 4x3
    ]
    criss_cross = AttentionCNNModel(tiny_config(attention_type="criss_cross", recurrence=2)).eval()
    shapes = [tuple(a.shape) for a in criss_cross(pixels, output_attentions=True).attentions]
    assert shapes == [(2, 1, 48, 14)] * 2 + [(2, 1, 12, 7)] * 2  # one map per pass, (h * w, h + w)
    dual = AttentionCNNModel(tiny_config(attention_type="dual_attention")).eval()
    output = dual(pixels, output_attentions=True)
    assert [tuple(a.shape) for a in output.attentions] == [(2, 1, 48, 48), (2, 1, 12, 12)]
    assert [tuple(a.shape) for a in output.channel_attentions] == [(2, 1, 2, 2), (2, 1, 4, 4)]
    squeeze = AttentionCNNModel(tiny_config(attention_type="squeeze_excitation")).eval()
    assert squeeze(pixels, output_attentions=True).attentions == ()  # SE weighs channels: no query-key maps


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"attention_type": "cbam"}, r"attention_type.*must be one of .*got 'cbam'"),
        ({"depths": [1]}, r"hidden_sizes and depths need one entry per stage"),
        ({"hidden_sizes": [8, 0]}, r"`hidden_sizes\[1\]` must be positive, got 0"),
        ({"attention_stages": [2]}, r"attention_stages.*stage indices in 0..1, got \[2\]"),
        ({"pairwise_function": "cosine"}, r"pairwise_function.*got 'cosine'"),
        ({"hidden_dropout_prob": 1.0}, r"hidden_dropout_prob.*must be in \[0, 1\)"),
        ({"recurrence": 0}, r"`recurrence` must be positive"),
        ({"attention_type": "criss_cross", "reduction": 16}, r"`reduction` \(16\) is larger than the 8 channels"),
        ({"attention_type": "dual_attention", "reduction": 4}, r"`reduction` \(4\) is larger than the 2 channels"),
    ],
)
def test_impossible_configs_are_refused_with_the_reason(overrides, message):
    with pytest.raises((ValueError, StrictDataclassClassValidationError), match=message):
        tiny_config(**overrides)


@pytest.mark.slow
def test_cli_trains_on_digits_and_saves_a_pipeline_ready_model(tmp_path, capsys):
    output_dir = tmp_path / "se"
    argv = ["train", "attention-cnn", "--attention", "squeeze_excitation", "--dataset", "digits", "--train-size", "200"]
    argv += ["--epochs", "1", "--hidden-sizes", "8", "16", "--depths", "1", "1", "--reduction", "4"]
    argv += ["--output-dir", str(output_dir)]
    assert main(argv) == 0
    report = capsys.readouterr().out
    assert "train / eval size 200 / 360" in report and "test accuracy" in report
    loaded = AutoModelForImageClassification.from_pretrained(output_dir)
    assert loaded.config.attention_type == "squeeze_excitation" and loaded.config.id2label[3] == "3"
    assert loaded.config.reduction == 4 and loaded.cnn.stages[0].attention.fc1.out_features == 2
    assert (output_dir / "preprocessor_config.json").exists()
    assert main(argv[:-2] + ["--output-dir", str(tmp_path / "x"), "--train-size", "5000"]) == 2
    assert capsys.readouterr().err.strip().endswith("hf-attention: error: --train-size must be in 1..1437, got 5000.")
    assert main([*argv[:-4], "--reduction", "16", "--output-dir", str(tmp_path / "y")]) == 2
    assert "`reduction` (16) is larger than the 8 channels" in capsys.readouterr().err
