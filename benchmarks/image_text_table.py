"""Does cross-attention earn its cost? Retrieval of held-out OpenMoji emojis on one training budget.

Rows, all with the same towers (our ViT + our CLIP text tower, same sizes, same seed, same epochs and batches):
- ours trained with ITC + ITM (hard negatives), ranked by ITC alone (the model used as a dual encoder);
- the same model, the top k of ITC re-ranked by ITM;
- ours trained with ITC only (itm weight 0): a dual encoder of the same towers;
- transformers' `VisionTextDualEncoderModel` holding the same two towers, trained with its own CLIP loss.
Image->text and text->image recall@1/@5 over all held-out emojis. Writes JSON and prints the README table.

    python benchmarks/image_text_table.py                 # ~30 epochs of 1,170 emojis per row (slow on 2 cores)
    python benchmarks/image_text_table.py --epochs 10 --out benchmarks/results/image_text_openmoji.json
"""

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from transformers import Trainer, VisionTextDualEncoderConfig, VisionTextDualEncoderModel, set_seed

from hf_attention.apps.cli import build_parser
from hf_attention.apps.training import make_image_processor
from hf_attention.apps.training_image_text import (
    ImageTextPairs,
    build_model,
    check_split_sizes,
    load_pairs,
    make_collator,
    pair_training_arguments,
    process_images,
    retrieval_recall,
)


def recall_of(logits_per_image: torch.Tensor) -> dict:
    targets = torch.arange(len(logits_per_image))[:, None]
    results = {}
    for direction, logits in (("i2t", logits_per_image), ("t2i", logits_per_image.T)):
        order = logits.argsort(dim=-1, descending=True)
        for at in (1, 5):
            results[f"{direction} R@{at}"] = float((order[:, :at] == targets).any(dim=1).float().mean())
    return results


def train(model, train_pairs, collate, args, output_dir) -> float:
    arguments = pair_training_arguments(args, output_dir)
    trainer = Trainer(model=model, args=arguments, train_dataset=train_pairs,
                      data_collator=collate)  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


@torch.no_grad()
def dual_encoder_recall(model, test_pairs, tokenizer, max_length) -> dict:
    model.eval()
    texts = tokenizer(test_pairs.texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    image = model.get_image_features(pixel_values=test_pairs.pixel_values).pooler_output
    text = model.get_text_features(input_ids=texts["input_ids"], attention_mask=texts["attention_mask"]).pooler_output
    image, text = torch.nn.functional.normalize(image, dim=-1), torch.nn.functional.normalize(text, dim=-1)
    return recall_of(image @ text.T)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=float, default=30)
    parser.add_argument("--rerank-k", type=int, default=16)
    parser.add_argument("--num-emojis", type=int, help="a subset, for a quick run")
    parser.add_argument("--out", default="benchmarks/results/image_text_openmoji.json")
    parser.add_argument("--work-dir", default="/tmp/image_text_table")
    table_args = parser.parse_args()
    flags = ["train", "image-text", "--epochs", str(table_args.epochs), "--rerank-k", str(table_args.rerank_k)]
    if table_args.num_emojis:
        flags += ["--num-emojis", str(table_args.num_emojis)]
    args = build_parser().parse_args(flags)
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    dataset = load_pairs(args)
    image_processor = make_image_processor(args.image_size)
    train_pairs = ImageTextPairs(process_images(dataset["train"], image_processor), list(dataset["train"]["text"]),
                                 args.shift)  # fmt: skip
    test_pairs = ImageTextPairs(process_images(dataset["test"], image_processor), list(dataset["test"]["text"]))
    check_split_sizes(args, len(train_pairs), len(test_pairs))
    rows, seconds = [], {}

    set_seed(args.seed)
    model, tokenizer = build_model(args, train_pairs.texts)
    max_length = model.config.text_config.max_position_embeddings
    collate = make_collator(tokenizer, max_length)
    untrained = copy.deepcopy(model.vision_text_model)  # the same initial towers for the dual-encoder rows
    seconds["ours ITC + ITM"] = train(model, train_pairs, collate, args, f"{table_args.work_dir}/itm")
    recall = retrieval_recall(model, test_pairs.pixel_values, tokenizer, test_pairs.texts, args.rerank_k, max_length)
    for name, values in recall.items():
        label = "ours, trained ITC + ITM, ranked by " + (
            "ITC alone" if name == "ITC" else f"ITC, top {args.rerank_k} re-ranked by ITM"
        )
        rows.append({"model": label, **values})

    set_seed(args.seed)
    args.itm_weight = 0.0
    itc_only, _ = build_model(args, train_pairs.texts)
    itc_only.vision_text_model.load_state_dict(untrained.state_dict())
    seconds["ours ITC only"] = train(itc_only, train_pairs, collate, args, f"{table_args.work_dir}/itc")
    rows.append(
        {
            "model": "ours, trained ITC only (dual encoder)",
            **dual_encoder_recall(itc_only.vision_text_model, test_pairs, tokenizer, max_length),
        }
    )

    set_seed(args.seed)
    towers = copy.deepcopy(untrained)
    dual_config = VisionTextDualEncoderConfig.from_vision_text_configs(
        towers.config.vision_config, towers.config.text_config, projection_dim=towers.config.projection_dim
    )
    dual = VisionTextDualEncoderModel(dual_config, vision_model=towers.vision_model, text_model=towers.text_model)
    seconds["VisionTextDualEncoderModel"] = train(dual, train_pairs, collate, args, f"{table_args.work_dir}/dual")
    rows.append(
        {
            "model": "transformers VisionTextDualEncoderModel, same towers (ITC)",
            **dual_encoder_recall(dual, test_pairs, tokenizer, max_length),
        }
    )

    report = {
        "benchmark": "held-out OpenMoji retrieval, one training budget per row",
        "setup": {"train_emojis": len(train_pairs), "test_emojis": len(test_pairs), "epochs": args.epochs,
                  "batch_size": args.batch_size, "learning_rate": args.learning_rate, "image_size": args.image_size,
                  "hidden_size": args.hidden_size, "vision_layers": args.num_layers,
                  "text_layers": max(1, args.num_layers - 2), "fusion_layers": args.fusion_layers,
                  "rerank_k": args.rerank_k, "seed": args.seed,
                  "train_seconds": {k: round(v, 1) for k, v in seconds.items()},
                  "device": "cpu, shared 2-core machine", "data": "OpenMoji, CC BY-SA 4.0"},
        "rows": rows,
    }  # fmt: skip
    Path(table_args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(table_args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(markdown(rows))


def markdown(rows: list[dict]) -> str:
    keys = ["i2t R@1", "i2t R@5", "t2i R@1", "t2i R@5"]
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    lines += ["| " + row["model"] + " | " + " | ".join(f"{row[key]:.3f}" for key in keys) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
