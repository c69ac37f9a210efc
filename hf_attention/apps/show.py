"""`hf-attention show MODEL INPUT --output PNG`: load a saved model and its processor, run it once, draw where it
attends (`hf_attention.visualize`), write the PNG.

MODEL is a folder written by `save_pretrained` / `hf-attention train`, or a Hub id. INPUT is an image or video file,
or a test item of the built-in data: `digits:INDEX`, `fashion-mnist:INDEX`, `translated-fashion-mnist:INDEX` (the
image at a random place, seeded by INDEX, on the glimpse model's 60x60 canvas), `cluttered-mnist:INDEX` (test canvas
INDEX of the cluttered-MNIST glimpse experiment), `openmoji:INDEX` (an emoji; its name
is the caption unless --text gives one) or `moving-digits:INDEX` (a clip of the video model's data).
"""

from __future__ import annotations

import argparse
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

BUILT_IN = re.compile(r"^(digits|fashion-mnist|translated-fashion-mnist|cluttered-mnist|openmoji|moving-digits):(\d+)$")


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).suffix != ""


def model_auto_class(model_name_or_path: str, revision: str | None = None):
    """The Auto class that loads this checkpoint's architecture (from its config.json), and the config."""
    from transformers import AutoConfig, AutoModel

    from .. import REGISTRY

    if _looks_like_path(model_name_or_path) and not Path(model_name_or_path).expanduser().is_dir():
        raise FileNotFoundError(f"Model folder {model_name_or_path} does not exist.")
    config = AutoConfig.from_pretrained(model_name_or_path, revision=revision)
    architecture = (config.architectures or [None])[0]
    for _, base_model, heads in REGISTRY:
        if base_model.__name__ == architecture:
            return AutoModel, config
        for auto_class, head in heads.items():
            if head.__name__ == architecture:
                return auto_class, config
    known = sorted(cls.__name__ for _, base, heads in REGISTRY for cls in (base, *heads.values()))
    raise ValueError(f"{model_name_or_path} holds a {architecture}, not a model hf_attention defines: {known}.")


def load_model_and_processor(model_name_or_path: str, revision: str | None = None):
    """The model (eval mode) through the Auto classes, and the processor saved with it."""
    from transformers import AutoProcessor

    auto_class, config = model_auto_class(model_name_or_path, revision)
    model = auto_class.from_pretrained(model_name_or_path, revision=revision).eval()
    try:
        processor = AutoProcessor.from_pretrained(model_name_or_path, revision=revision)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{model_name_or_path} has no saved processor ({error.__class__.__name__}: {str(error).splitlines()[0]}). "
            "Save the image processor next to the model with `processor.save_pretrained(folder)` "
            "(`hf-attention train` does)."
        ) from error
    return model, processor


def _pick(items, spec: str, name: str, index: int):
    if index >= len(items):
        raise ValueError(f"{spec}: the {name} test split has {len(items)} items (indices 0..{len(items) - 1}).")
    return items[index]


@lru_cache(maxsize=1)
def _digits_test_images() -> list[Image.Image]:
    from .data import load_image_dataset

    return load_image_dataset("digits")["test"]["image"]


def _fashion_mnist_test_image(spec: str, index: int) -> Image.Image:
    """Test image `index` in file order, without building the 70,000-image dataset."""
    from .data import FASHION_MNIST_DIR, _idx_file, read_idx

    images = read_idx(_idx_file(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte"))
    return Image.fromarray(_pick(images, spec, "fashion-mnist", index), mode="L")


def load_built_in(spec: str):
    """A test item of the built-in data `NAME:INDEX`: an image, (image, caption) for openmoji, or a clip's frames
    (frames, height, width, 3) for moving-digits; None when `spec` does not name one."""
    built_in = BUILT_IN.match(spec)
    if not built_in:
        return None
    name, index = built_in.group(1), int(built_in.group(2))
    if name == "digits":
        return _pick(_digits_test_images(), spec, name, index)
    if name == "fashion-mnist":
        return _fashion_mnist_test_image(spec, index)
    if name == "translated-fashion-mnist":  # the glimpse model's data: pasted at a random place (seeded by INDEX)
        from .data_glimpse import CANVAS_SIZE, place_on_canvas, random_offsets

        image = _fashion_mnist_test_image(spec, index)
        offset = random_offsets(1, image.width, CANVAS_SIZE, np.random.default_rng(index))[0]
        return place_on_canvas(image, CANVAS_SIZE, *(int(value) for value in offset))
    if name == "cluttered-mnist":  # the glimpse experiment's fixed test canvases, one grey channel in [0, 1]
        from .data_glimpse import load_cluttered_mnist

        canvas = np.asarray(_pick(load_cluttered_mnist()[0]["test"]["pixel_values"], spec, name, index))[0]
        return Image.fromarray((canvas * 255).round().astype(np.uint8))  # 2-D uint8: mode "L"
    if name == "openmoji":
        from .data_image_text import load_openmoji

        item = _pick(load_openmoji()["test"], spec, name, index)
        return item["image"], item["text"]
    from .data_video import load_moving_glyphs

    return np.asarray(_pick(load_moving_glyphs("digits")["test"]["video"], spec, name, index), dtype=np.uint8)


def load_image(spec: str) -> Image.Image:
    """An image file, or a built-in test image: `digits:INDEX`, `fashion-mnist:INDEX`,
    `translated-fashion-mnist:INDEX`, `cluttered-mnist:INDEX` or `openmoji:INDEX`."""
    built_in = load_built_in(spec)
    if isinstance(built_in, tuple):
        return built_in[0]
    if isinstance(built_in, Image.Image):
        return built_in
    if built_in is not None:
        raise ValueError(f"{spec} is a video clip; this model reads images.")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Input {spec} is not a file, nor a built-in input such as digits:0, fashion-mnist:0, "
            "translated-fashion-mnist:0, cluttered-mnist:0, openmoji:0 or moving-digits:0."
        )
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except OSError as error:
        raise ValueError(f"Input {spec} is not an image PIL can read ({error}).") from error


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")


def is_video_model(model) -> bool:
    return "video" in getattr(model, "input_modalities", ())


def load_video_frames(spec: str, num_frames: int) -> list[Image.Image]:
    """`num_frames` frames of a video file (decoded with PyAV) or of a built-in `moving-digits:INDEX` test clip,
    evenly spaced from the first to the last."""
    built_in = load_built_in(spec)
    if built_in is not None and not isinstance(built_in, np.ndarray):
        raise ValueError(f"{spec} is an image; a video model needs a video file or moving-digits:INDEX.")
    if built_in is not None:
        indices = np.linspace(0, len(built_in) - 1, num_frames).round().astype(int)
        return [Image.fromarray(built_in[index]) for index in indices]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Input {spec} is not a file; a video model needs a video file ({', '.join(VIDEO_SUFFIXES)})."
        )
    try:
        import av
    except ImportError as error:
        raise ImportError("Reading videos needs PyAV: pip install av (it is in the [train] extra).") from error
    try:
        with av.open(str(path)) as container:
            frames = [frame.to_image() for frame in container.decode(video=0)]
    except (av.error.FFmpegError, IndexError) as error:
        raise ValueError(f"Input {spec} is not a video PyAV can decode ({error}).") from error
    if len(frames) < 2:
        raise ValueError(
            f"Input {spec} holds {len(frames)} frame(s), not a video: the model reads {num_frames} frames of a clip."
        )
    indices = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
    return [frames[index] for index in indices]


def is_image_text_model(model) -> bool:
    return {"image", "text"} <= set(getattr(model, "input_modalities", ()))


def tokenize_caption(model_name_or_path: str, processor, image: Image.Image, caption: str, revision: str | None):
    """The model inputs for (image, caption), the caption's words and each token's word (None for special tokens),
    with the tokenizer saved with the model (inside its processor, or beside it)."""
    from transformers import AutoTokenizer

    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, revision=revision)
        except (OSError, ValueError) as error:
            raise ValueError(f"{model_name_or_path} has no saved tokenizer to read the caption with.") from error
    if not tokenizer.is_fast:
        raise ValueError("Drawing per word needs a fast tokenizer (it maps tokens to words); this one is not.")
    image_processor = getattr(processor, "image_processor", processor)
    encoding = tokenizer(caption, return_tensors="pt")
    word_ids = encoding.word_ids(0)
    words = {}
    for word in dict.fromkeys(word for word in word_ids if word is not None):
        span = encoding.word_to_chars(0, word)
        words[word] = caption[span.start : span.end]
    inputs = dict(encoding)
    inputs["pixel_values"] = image_processor(images=image, return_tensors="pt")["pixel_values"]
    return inputs, words, word_ids


def _normalisation(processor) -> tuple:
    """The (mean, std) the processor normalises with, to show the input as the model saw it; (None, None) if none."""
    image_processor = getattr(processor, "image_processor", processor)
    if not getattr(image_processor, "do_normalize", False):
        return None, None
    return image_processor.image_mean, image_processor.image_std


def draw(model, processor, input_spec: str, model_name_or_path: str, text: str | None = None,
         query_pixel: tuple[int, int] | None = None, panel_size: int = 160, dpi: int = 100,
         revision: str | None = None):  # fmt: skip
    """Run the model once on the input and return its picture (a matplotlib figure, or a PIL image)."""
    from .visualize import draw_attention, draw_image_text, image_from_pixel_values

    normalisation = _normalisation(processor)
    if is_image_text_model(model):
        built_in = load_built_in(input_spec)
        text = text or (built_in[1] if isinstance(built_in, tuple) else None)  # an emoji's own name by default
        if not text:
            raise ValueError(f"{type(model).__name__} draws a caption's words over an image: pass --text CAPTION.")
        image = (built_in[0] if isinstance(built_in, tuple) else load_image(input_spec)).convert("RGB")
        inputs, words, word_ids = tokenize_caption(model_name_or_path, processor, image, text, revision)
        seen = image_from_pixel_values(inputs["pixel_values"][0], *normalisation)
        pixel_values, input_ids, mask = inputs["pixel_values"], inputs["input_ids"], inputs.get("attention_mask")
        return draw_image_text(model, pixel_values, input_ids, mask, seen, words, word_ids, panel_size, dpi)
    if text:
        raise ValueError(f"--text is for image-text models; {type(model).__name__} takes no caption.")
    if is_video_model(model):
        frames = load_video_frames(input_spec, getattr(model, "video_model", model).config.num_frames)
        pixel_values = processor(frames, return_tensors="pt")["pixel_values"]
        seen = [image_from_pixel_values(frame, *normalisation) for frame in pixel_values[0]]
    else:
        image = load_image(input_spec)
        image = image.convert("L" if getattr(model.config, "num_channels", 3) == 1 else "RGB")
        pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
        seen = image_from_pixel_values(pixel_values[0], *normalisation)
    return draw_attention(model, pixel_values, seen, query_pixel, panel_size, dpi)


def show(
    model_name_or_path: str,
    input_spec: str,
    output: str | Path,
    query_pixel: tuple[int, int] | None = None,
    text: str | None = None,
    panel_size: int = 160,
    dpi: int = 100,
    revision: str | None = None,
) -> Path:
    """Draw where the model attends on the input and write the PNG; returns its path."""
    from .visualize import save_figure

    output = Path(output)
    if output.suffix.lower() != ".png":
        raise ValueError(f"--output must name a .png file, got {output}.")
    if panel_size < 64 or dpi <= 0:
        raise ValueError(f"--panel-size must be at least 64 pixels and --dpi positive, got {panel_size} and {dpi}.")
    model, processor = load_model_and_processor(model_name_or_path, revision)
    picture = draw(model, processor, input_spec, model_name_or_path, text, query_pixel, panel_size, dpi, revision)
    output.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(picture, Image.Image):
        picture.save(output, format="PNG", optimize=True)
    else:
        save_figure(picture, output)
    return output


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a folder written by save_pretrained / `hf-attention train`, or a Hub id")
    parser.add_argument(
        "input",
        help="an image or video file, or a built-in test item: digits:N, fashion-mnist:N, "
        "translated-fashion-mnist:N, openmoji:N, moving-digits:N",
    )
    parser.add_argument("--output", default="attention.png", help="the PNG to write (default attention.png)")
    parser.add_argument("--text", help="the caption whose words an image-text model's cross-attention is drawn for")
    parser.add_argument("--query", type=int, nargs=2, metavar=("ROW", "COLUMN"),
                        help="query pixel of the non-local / DANet / criss-cross maps, in the model's input "
                        "(after the processor's resize); default the centre")  # fmt: skip
    parser.add_argument("--panel-size", type=int, default=160, help="pixels per panel side")
    parser.add_argument("--dpi", type=int, default=100, help="dots per inch (font sizes scale with it)")
    parser.add_argument("--revision", help="branch, tag or commit of a Hub model")


def run_show(args: argparse.Namespace) -> int:
    path = show(args.model, args.input, args.output, args.query, args.text, args.panel_size, args.dpi, args.revision)
    print(f"wrote {path}")
    return 0
