"""One model, every attention backend: same numbers, and real attention maps even from fused kernels."""

import torch

from hf_attention import VisionTransformerConfig, VisionTransformerForImageClassification

config = VisionTransformerConfig(
    image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
)
model = VisionTransformerForImageClassification(config).eval()
pixels = torch.randn(2, 3, 32, 32)

with torch.no_grad():
    model.set_attn_implementation("eager")
    reference = model(pixels).logits
    for implementation in ("sdpa", "flex_attention"):
        model.set_attn_implementation(implementation)
        logits = model(pixels).logits  # the backend's own kernel
        attention_map = tuple(model(pixels, output_attentions=True).attentions[0].shape)  # computed eagerly
        difference = (logits - reference).abs().max().item()
        print(f"{implementation:15s} max |logits - eager| = {difference:.2e}, attention map {attention_map}")
