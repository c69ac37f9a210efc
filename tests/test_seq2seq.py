"""The GRU encoder-decoder with additive attention: training with Trainer, generate(), masks, save/load."""

import pytest
import torch
from datasets import Dataset
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSeq2SeqLM, Trainer, TrainingArguments

from hf_attention import RecurrentSeq2SeqConfig, RecurrentSeq2SeqForConditionalGeneration, RecurrentSeq2SeqModel

PAD, START, EOS = 0, 1, 2


def tiny_model(**overrides) -> RecurrentSeq2SeqForConditionalGeneration:
    return RecurrentSeq2SeqForConditionalGeneration(RecurrentSeq2SeqConfig.tiny(**overrides)).eval()


def reversal_examples(count: int, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(count):
        length = int(torch.randint(2, 6, (1,), generator=generator))
        source = torch.randint(3, 13, (length,), generator=generator).tolist()
        examples.append({"input_ids": source, "labels": source[::-1] + [EOS]})
    return examples


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    source_length = max(len(example["input_ids"]) for example in examples)
    label_length = max(len(example["labels"]) for example in examples)
    batch = {
        "input_ids": torch.full((len(examples), source_length), PAD),
        "attention_mask": torch.zeros(len(examples), source_length, dtype=torch.long),
        "labels": torch.full((len(examples), label_length), -100),
    }
    for row, example in enumerate(examples):
        batch["input_ids"][row, : len(example["input_ids"])] = torch.tensor(example["input_ids"])
        batch["attention_mask"][row, : len(example["input_ids"])] = 1
        batch["labels"][row, : len(example["labels"])] = torch.tensor(example["labels"])
    return batch


@pytest.mark.parametrize("context", ["additive", "fixed"])
def test_a_few_trainer_steps_lower_the_loss(tmp_path, context):
    model = tiny_model(context=context).train()
    examples = reversal_examples(64)
    batch = collate(examples)
    with torch.no_grad():
        before = model(**batch).loss.item()
    arguments = TrainingArguments(
        output_dir=str(tmp_path), max_steps=12, per_device_train_batch_size=16, learning_rate=1e-2,
        save_strategy="no", report_to=[], use_cpu=True, logging_steps=12,
    )  # fmt: skip
    Trainer(model=model, args=arguments, train_dataset=Dataset.from_list(examples), data_collator=collate).train()
    with torch.no_grad():
        after = model.eval()(**batch).loss.item()
    assert after < before - 0.1, (before, after)


@torch.no_grad()
def test_the_loss_is_cross_entropy_on_labels_with_teacher_forcing():
    model = tiny_model()
    batch = collate(reversal_examples(4))
    output = model(**batch)
    decoder_input_ids = torch.cat((torch.full((4, 1), START), batch["labels"][:, :-1]), dim=1).clamp(min=PAD)
    logits = model(batch["input_ids"], batch["attention_mask"], decoder_input_ids=decoder_input_ids).logits
    torch.testing.assert_close(output.logits, logits)
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
    torch.testing.assert_close(output.loss, expected)


def force_next_token(model, token: int) -> None:
    """Make the LM head predict `token` whatever the input, to test where generation stops."""
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.bias.fill_(-10.0)
        model.lm_head.bias[token] = 10.0


@torch.no_grad()
def test_generate_stops_at_eos_and_otherwise_runs_to_max_new_tokens():
    model = tiny_model()
    sources = torch.randint(3, 13, (3, 5))
    force_next_token(model, EOS)
    assert model.generate(sources, max_new_tokens=8).tolist() == [[START, EOS]] * 3
    force_next_token(model, 7)
    generated = model.generate(sources, max_new_tokens=8)
    assert generated.shape == (3, 9) and (generated[:, 1:] == 7).all()
    beams = model.generate(sources, max_new_tokens=4, num_beams=2, num_return_sequences=2)
    assert beams.shape == (6, 5)


@pytest.mark.parametrize("context", ["additive", "fixed"])
@torch.no_grad()
def test_greedy_generate_equals_step_by_step_argmax_of_forward(context):
    model = tiny_model(context=context)
    sources = torch.randint(3, 13, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    generated = model.generate(sources, attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=None)
    decoded = torch.full((2, 1), START)
    for _ in range(6):
        logits = model(sources, mask, decoder_input_ids=decoded).logits
        decoded = torch.cat((decoded, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(generated, decoded)


@pytest.mark.parametrize("context", ["additive", "fixed"])
@torch.no_grad()
def test_padded_sources_give_what_the_unpadded_source_gives_and_attention_skips_padding(context):
    model = tiny_model(context=context)
    sources, decoder_input_ids = torch.randint(3, 13, (2, 7)), torch.randint(3, 13, (2, 4))
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4])
    output = model(sources, mask, decoder_input_ids=decoder_input_ids, output_attentions=True)
    alone = model(sources[1:, :3], decoder_input_ids=decoder_input_ids[1:]).logits
    torch.testing.assert_close(output.logits[1:], alone)
    if context == "additive":
        weights = output.cross_attentions[0]
        assert weights.shape == (2, 1, 4, 7) and (weights[1, :, :, 3:] == 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 1, 4))
    else:
        assert output.cross_attentions is None and model.model.decoder.attention is None


def test_save_load_round_trip_through_auto_classes(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is RecurrentSeq2SeqForConditionalGeneration
    saved = load_file(tmp_path / "model.safetensors")
    assert set(saved) == set(model.state_dict())
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0)
    sources = torch.randint(3, 13, (2, 5))
    with torch.no_grad():
        assert torch.equal(loaded.generate(sources, max_new_tokens=5), model.generate(sources, max_new_tokens=5))
    assert type(AutoModel.from_pretrained(tmp_path)) is RecurrentSeq2SeqModel


@torch.no_grad()
def test_return_dict_false_and_every_parameter_initialised():
    model = tiny_model()
    for name, parameter in model.named_parameters():
        assert torch.isfinite(parameter).all(), name
        if "bias" not in name:
            assert parameter.std() > 0, f"{name} left constant"
    batch = collate(reversal_examples(2))
    as_tuple = model(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], model(**batch).loss)


def test_bad_inputs_and_settings_raise_errors_that_name_the_problem():
    model = tiny_model()
    sources = torch.randint(3, 13, (2, 4))
    start = torch.full((2, 1), START)
    with pytest.raises(ValueError, match="must be right-padded"):
        model(sources, torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]), decoder_input_ids=start)
    with pytest.raises(ValueError, match="at least one token; attention_mask has a row of zeros"):
        model(sources, torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]), decoder_input_ids=start)
    with pytest.raises(ValueError, match=r"attention_mask must have the shape of input_ids \(2, 4\), got \(2, 3\)"):
        model(sources, torch.ones(2, 3), decoder_input_ids=start)
    with pytest.raises(ValueError, match="decoder_input_ids are required"):
        model(sources)
    with pytest.raises(StrictDataclassClassValidationError, match=r"context.*must be one of \('additive', 'fixed'\)"):
        RecurrentSeq2SeqConfig(context="dot")
    with pytest.raises(StrictDataclassClassValidationError, match=r"pad_token_id.*must be a token id in \[0, 16\)"):
        RecurrentSeq2SeqConfig(pad_token_id=16)
