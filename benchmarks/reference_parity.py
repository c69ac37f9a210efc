"""Does each mechanism compute what its reference computes? Largest absolute difference between our module and the
reference implementation (PyTorch's `nn.MultiheadAttention`, transformers' CLIP, DETR and ViT, the
Nadaraya-Watson formula) on the same weights and inputs, in float32; and what learning the Nadaraya-Watson bandwidth
buys on d2l's regression problem.

    python benchmarks/reference_parity.py      # writes benchmarks/results/reference_parity.json (a few seconds)
"""

from __future__ import annotations

import argparse

import torch
from _environment import environment, write_report
from transformers import CLIPVisionConfig, DetrConfig, ViTConfig, ViTForImageClassification
from transformers.models.clip.modeling_clip import CLIPEncoderLayer
from transformers.models.detr.modeling_detr import DetrDecoderLayer, DetrEncoderLayer

from hf_attention import (
    FeatureMapCrossAttention,
    MultiHeadAttentionConfig,
    MultiHeadAttentionModel,
    NadarayaWatsonConfig,
    NadarayaWatsonModel,
    from_transformers,
)

WIDTH, HEADS, TOKENS, BATCH = 64, 4, 50, 4


def row(module: str, reference: str, ours: torch.Tensor, theirs: torch.Tensor) -> dict:
    return {
        "module": module,
        "reference": reference,
        "max_abs_difference": (ours - theirs).abs().max().item(),
        "max_abs_output": theirs.abs().max().item(),
    }


@torch.no_grad()
def multi_head_attention() -> dict:
    reference = torch.nn.MultiheadAttention(WIDTH, HEADS, batch_first=True).eval()
    config = MultiHeadAttentionConfig(hidden_size=WIDTH, num_attention_heads=HEADS, qkv_bias=True)
    ours = MultiHeadAttentionModel(config)
    attention = ours.attention
    for projection, weight, bias in zip(
        (attention.q_proj, attention.k_proj, attention.v_proj),
        reference.in_proj_weight.chunk(3),
        reference.in_proj_bias.chunk(3),
        strict=True,
    ):
        projection.weight.copy_(weight)
        projection.bias.copy_(bias)
    attention.out_proj.load_state_dict(reference.out_proj.state_dict())
    hidden = torch.randn(BATCH, TOKENS, WIDTH)
    expected = reference(hidden, hidden, hidden, need_weights=False)[0]
    return row("MultiHeadAttentionModel", "torch.nn.MultiheadAttention", ours(hidden).last_hidden_state, expected)


@torch.no_grad()
def feature_map_cross_attention() -> dict:
    """1x1 convolution in, `nn.MultiheadAttention` from the pixels to the context (`kdim`, `vdim`), 1x1 out."""
    context_width = 48
    ours = FeatureMapCrossAttention(8, WIDTH, HEADS, context_dim=context_width).eval()
    reference = torch.nn.MultiheadAttention(WIDTH, HEADS, kdim=context_width, vdim=context_width, batch_first=True)
    attention = ours.attention
    reference.q_proj_weight.copy_(attention.q_proj.weight)
    reference.k_proj_weight.copy_(attention.k_proj.weight)
    reference.v_proj_weight.copy_(attention.v_proj.weight)
    reference.in_proj_bias.copy_(torch.cat([attention.q_proj.bias, attention.k_proj.bias, attention.v_proj.bias]))
    reference.out_proj.load_state_dict(attention.out_proj.state_dict())
    feature_map, context = torch.randn(BATCH, 8, 7, 7), torch.randn(BATCH, 12, context_width)
    pixels = ours.proj_in(feature_map).flatten(2).transpose(1, 2)
    attended = reference(pixels, context, context, need_weights=False)[0].transpose(1, 2).unflatten(-1, (7, 7))
    expected = ours.proj_out(attended)
    return row("FeatureMapCrossAttention", "1x1 conv + torch.nn.MultiheadAttention + 1x1 conv",
               ours(feature_map, context)[0], expected)  # fmt: skip


@torch.no_grad()
def clip_block() -> dict:
    config = CLIPVisionConfig(hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_attention_heads=HEADS)
    config._attn_implementation = "eager"
    reference = CLIPEncoderLayer(config).eval()
    hidden = torch.randn(BATCH, TOKENS, WIDTH)
    return row("CLIPResidualAttentionBlock", "transformers CLIPEncoderLayer", from_transformers(reference)(hidden),
               reference(hidden, None))  # fmt: skip


def detr_config() -> DetrConfig:
    return DetrConfig(
        d_model=WIDTH, encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=4 * WIDTH,
        decoder_ffn_dim=4 * WIDTH, dropout=0.0, use_timm_backbone=False, use_pretrained_backbone=False,
    )  # fmt: skip


@torch.no_grad()
def detr_layers() -> list[dict]:
    encoder, decoder = DetrEncoderLayer(detr_config()).eval(), DetrDecoderLayer(detr_config()).eval()
    hidden, positions = torch.randn(BATCH, TOKENS, WIDTH), torch.randn(BATCH, TOKENS, WIDTH)
    queries, query_positions = torch.randn(BATCH, 10, WIDTH), torch.randn(BATCH, 10, WIDTH)
    encoded = from_transformers(encoder)(hidden, position_embeddings=positions)
    expected_encoded = encoder(hidden, None, spatial_position_embeddings=positions)
    decoded = from_transformers(decoder)(
        queries, hidden, position_embeddings=positions, query_position_embeddings=query_positions
    )
    expected_decoded = decoder(
        queries, object_queries_position_embeddings=query_positions, spatial_position_embeddings=positions,
        encoder_hidden_states=hidden,
    )  # fmt: skip
    expected_decoded = expected_decoded[0] if isinstance(expected_decoded, tuple) else expected_decoded
    return [
        row("DETRTransformerEncoderLayer", "transformers DetrEncoderLayer", encoded, expected_encoded),
        row("DETRTransformerDecoderLayer", "transformers DetrDecoderLayer", decoded, expected_decoded),
    ]


@torch.no_grad()
def vision_transformer() -> dict:
    config = ViTConfig(image_size=32, patch_size=4, hidden_size=WIDTH, num_hidden_layers=4, num_attention_heads=HEADS,
                       intermediate_size=4 * WIDTH, num_labels=10)  # fmt: skip
    reference = ViTForImageClassification(config).eval()
    pixel_values = torch.randn(BATCH, 3, 32, 32)
    ours = from_transformers(reference).eval()
    return row("VisionTransformerForImageClassification", "transformers ViTForImageClassification",
               ours(pixel_values).logits, reference(pixel_values).logits)  # fmt: skip


def nadaraya_watson(steps: int = 200) -> dict:
    """d2l's problem: y = 2 sin x + x^0.8 + noise(0.5) on 50 points; error against the noiseless curve."""
    generator = torch.Generator().manual_seed(0)
    truth = lambda x: 2 * torch.sin(x) + x**0.8  # noqa: E731
    x_train = torch.sort(torch.rand(50, generator=generator) * 5).values
    y_train = truth(x_train) + 0.5 * torch.randn(50, generator=generator)
    x_test = torch.arange(0, 5, 0.1)
    model = NadarayaWatsonModel(NadarayaWatsonConfig(initial_bandwidth=1.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    keep_others = ~torch.eye(50, dtype=torch.bool)  # each training point predicted from the others

    def test_error() -> float:
        with torch.no_grad():
            prediction = model(x_test[None], x_train[None], y_train[None]).last_hidden_state[0]
        return torch.nn.functional.mse_loss(prediction, truth(x_test)).item()

    fixed_error = test_error()
    for _ in range(steps):
        keys = x_train.expand(50, 50)[keep_others].view(50, 49)
        values = y_train.expand(50, 50)[keep_others].view(50, 49)
        prediction = model(x_train[:, None], keys, values).last_hidden_state[:, 0]
        loss = torch.nn.functional.mse_loss(prediction, y_train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {
        "problem": "y = 2 sin x + x^0.8 + N(0, 0.5^2), 50 training points in [0, 5], leave-one-out fit of w",
        "steps": steps,
        "fixed_bandwidth": 1.0,
        "fixed_test_mse": fixed_error,
        "learned_bandwidth": model.attention.bandwidth.item(),
        "learned_test_mse": test_error(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/reference_parity.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = [multi_head_attention(), feature_map_cross_attention(), clip_block(), *detr_layers(), vision_transformer()]
    report = {
        "benchmark": "each module against its reference implementation, same weights and inputs, float32 "
        f"(batch {BATCH}, {TOKENS} tokens, width {WIDTH}, {HEADS} heads)",
        "command": "python benchmarks/reference_parity.py",
        "results": rows,
        "nadaraya_watson_regression": nadaraya_watson(),
        "setup": environment(),
    }
    write_report(args.out, report)
    for entry in rows:
        print(f"{entry['module']:42s} {entry['max_abs_difference']:.2e} (outputs up to {entry['max_abs_output']:.2f})")
    print(report["nadaraya_watson_regression"])


if __name__ == "__main__":
    main()
