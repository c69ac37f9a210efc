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


@pytest.mark.slow
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
        assert weights.shape == (2, 1, 4, 7) and (weights[1, :, :, 3:] == 0).all()  # (batch, 1 head, target, source)
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
def test_every_gru_matrix_is_initialised_away_from_constant():
    model = tiny_model()
    for name, parameter in model.named_parameters():
        assert torch.isfinite(parameter).all(), name
        if "bias" not in name:
            assert parameter.std() > 0, f"{name} left constant"


@torch.no_grad()
@pytest.mark.parametrize("context", ["additive", "fixed"])
def test_hidden_states_are_the_embeddings_then_every_gru_layer(context):
    model = tiny_model(num_layers=2, context=context)
    batch = collate(reversal_examples(3))
    output = model(**batch, output_hidden_states=True)
    encoder, decoder = output.encoder_hidden_states, output.decoder_hidden_states
    assert len(encoder) == len(decoder) == 3  # num_layers + 1
    source = model.model.encoder.embed_tokens(batch["input_ids"])
    torch.testing.assert_close(encoder[0], source)
    torch.testing.assert_close(encoder[-1], output.encoder_last_hidden_state, rtol=0, atol=0)
    states = model.model.encoder.gru(source)[0]  # the unpadded rows agree with one plain multi-layer GRU call
    longest = batch["attention_mask"].sum(-1).argmax()
    torch.testing.assert_close(encoder[2][longest], states[longest], atol=1e-6, rtol=1e-6)
    assert encoder[1].shape == encoder[2].shape == (3, batch["input_ids"].shape[1], 32)  # both directions
    features = model.model(**{k: v for k, v in batch.items() if k != "labels"},
                           decoder_input_ids=torch.full((3, 2), START)).last_hidden_state  # fmt: skip
    decoded = model.model(batch["input_ids"], batch["attention_mask"], decoder_input_ids=torch.full((3, 2), START),
                          output_hidden_states=True)  # fmt: skip
    torch.testing.assert_close(decoded.decoder_hidden_states[-1], features[..., :16], atol=1e-6, rtol=1e-6)  # s_t


def test_resize_token_embeddings_resizes_both_tables_and_the_lm_head():
    model = tiny_model()
    source = model.resize_token_embeddings(17)
    assert source is model.get_input_embeddings() and source.num_embeddings == 17
    assert model.get_decoder().embed_tokens.num_embeddings == 17 and model.lm_head.out_features == 17
    assert model.config.vocab_size == 17
    with torch.no_grad():
        generated = model.generate(torch.tensor([[15, 16, 3]]), max_new_tokens=2, eos_token_id=None)
    assert generated.shape == (1, 3)  # the new ids are usable
    table = torch.nn.Embedding(17, 8)
    model.set_input_embeddings(table)
    assert model.model.encoder.embed_tokens is table and model.get_input_embeddings() is table


def test_labels_are_checked_and_all_ignored_labels_give_a_zero_loss():
    model = tiny_model().train()
    batch = collate(reversal_examples(2))
    with pytest.raises(ValueError, match=r"class indices in \[0, 13\) or -100"):
        model(**{**batch, "labels": batch["labels"].index_fill(1, torch.tensor([0]), 13)})
    loss = model(**{**batch, "labels": torch.full_like(batch["labels"], -100)}).loss
    loss.backward()
    assert loss.item() == 0.0 and all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_bad_inputs_and_settings_raise_errors_that_name_the_problem():
    model = tiny_model()
    sources = torch.randint(3, 13, (2, 4))
    start = torch.full((2, 1), START)
    with pytest.raises(ValueError, match="must be right-padded"):
        model(sources, torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]), decoder_input_ids=start)
    with pytest.raises(ValueError, match="at least one token; attention_mask has a row of zeros"):
        model(sources, torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]), decoder_input_ids=start)
    with pytest.raises(ValueError, match=r"`attention_mask` must have shape .* = \(2, 4\) .* got shape \(2, 3\)"):
        model(sources, torch.ones(2, 3), decoder_input_ids=start)
    with pytest.raises(TypeError, match="`input_ids` must be an integer tensor of token ids, got dtype float32"):
        model(sources.float(), decoder_input_ids=start)
    with pytest.raises(ValueError, match=r"`decoder_input_ids` must lie in \[0, 13\), got ids from 1 to 13"):
        model(sources, decoder_input_ids=torch.tensor([[1, 13], [1, 2]]))
    with pytest.raises(ValueError, match="`input_ids` is an empty sequence"):
        model(sources[:, :0], decoder_input_ids=start)
    with pytest.raises(ValueError, match="decoder_input_ids are required"):
        model(sources)
    with pytest.raises(StrictDataclassClassValidationError, match=r"context.*must be one of \('additive', 'fixed'\)"):
        RecurrentSeq2SeqConfig(context="dot")
    with pytest.raises(StrictDataclassClassValidationError, match=r"pad_token_id.*must lie in \[0, vocab_size=16\)"):
        RecurrentSeq2SeqConfig(pad_token_id=16)
    with pytest.raises(StrictDataclassClassValidationError, match=r"eos_token_id.*must be token ids in \[0, 16\)"):
        RecurrentSeq2SeqConfig(eos_token_id=[2, 40])
