"""Retrieval over a folder of images: score every caption by ITC, re-rank the top k by ITM.

Uses the model `hf-attention train image-text` saved in outputs/image-text if it is there; otherwise a small
untrained one with a tokenizer trained on the captions (the ranking is then arbitrary, the mechanics the same).
The folder is filled with OpenMoji glyphs (CC BY-SA 4.0, https://openmoji.org).
"""

from pathlib import Path

import torch
from PIL import Image, ImageFont
from transformers import VisionTextDualEncoderProcessor

from hf_attention import (
    CLIPResidualTextConfig,
    VisionTextCrossAttentionConfig,
    VisionTextCrossAttentionForImageTextRetrieval,
    VisionTransformerConfig,
)
from hf_attention.apps.data_image_text import openmoji_font_path, render_emoji, train_caption_tokenizer
from hf_attention.apps.training import make_image_processor

emojis = ["\N{RED APPLE}", "\N{GRINNING FACE}", "\N{CAT FACE}", "\N{ROCKET}", "\N{SUN WITH FACE}", "\N{SLICE OF PIZZA}"]
captions = ["red apple", "grinning face", "cat face", "rocket", "sun with face", "slice of pizza"]
folder = Path("outputs/emoji-folder")
folder.mkdir(parents=True, exist_ok=True)
font = ImageFont.truetype(openmoji_font_path(), 54)
for index, emoji in enumerate(emojis):
    render_emoji(emoji, font, 64).save(folder / f"{index}.png")

if Path("outputs/image-text/config.json").exists():
    model = VisionTextCrossAttentionForImageTextRetrieval.from_pretrained("outputs/image-text")
    processor = VisionTextDualEncoderProcessor.from_pretrained("outputs/image-text")
else:
    tokenizer = train_caption_tokenizer(captions, vocab_size=100)
    config = VisionTextCrossAttentionConfig(
        vision_config=VisionTransformerConfig.tiny(image_size=32, patch_size=8).to_dict(),
        text_config=CLIPResidualTextConfig.tiny(vocab_size=len(tokenizer)).to_dict(),
        projection_dim=32, num_fusion_layers=1, num_fusion_heads=4,
    )  # fmt: skip
    model = VisionTextCrossAttentionForImageTextRetrieval(config)
    processor = VisionTextDualEncoderProcessor(make_image_processor(32), tokenizer)
model.eval()

paths = sorted(folder.glob("*.png"), key=lambda path: int(path.stem))
images = [Image.open(path).convert("RGB") for path in paths]
inputs = processor(images=images, text=captions, return_tensors="pt", padding=True)
inputs.pop("token_type_ids", None)
ranking = model.rank(**inputs, query="image", top_k=3)  # ITC over all captions, ITM + ITC on the best 3 (BLIP)
for path, order in zip(paths, ranking.indices, strict=True):
    print(f"{path.name}: " + ", ".join(captions[i] for i in order[:3]))

# the re-ranked pairs' ITM match log-odds (`itm_scores`, in the re-ranked order) are those of the pairs scored directly
with torch.no_grad():
    top = ranking.indices[0, :3]
    pairs = model(input_ids=inputs["input_ids"][top], attention_mask=inputs["attention_mask"][top],
                  pixel_values=inputs["pixel_values"][:1]).itm_logits  # fmt: skip
difference = ((pairs[:, 1] - pairs[:, 0]) - ranking.itm_scores[0]).abs().max().item()
print(f"max |re-rank score - direct ITM| = {difference:.2e}")
