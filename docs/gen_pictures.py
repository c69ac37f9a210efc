"""Draw the pictures of the families `hf-attention show` does not draw (blocks over token sequences, which take no
image): each is the family's own model, run once, with its real `output_attentions` maps.

    python docs/gen_pictures.py            # writes docs/images/mechanism-*.png
    python docs/gen_pictures.py --compressai outputs/cnn-compressai   # also show-compressai.png

(`--compressai` takes a folder written by `hf-attention train attention-cnn --attention compressai`.)

The models are untrained (seeded), so the pictures show the structure each mechanism imposes (which keys a query
may see, the shape of the map) rather than anything learned; Nadaraya-Watson needs no training to regress.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import hf_attention as hfa  # noqa: E402

IMAGES = Path(__file__).resolve().parent / "images"


def heatmap(axis, matrix: torch.Tensor, title: str, xlabel: str, ylabel: str) -> None:
    axis.imshow(matrix.detach().float().numpy(), cmap="viridis", vmin=0, aspect="auto")
    axis.set_title(title, fontsize=9)
    axis.set_xlabel(xlabel, fontsize=8)
    axis.set_ylabel(ylabel, fontsize=8)
    axis.tick_params(labelsize=7)


def save(figure, name: str) -> None:
    figure.tight_layout()
    figure.savefig(IMAGES / f"mechanism-{name}.png", dpi=110)
    plt.close(figure)


@torch.no_grad()
def multi_head_attention() -> None:
    """Self-attention over 8 tokens with the last 3 padded, then causal: padded keys get no weight, padded
    queries output zeros, the causal map is lower-triangular."""
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]])
    figure, axes = plt.subplots(1, 2, figsize=(7, 3.2))
    for axis, causal in zip(axes, (False, True), strict=True):
        model = hfa.MultiHeadAttentionModel(
            hfa.MultiHeadAttentionConfig(hidden_size=32, num_attention_heads=4, is_causal=causal)
        )
        attentions = model(torch.randn(1, 8, 32), attention_mask=mask, output_attentions=True).attentions[0]
        heatmap(axis, attentions[0, 0], f"head 0, {'causal + ' if causal else ''}padding mask", "key", "query")
    save(figure, "multi-head-attention")


@torch.no_grad()
def feature_map_cross_attention() -> None:
    """A 6x6 feature map queries 7 text tokens, the last 2 padded: every pixel's weights over the tokens."""
    model = hfa.FeatureMapCrossAttentionModel(
        hfa.FeatureMapCrossAttentionConfig(
            num_channels=4, hidden_size=32, num_attention_heads=4, encoder_hidden_size=16
        )
    )
    out = model(
        torch.randn(1, 4, 6, 6),
        torch.randn(1, 7, 16),
        encoder_attention_mask=torch.tensor([[1] * 5 + [0] * 2]),
        output_attentions=True,
    )
    attentions = out.attentions[0][0, 0]  # (h*w, tokens)
    figure, axes = plt.subplots(1, 2, figsize=(7, 3.2))
    heatmap(axes[0], attentions, "head 0: pixels x text tokens (2 padded)", "text token", "pixel (row-major)")
    heatmap(axes[1], attentions[:, 0].reshape(6, 6), "weight of token 0 at each pixel", "column", "row")
    save(figure, "feature-map-cross-attention")


@torch.no_grad()
def clip_residual() -> None:
    model = hfa.CLIPResidualTransformerModel(
        hfa.CLIPResidualTransformerConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, is_causal=True
        )
    )
    attentions = model(
        torch.randn(1, 8, 32), attention_mask=torch.tensor([[1] * 6 + [0] * 2]), output_attentions=True
    ).attentions
    figure, axes = plt.subplots(1, 2, figsize=(7, 3.2))
    for index, axis in enumerate(axes):
        heatmap(axis, attentions[index][0].mean(0), f"block {index}, heads averaged (causal, 2 padded)", "key", "query")
    save(figure, "clip-residual")


@torch.no_grad()
def additive() -> None:
    attention = hfa.AdditiveAttention(query_dim=8, key_dim=6, hidden_dim=16)
    mask = torch.tensor([[1] * 10 + [0] * 2])
    _, weights = attention(
        torch.randn(1, 4, 8), torch.randn(1, 12, 6), torch.randn(1, 12, 5), attention_mask=mask, output_attentions=True
    )
    figure, axis = plt.subplots(figsize=(4.5, 2.6))
    heatmap(
        axis, weights[0, 0] if weights.dim() == 4 else weights[0], "4 queries over 12 keys (2 padded)", "key", "query"
    )
    save(figure, "additive")


@torch.no_grad()
def nadaraya_watson() -> None:
    """The textbook example: y = 2 sin x + x^0.8 with noise, regressed by Gaussian-kernel attention pooling."""
    torch.manual_seed(0)
    keys = torch.sort(torch.rand(1, 50) * 5).values
    values = 2 * torch.sin(keys) + keys**0.8 + torch.randn(1, 50) * 0.5
    queries = torch.arange(0, 5, 0.1).unsqueeze(0)
    figure, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    axes[0].plot(queries[0], 2 * torch.sin(queries[0]) + queries[0] ** 0.8, "k--", label="truth")
    axes[0].plot(keys[0], values[0], "o", alpha=0.4, label="keys, values")
    for bandwidth in (1.0, 4.0):
        model = hfa.NadarayaWatsonModel(hfa.NadarayaWatsonConfig(initial_bandwidth=bandwidth))
        out = model(queries, keys, values, output_attentions=True)
        axes[0].plot(queries[0], out.last_hidden_state[0], label=f"w = {bandwidth} (inverse width)")
    axes[0].legend(fontsize=7)
    axes[0].set_title("attention pooling as kernel regression", fontsize=9)
    heatmap(axes[1], out.attentions[0][0, 0], "weights at w = 4 (keys sorted)", "key", "query")
    save(figure, "nadaraya-watson")


@torch.no_grad()
def detr() -> None:
    model = hfa.DETRTransformerModel(
        hfa.DETRTransformerConfig(
            num_channels=16,
            hidden_size=32,
            num_attention_heads=4,
            encoder_layers=1,
            decoder_layers=1,
            intermediate_size=64,
            num_queries=6,
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
        )
    ).eval()
    pixel_mask = torch.ones(1, 5, 7, dtype=torch.long)
    pixel_mask[:, :, 5:] = 0  # the image is 5x5; two columns are padding
    out = model(torch.randn(1, 16, 5, 7), pixel_mask=pixel_mask, output_attentions=True)
    figure, axes = plt.subplots(1, 2, figsize=(7.5, 3.2))
    heatmap(
        axes[0],
        out.cross_attentions[-1][0].mean(0),
        "object queries over the 5x7 map",
        "pixel (row-major)",
        "object query",
    )
    heatmap(
        axes[1], out.cross_attentions[-1][0].mean(0)[0].reshape(5, 7), "query 0 (2 padded columns)", "column", "row"
    )
    save(figure, "detr")


@torch.no_grad()
def linformer() -> None:
    model = hfa.LinformerSelfAttentionModel(
        hfa.LinformerConfig(hidden_size=32, num_attention_heads=2, max_sequence_length=64, projected_length=8)
    )
    out = model(torch.randn(1, 64, 32), output_attentions=True)
    figure, axis = plt.subplots(figsize=(4.5, 3.4))
    heatmap(axis, out.attentions[0][0, 0], "64 tokens attend over k = 8 projected rows", "projected key", "query")
    save(figure, "linformer")


@torch.no_grad()
def compressai_gates(model_folder: str) -> None:
    """The gate sigmoid(b(x)) of every CompressAI block of a trained attention CNN on one test digit, averaged over
    channels (`hf-attention show` draws only query-key attention; this block is a gate)."""
    from hf_attention.apps.show import load_image, load_model_and_processor

    model, processor = load_model_and_processor(model_folder)
    image = load_image("digits:1").convert("RGB")
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
    gates = []
    hooks = [
        block.conv_b.register_forward_hook(lambda _m, _i, out: gates.append(torch.sigmoid(out)))
        for block in model.modules()
        if isinstance(block, hfa.CompressAIAttentionBlock)
    ]
    model(pixel_values=pixel_values)
    for hook in hooks:
        hook.remove()
    figure, axes = plt.subplots(1, len(gates) + 1, figsize=(2.2 * (len(gates) + 1), 2.4))
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title("input", fontsize=9)
    for index, (axis, gate) in enumerate(zip(axes[1:], gates, strict=True)):
        mean = gate[0].mean(0)
        axis.imshow(mean.numpy(), cmap="viridis")
        axis.set_title(f"stage {index} gate {mean.min():.2f}-{mean.max():.2f}", fontsize=9)
    for axis in axes:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(IMAGES / "show-compressai.png", dpi=110)
    plt.close(figure)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compressai", metavar="FOLDER", help="a trained attention CNN with CompressAI blocks")
    args = parser.parse_args()
    IMAGES.mkdir(exist_ok=True)
    if args.compressai:
        compressai_gates(args.compressai)
    for draw in (
        multi_head_attention,
        feature_map_cross_attention,
        clip_residual,
        additive,
        nadaraya_watson,
        detr,
        linformer,
    ):
        torch.manual_seed(0)
        draw()
        print("drew", draw.__name__)


if __name__ == "__main__":
    main()
