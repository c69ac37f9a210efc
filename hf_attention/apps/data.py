"""Image-classification datasets that work offline, as `datasets.DatasetDict`s with "train" and "test" splits.

Every loader returns an "image" column (PIL images, or anything PIL can open) and a "label" `ClassLabel` column:
- "digits": scikit-learn's bundled 8x8 handwritten digits (1,797 images; ships inside the scikit-learn wheel);
- "fashion-mnist": the standard IDX files (Debian: `apt-get install dataset-fashion-mnist`);
- a folder of images (`datasets`' "imagefolder" layout: one sub-folder per class) or a Hub dataset id.
"""

import gzip
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, load_dataset

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
IMAGE_COLUMNS = ("image", "img", "pixel_values")
LABEL_COLUMNS = ("label", "labels", "fine_label")


def _from_arrays(images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> Dataset:
    features = Features({"image": Image(), "label": ClassLabel(names=class_names)})
    return Dataset.from_dict({"image": list(images), "label": labels.tolist()}, features=features)


def load_digits_dataset(test_size: float = 0.2, seed: int = 0) -> DatasetDict:
    """scikit-learn's digits as 8x8 greyscale images (17 grey levels rescaled to 0-255), split stratified."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    dataset = _from_arrays(images, digits.target, [str(digit) for digit in range(10)])
    return dataset.train_test_split(test_size=test_size, seed=seed, stratify_by_column="label")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format, optionally gzipped) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number {data[:4].hex()}).")
    num_dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(num_dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * num_dims)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {body.size} values.")
    return body.reshape(shape)


def _idx_file(data_dir: Path, stem: str) -> Path:
    for candidate in (data_dir / f"{stem}.gz", data_dir / stem):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {data_dir}. Install the dataset with "
        "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu, files land in "
        f"{FASHION_MNIST_DIR}), or download the four IDX files from "
        "https://github.com/zalandoresearch/fashion-mnist and pass --data-dir."
    )


def load_fashion_mnist(data_dir: str | Path | None = None) -> DatasetDict:
    """Fashion-MNIST's official 60,000 / 10,000 split from the IDX files in `data_dir`."""
    data_dir = Path(data_dir) if data_dir else FASHION_MNIST_DIR
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_idx_file(data_dir, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_idx_file(data_dir, f"{prefix}-labels-idx1-ubyte"))
        if len(images) != len(labels):
            raise ValueError(f"{split} split has {len(images)} images but {len(labels)} labels.")
        splits[split] = _from_arrays(images, labels, FASHION_MNIST_CLASSES)
    return DatasetDict(splits)


def _standardise_columns(dataset: DatasetDict) -> DatasetDict:
    columns = dataset["train"].column_names
    image_column = next((name for name in IMAGE_COLUMNS if name in columns), None)
    label_column = next((name for name in LABEL_COLUMNS if name in columns), None)
    if image_column is None or label_column is None:
        raise ValueError(f"Expected an image column {IMAGE_COLUMNS} and a label column {LABEL_COLUMNS}, got {columns}.")
    if not isinstance(dataset["train"].features[label_column], ClassLabel):
        dataset = dataset.class_encode_column(label_column)
    renames = {old: new for old, new in ((image_column, "image"), (label_column, "label")) if old != new}
    dataset = dataset.rename_columns(renames)
    return dataset.select_columns(["image", "label"])


def _check_image_folder_labels(dataset: DatasetDict, path: Path) -> None:
    """`imagefolder` labels images by their sub-folder only when there are two or more: with one class (or none) it
    gives no label column at all, so say so, naming the folders found."""
    if "label" in next(iter(dataset.values())).column_names:
        return
    folders = sorted(child.name for child in path.iterdir() if child.is_dir())
    raise ValueError(
        f"--dataset {path}: found {len(folders)} class sub-folder(s) {folders}; a classifier needs at least two "
        "(an image folder holds one sub-folder of images per class)."
    )


def load_external(name_or_path: str, test_size: float = 0.2, seed: int = 0) -> DatasetDict:
    """A local image folder or a Hub dataset id through `datasets`; a test split is carved out when missing."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        dataset = load_dataset("imagefolder", data_dir=str(path))
        _check_image_folder_labels(dataset, path)
    elif path.exists():
        raise ValueError(f"--dataset {name_or_path} is a file; expected an image folder (one sub-folder per class).")
    elif name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise FileNotFoundError(f"--dataset {name_or_path}: no such folder.")
    else:
        dataset = load_dataset(name_or_path)
    if "test" not in dataset:
        held_out = "validation" if "validation" in dataset else None
        dataset = (
            DatasetDict(train=dataset["train"], test=dataset[held_out])
            if held_out
            else dataset["train"].train_test_split(test_size=test_size, seed=seed)
        )
    dataset = _standardise_columns(DatasetDict(train=dataset["train"], test=dataset["test"]))
    class_names = dataset["train"].features["label"].names
    if len(class_names) < 2:
        raise ValueError(
            f"--dataset {name_or_path} has {len(class_names)} class ({class_names}); a classifier needs at least two "
            "(an image folder needs one sub-folder per class)."
        )
    return dataset


def load_image_dataset(name: str, data_dir: str | None = None, seed: int = 0) -> DatasetDict:
    """Dispatch on the dataset name: "digits", "fashion-mnist", or a folder / Hub id."""
    if name == "digits":
        return load_digits_dataset(seed=seed)
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir)
    return load_external(name, seed=seed)
