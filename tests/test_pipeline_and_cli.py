"""The main job end to end: data loading, `hf-attention train vit`, and the saved folder in a pipeline."""

import gzip

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline

from hf_attention.apps.cli import main
from hf_attention.apps.data import load_digits_dataset, load_fashion_mnist, read_idx
from hf_attention.apps.training import make_image_processor


def write_idx(path, array, gzipped=True):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    opener = gzip.open if gzipped else open
    with opener(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip_and_truncation(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28))
    write_idx(tmp_path / "images.gz", images)
    np.testing.assert_array_equal(read_idx(tmp_path / "images.gz"), images)
    write_idx(tmp_path / "short", images[:, :10], gzipped=False)
    (tmp_path / "bad").write_bytes(
        (tmp_path / "short").read_bytes().replace(b"\x00\x00\x00\x0a", b"\x00\x00\x00\x1c", 1)
    )
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "bad")


def test_fashion_mnist_from_a_folder_and_a_clear_error_when_absent(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 6), ("t10k", 4)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(count, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count) % 10)
    dataset = load_fashion_mnist(tmp_path)
    assert len(dataset["train"]) == 6 and len(dataset["test"]) == 4
    assert dataset["train"].features["label"].names[9] == "Ankle boot"
    assert dataset["test"][3]["image"].size == (28, 28) and dataset["test"][3]["label"] == 3
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist.*--data-dir"):
        load_fashion_mnist(tmp_path / "missing")


def test_digits_split_is_stratified_and_complete():
    dataset = load_digits_dataset()
    assert len(dataset["train"]) + len(dataset["test"]) == 1797
    test_counts = np.bincount(dataset["test"]["label"], minlength=10)
    assert test_counts.min() >= 30, test_counts
    image = dataset["train"][0]["image"]
    assert image.size == (8, 8) and max(image.getdata()) <= 255


@pytest.mark.slow
def test_train_vit_end_to_end_then_load_and_pipeline(tmp_path, capsys):
    output_dir = tmp_path / "vit"
    argv = ["train", "vit", "--output-dir", str(output_dir), "--epochs", "0.25", "--hidden-size", "32",
            "--num-layers", "1", "--mlp-size", "64"]  # fmt: skip
    assert main(argv) == 0
    summary = capsys.readouterr().out
    assert "dataset           digits" in summary and "train / eval size 1437 / 360" in summary
    accuracy = float(summary.split("test accuracy")[1].split()[0])
    assert 0.0 <= accuracy <= 1.0

    saved = sorted(path.name for path in output_dir.iterdir())
    assert "model.safetensors" in saved and not [name for name in saved if name.endswith((".bin", ".pt", ".pkl"))]
    model = AutoModelForImageClassification.from_pretrained(output_dir).eval()
    assert model.config.id2label[7] == "7" and model.config.num_channels == 3

    classifier = pipeline("image-classification", model=str(output_dir))
    digit = Image.fromarray(np.full((8, 8), 128, dtype=np.uint8), mode="L")
    predictions = classifier(digit, top_k=3)
    assert len(predictions) == 3 and {p["label"] for p in predictions} <= set("0123456789")
    pixel_values = make_image_processor(8)(digit.convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probabilities = model(pixel_values).logits.softmax(-1)[0]
    best = int(probabilities.argmax())
    assert predictions[0]["label"] == str(best)
    assert predictions[0]["score"] == pytest.approx(float(probabilities[best]), abs=1e-5)


def test_unknown_model_is_refused_by_the_parser():
    with pytest.raises(SystemExit):
        main(["train", "resnet"])
