"""Reverse digit strings with a GRU encoder-decoder: additive attention vs a fixed context, as length grows.

Both models have the same encoder, decoder and training (transformers.Trainer, same steps, same data); the only
difference is what the decoder reads at each step: an additive-attention average of the encoder states, or the
encoder's final states (one fixed-length vector for the whole string). Evaluation decodes fresh strings of each
length with `generate()` (greedy) and counts exact reversals and correct digits.

    python benchmarks/seq2seq_reversal.py                      # writes benchmarks/results/seq2seq_reversal.json
    python benchmarks/seq2seq_reversal.py --max-steps 200      # a quick look
"""

import argparse
import json
import random
import time
from pathlib import Path

import torch
from _environment import environment
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from hf_attention import RecurrentSeq2SeqConfig, RecurrentSeq2SeqForConditionalGeneration

PAD, BOS, EOS, FIRST_DIGIT = 0, 1, 2, 3
VOCAB_SIZE = FIRST_DIGIT + 10
RESULTS = Path(__file__).parent / "results" / "seq2seq_reversal.json"


def random_digits(rng: random.Random, length: int) -> list[int]:
    return [FIRST_DIGIT + rng.randrange(10) for _ in range(length)]


def reversal_dataset(num_examples: int, min_length: int, max_length: int, seed: int) -> Dataset:
    """Source: digit tokens; labels: the same digits reversed, then EOS."""
    rng = random.Random(seed)
    sources = [random_digits(rng, rng.randint(min_length, max_length)) for _ in range(num_examples)]
    return Dataset.from_dict({"input_ids": sources, "labels": [source[::-1] + [EOS] for source in sources]})


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Right-pad sources with PAD (mask 0) and labels with -100 (no loss)."""
    source_length = max(len(example["input_ids"]) for example in examples)
    label_length = max(len(example["labels"]) for example in examples)
    input_ids = torch.full((len(examples), source_length), PAD)
    attention_mask = torch.zeros((len(examples), source_length), dtype=torch.long)
    labels = torch.full((len(examples), label_length), -100)
    for row, example in enumerate(examples):
        input_ids[row, : len(example["input_ids"])] = torch.tensor(example["input_ids"])
        attention_mask[row, : len(example["input_ids"])] = 1
        labels[row, : len(example["labels"])] = torch.tensor(example["labels"])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def make_model(context: str, hidden_size: int) -> RecurrentSeq2SeqForConditionalGeneration:
    config = RecurrentSeq2SeqConfig(
        vocab_size=VOCAB_SIZE,
        embedding_size=32,
        hidden_size=hidden_size,
        attention_hidden_size=hidden_size,
        context=context,
        initializer_range=0.1,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        decoder_start_token_id=BOS,
    )
    return RecurrentSeq2SeqForConditionalGeneration(config)


@torch.no_grad()
def evaluate_by_length(model, lengths: list[int], per_length: int, seed: int) -> dict[int, dict[str, float]]:
    """Greedy-decode fresh strings of each length; exact-match and per-digit accuracy of the reversal."""
    model.eval()
    rng = random.Random(seed)
    results = {}
    for length in lengths:
        sources = torch.tensor([random_digits(rng, length) for _ in range(per_length)])
        generated = model.generate(sources, max_new_tokens=length + 1, do_sample=False)[:, 1:]  # drop the start
        expected = torch.cat((sources.flip(1), torch.full((per_length, 1), EOS)), dim=1)
        generated = torch.nn.functional.pad(generated, (0, expected.shape[1] - generated.shape[1]), value=PAD)
        correct = generated == expected
        results[length] = {
            "exact_match": correct.all(dim=1).float().mean().item(),
            "digit_accuracy": correct[:, :length].float().mean().item(),
        }
    return results


def train(context: str, args: argparse.Namespace, train_set: Dataset, output_dir: Path) -> tuple:
    torch.manual_seed(args.seed)
    model = make_model(context, args.hidden_size)
    training_args = TrainingArguments(
        output_dir=str(output_dir / context),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=args.max_steps // 20,
        max_grad_norm=1.0,
        logging_steps=max(1, args.max_steps // 10),
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        dataloader_num_workers=0,
        use_cpu=True,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train_set, data_collator=collate)
    start = time.perf_counter()
    result = trainer.train()
    return model, result.training_loss, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--hidden-size", type=int, default=96)
    parser.add_argument("--train-max-length", type=int, default=20)
    parser.add_argument("--eval-lengths", type=int, nargs="+", default=[4, 8, 12, 16, 20])
    parser.add_argument("--eval-per-length", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/seq2seq_reversal"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # GRU steps are small: threads only add contention on a shared machine

    train_set = reversal_dataset(args.max_steps * args.batch_size, 1, args.train_max_length, args.seed)
    report = {"task": "reverse a digit string", "settings": vars(args) | {"output": str(args.output)}, "models": {}}
    report["settings"]["work_dir"] = str(args.work_dir)
    report["machine"] = environment(1)
    for context in ("additive", "fixed"):
        model, train_loss, seconds = train(context, args, train_set, args.work_dir)
        accuracy = evaluate_by_length(model, args.eval_lengths, args.eval_per_length, args.seed + 1)
        report["models"][context] = {
            "parameters": model.num_parameters(),
            "mean_train_loss": train_loss,  # Trainer's training_loss: the mean over all steps
            "train_seconds": seconds,
            "accuracy_by_length": accuracy,
        }
        print(context, json.dumps(report["models"][context]), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown_table(report))


def markdown_table(report: dict) -> str:
    lengths = list(report["models"]["additive"]["accuracy_by_length"])
    lines = [
        "| length | additive attention: exact / digits | fixed context: exact / digits |",
        "|---:|---:|---:|",
    ]
    for length in lengths:
        cells = [
            f"{cell['exact_match']:.3f} / {cell['digit_accuracy']:.3f}"
            for cell in (report["models"][name]["accuracy_by_length"][length] for name in ("additive", "fixed"))
        ]
        lines.append(f"| {length} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
