"""Image-text retrieval speed: ITC scoring against ITC + ITM re-ranking, and ITM pairs/s against BLIP's.

1. Per query: one image against a gallery of texts whose token states and embeddings are cached (what a retrieval
   service keeps). ITC = the vision tower on the query + one matrix product + a sort; ITC + ITM@k adds one fusion
   pass over the k best pairs. Milliseconds per query, k = 4, 16, 64, side by side in one run.
2. ITM throughput of the fusion alone, on the same cached image and text tokens: our `text_to_image` fusion against
   the text encoder with cross-attention of transformers' `BlipForImageTextRetrieval` (+ its ITM head) at a matched
   size (layers, width, heads, MLP width, image tokens). Ours under eager and sdpa; BLIP's is eager only.

Rounds alternate between the variants so the (shared, noisy) machine's load hits all alike; medians are reported.

    python benchmarks/bench_image_text.py
    python benchmarks/bench_image_text.py --rounds 5 --out benchmarks/results/image_text_cpu.json
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from _environment import environment
from transformers import BlipConfig, BlipForImageTextRetrieval

from hf_attention import (
    CLIPResidualTextConfig,
    VisionTextCrossAttentionConfig,
    VisionTextCrossAttentionForImageTextRetrieval,
    VisionTransformerConfig,
)

WIDTH, HEADS, MLP, IMAGE_SIZE, PATCH = 256, 4, 1024, 64, 8  # 64 patches + the class token


def our_model(fusion_layers: int) -> VisionTextCrossAttentionForImageTextRetrieval:
    vision = VisionTransformerConfig(
        image_size=IMAGE_SIZE, patch_size=PATCH, hidden_size=WIDTH, num_hidden_layers=4, num_attention_heads=HEADS,
        intermediate_size=MLP,
    )  # fmt: skip
    text = CLIPResidualTextConfig(
        vocab_size=1000, max_position_embeddings=64, hidden_size=WIDTH, num_hidden_layers=2,
        num_attention_heads=HEADS, intermediate_size=MLP,
    )  # fmt: skip
    config = VisionTextCrossAttentionConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), projection_dim=128,
        num_fusion_layers=fusion_layers, num_fusion_heads=HEADS, fusion_intermediate_size=MLP,
    )  # fmt: skip
    return VisionTextCrossAttentionForImageTextRetrieval(config).eval()


def blip_model(fusion_layers: int) -> BlipForImageTextRetrieval:
    config = BlipConfig(
        vision_config=dict(hidden_size=WIDTH, num_hidden_layers=1, num_attention_heads=HEADS, intermediate_size=MLP,
                           image_size=IMAGE_SIZE, patch_size=PATCH),
        text_config=dict(vocab_size=1000, hidden_size=WIDTH, num_hidden_layers=fusion_layers,
                         num_attention_heads=HEADS, intermediate_size=MLP, encoder_hidden_size=WIDTH),
    )  # fmt: skip
    return BlipForImageTextRetrieval(config).eval()


def median_ms(function, iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        function()
    return 1000 * (time.perf_counter() - start) / iterations


def rerank_per_query(args) -> list[dict]:
    model = our_model(fusion_layers=2)
    gallery = torch.randint(1, 1000, (args.gallery, 12))
    mask = torch.ones_like(gallery)
    with torch.inference_mode():
        texts = model.vision_text_model.encode_texts(gallery, mask)
    text_embeds = torch.nn.functional.normalize(texts.pooler_output, dim=-1)
    query = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    base = model.vision_text_model

    def score(top_k: int):
        def run():
            with torch.inference_mode():
                image = base.encode_images(query)
                scores = base.similarity(torch.nn.functional.normalize(image.pooler_output, dim=-1), text_embeds)
                model.rerank(scores, image.last_hidden_state, texts.last_hidden_state, mask.bool(), top_k=top_k)

        return run

    variants = {"ITC": score(0), **{f"ITC + ITM@{k}": score(k) for k in args.top_k}}
    for run in variants.values():
        run()
    rounds = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            rounds[name].append(median_ms(run, args.iterations))
    itc = statistics.median(rounds["ITC"])
    return [
        {"method": name, "ms_per_query": round(statistics.median(times), 2),
         "vs_itc": round(statistics.median(times) / itc, 2)}
        for name, times in rounds.items()
    ]  # fmt: skip


def itm_throughput(args) -> list[dict]:
    ours, blip = our_model(args.fusion_layers), blip_model(args.fusion_layers)
    pairs = args.pairs
    image_tokens = torch.randn(pairs, (IMAGE_SIZE // PATCH) ** 2 + 1, WIDTH)
    input_ids = torch.randint(1, 1000, (pairs, 12))
    mask = torch.ones_like(input_ids)
    text_tokens = torch.randn(pairs, 12, WIDTH)
    image_mask = torch.ones(image_tokens.shape[:2], dtype=torch.long)

    def ours_run(implementation):
        def run():
            ours.set_attn_implementation(implementation)
            with torch.inference_mode():
                ours.vision_text_model.match(image_tokens, text_tokens, mask)

        return run

    def blip_run():
        with torch.inference_mode():
            fused = blip.text_encoder(
                input_ids=input_ids, attention_mask=mask, encoder_hidden_states=image_tokens,
                encoder_attention_mask=image_mask,
            ).last_hidden_state  # fmt: skip
            blip.itm_head(fused[:, 0])

    variants = {"BlipForImageTextRetrieval (eager)": blip_run, "ours (eager)": ours_run("eager"),
                "ours (sdpa)": ours_run("sdpa")}  # fmt: skip
    for run in variants.values():
        run()
    rounds = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            rounds[name].append(pairs * 1000 / median_ms(run, args.iterations))
    theirs = rounds["BlipForImageTextRetrieval (eager)"]
    fusion_parameters = sum(p.numel() for p in ours.vision_text_model.fusion.parameters())
    blip_parameters = sum(p.numel() for p in blip.text_encoder.parameters()) + blip.itm_head.weight.numel() + 2
    results = []
    for name, values in rounds.items():
        ratios = [value / reference for value, reference in zip(values, theirs, strict=True)]
        results.append(
            {"model": name, "itm_pairs_per_s": round(statistics.median(values), 1),
             "vs_blip": round(statistics.median(ratios), 3)}
        )  # fmt: skip
    results.append(
        {"fusion_parameters": {"ours": fusion_parameters, "blip_text_encoder_and_itm_head": blip_parameters}}
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gallery", type=int, default=1024, help="cached texts each query is scored against")
    parser.add_argument("--top-k", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--fusion-layers", type=int, default=4, help="fusion layers = BLIP text encoder layers")
    parser.add_argument("--pairs", type=int, default=64, help="pairs per ITM batch")
    parser.add_argument("--iterations", type=int, default=5, help="calls per timed round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/image_text_cpu.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    report = {
        "benchmark": "image-text retrieval: ITC vs ITC + ITM re-ranking per query; ITM pairs/s vs BLIP's fusion",
        "setup": {
            "width": WIDTH,
            "heads": HEADS,
            "mlp": MLP,
            "image_tokens": (IMAGE_SIZE // PATCH) ** 2 + 1,
            "text_tokens": 12,
            "gallery": args.gallery,
            "fusion_layers": args.fusion_layers,
            "pairs": args.pairs,
            "iterations_per_round": args.iterations,
            "rounds": args.rounds,
            "device": "cpu",
            **environment(),
        },  # fmt: skip
        "rerank_per_query": rerank_per_query(args),
        "itm_throughput": itm_throughput(args),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
