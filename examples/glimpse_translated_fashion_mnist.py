"""Hard attention on translated Fashion-MNIST: train the recurrent glimpse model (REINFORCE, through Trainer), draw
where it looks, and use the saved folder in transformers' image-classification pipeline.

    python examples/glimpse_translated_fashion_mnist.py                                  # a quick look, ~1 min
    python examples/glimpse_translated_fashion_mnist.py --train-size 60000 --epochs 20   # a real run

Needs the Fashion-MNIST IDX files (Debian: `apt-get install dataset-fashion-mnist`, or pass --data-dir).
"""

import argparse

import torch
from PIL import Image
from transformers import pipeline

from hf_attention.apps.cli import build_parser
from hf_attention.apps.training_glimpse import fit_glimpse
from hf_attention.apps.visualize_glimpse import draw_glimpse_paths

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--train-size", default="500")
parser.add_argument("--epochs", default="1")
parser.add_argument("--data-dir")
options, _ = parser.parse_known_args()  # under a test runner, its own arguments are ignored

argv = ["train", "glimpse", "--dataset", "translated-fashion-mnist", "--train-size", options.train_size,
        "--test-size", "200", "--epochs", options.epochs, "--output-dir", "outputs/glimpse-example"]  # fmt: skip
args = build_parser().parse_args(argv + (["--data-dir", options.data_dir] if options.data_dir else []))
summary, model = fit_glimpse(args)  # 8 glimpses of 12x12 at 3 scales: the paper's 60x60 setting
print("\n".join(summary.lines()))
print(f"glimpse paths of the trained model: {summary.output_dir}/glimpse_paths.png")

# the same picture by hand: any images, any model output's glimpse_locations
classifier = pipeline("image-classification", model=summary.output_dir)
test_images = classifier.image_processor([torch.zeros(60, 60, 3, dtype=torch.uint8).numpy()] * 2, return_tensors="pt")[
    "pixel_values"
]
with torch.no_grad():
    outputs = model.eval()(test_images)
picture = draw_glimpse_paths(test_images, outputs.glimpse_locations, model.config.patch_size, model.config.num_scales)
picture.save("blank_canvas_glimpses.png")
print(
    "on a blank canvas the policy looks at",
    [tuple(round(v, 2) for v in xy) for xy in outputs.glimpse_locations[0].tolist()],
)

# the pipeline (the saved ViTImageProcessor + the model) gives the model's own probabilities
canvas = Image.new("L", (60, 60))
canvas.paste(Image.new("L", (28, 28), 200), (5, 20))
top = classifier(canvas, top_k=1)[0]
with torch.no_grad():
    pixels = classifier.image_processor(canvas.convert("RGB"), return_tensors="pt")["pixel_values"]
    probability = model(pixels).logits.softmax(-1)[0, model.config.label2id[top["label"]]]
difference = abs(top["score"] - float(probability))
print(f"pipeline says {top['label']!r}; max |pipeline score - model probability| = {difference:.1e}")
