"""Glimpse extraction for a batch: our vectorised `GlimpseSensor` against the per-sample loop of the popular
reimplementations (kevinzakka/recurrent-visual-attention: pad, slice one crop per sample and scale in Python, then
average-pool each scale down to g x g), side by side in one process, on the same images and locations.

The two read the same pixels when the locations fall on the pooling grid (checked below before timing); the loop
rounds other locations to whole pixels, the sensor interpolates. Rounds alternate the two implementations; the
table reports the median ms per call and the ratio. The machine is shared with other jobs, so absolute times are
noisy; the ratio, measured round by round, is what to read.

    python benchmarks/bench_glimpse.py                   # batch 128, 60x60, 12x12 x 3 scales; 28x28 8x8 x 1
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _environment import environment

from hf_attention import GlimpseSensor

RESULTS = Path(__file__).parent / "results" / "glimpse_sensor_cpu.json"


def loop_glimpses(images: torch.Tensor, locations: torch.Tensor, patch_size: int, num_scales: int) -> torch.Tensor:
    """The reimplementations' retina: per sample and scale, a crop of the zero-padded image, then average pooling."""
    batch_size, _, height, width = images.shape
    scales = []
    for scale in range(num_scales):
        size = patch_size * 2**scale
        padded = F.pad(images, (size // 2, size // 2, size // 2, size // 2))
        # top-left corner in the padded image = the centre in whole pixels (x, y); the reimplementation truncates
        # with .long(), which float rounding can push one pixel off, so this rounds
        corners = (0.5 * (locations + 1) * torch.tensor([width, height])).round().long()
        crops = [padded[i, :, corners[i, 1] : corners[i, 1] + size, corners[i, 0] : corners[i, 0] + size]
                 for i in range(batch_size)]  # fmt: skip
        crops = torch.stack(crops)
        scales.append(F.avg_pool2d(crops, 2**scale) if scale else crops)
    return torch.stack(scales, dim=1)


def aligned_locations(batch_size: int, height: int, width: int, block: int, generator) -> torch.Tensor:
    """Random centres on multiples of `block` pixels, as (x, y) in [-1, 1]: where both retinas read the same."""
    columns = torch.randint(0, width // block + 1, (batch_size,), generator=generator) * block
    rows = torch.randint(0, height // block + 1, (batch_size,), generator=generator) * block
    return torch.stack([2 * columns / width - 1, 2 * rows / height - 1], dim=1)


def timed_ms(function, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats * 1000


def measure(batch_size, channels, size, patch_size, num_scales, rounds, repeats) -> dict:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, channels, size, size, generator=generator)
    locations = aligned_locations(batch_size, size, size, 2 ** (num_scales - 1), generator)
    sensor = GlimpseSensor(patch_size, num_scales)
    ours, reference = sensor(images, locations), loop_glimpses(images, locations, patch_size, num_scales)
    max_difference = float((ours - reference).abs().max())
    assert max_difference < 1e-5, f"the two retinas disagree by {max_difference}"
    times = {"vectorised": [], "per_sample_loop": []}
    with torch.no_grad():
        for _ in range(rounds):
            times["vectorised"].append(timed_ms(lambda: sensor(images, locations), repeats))
            times["per_sample_loop"].append(
                timed_ms(lambda: loop_glimpses(images, locations, patch_size, num_scales), repeats)
            )
    ratios = [loop / vectorised for loop, vectorised in zip(times["per_sample_loop"], times["vectorised"], strict=True)]
    return {
        "setting": f"batch {batch_size}, {channels}x{size}x{size}, {num_scales} x {patch_size}x{patch_size}",
        "vectorised_ms": statistics.median(times["vectorised"]),
        "per_sample_loop_ms": statistics.median(times["per_sample_loop"]),
        "speedup": statistics.median(ratios),
        "max_abs_difference": max_difference,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    rows = [
        measure(options.batch_size, 1, 60, 12, 3, options.rounds, options.repeats),
        measure(options.batch_size, 1, 28, 8, 1, options.rounds, options.repeats),
    ]
    for row in rows:
        print(f"{row['setting']}: vectorised {row['vectorised_ms']:.2f} ms, loop {row['per_sample_loop_ms']:.2f} ms, "
              f"{row['speedup']:.1f}x")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "rows": rows,
        "rounds": options.rounds,
        "repeats": options.repeats,
        **environment(options.threads),
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
