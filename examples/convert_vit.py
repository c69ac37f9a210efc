"""Start from a transformers ViT (here randomly initialised; with internet, any Hub checkpoint) and convert it."""

import torch
from transformers import ViTConfig, ViTForImageClassification

from hf_attention import from_transformers

# With internet: ViTForImageClassification.from_pretrained("google/vit-base-patch16-224")
reference = ViTForImageClassification(
    ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, num_labels=10)
).eval()
ours = from_transformers(reference)

pixels = torch.randn(1, 3, 224, 224)
with torch.no_grad():
    difference = (ours(pixels).logits - reference(pixels).logits).abs().max().item()
print(f"converted {type(reference).__name__} -> {type(ours).__name__}; max |logit difference| = {difference:.2e}")
ours.save_pretrained("outputs/converted-vit")  # safetensors, loadable with AutoModelForImageClassification
