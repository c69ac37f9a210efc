"""Two real CPU processes (gloo): every rank calls `save_pretrained`, and FSDP2's `fully_shard` trains and saves.

DeepSpeed, FSDP and hand-written loops call `save_pretrained` on every rank. As in transformers, rank 0 writes and the
others return; weights sharded by `fully_shard` are gathered first (every rank takes part). One spawn of two
processes runs both scenarios (each process start imports torch and transformers: seconds), then the tests check the
folders they left.

FSDP through accelerate or Trainer does not happen on CPUs: accelerate 1.16 switches to `DistributedType.FSDP` only
for accelerator devices (MULTI_GPU, MULTI_XPU, ...), so on MULTI_CPU it keeps DDP and drops the `fsdp_plugin`
without a word (Trainer with `fsdp=True` then reports `is_fsdp_enabled == False` and wraps the model in
DistributedDataParallel). FSDP2's `fully_shard` itself runs on CPU with gloo, which is what is tested here;
`benchmarks/gpu_check.py` runs the accelerate route on a GPU.
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing

from hf_attention import VisionTransformerConfig, VisionTransformerForImageClassification

pytestmark = pytest.mark.slow  # two processes: `pytest -m "not slow"` skips them

WORLD_SIZE = 2
STEPS, LEARNING_RATE = 2, 0.5


def tiny_vit(seed: int = 0) -> VisionTransformerForImageClassification:
    torch.manual_seed(seed)
    return VisionTransformerForImageClassification(VisionTransformerConfig.tiny()).eval()  # no dropout either way


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Four images and labels; rank r trains on rows 2r and 2r+1."""
    generator = torch.Generator().manual_seed(1)
    config = VisionTransformerConfig.tiny()
    pixels = torch.randn(2 * WORLD_SIZE, config.num_channels, config.image_size, config.image_size, generator=generator)
    return pixels, torch.arange(2 * WORLD_SIZE) % config.num_labels


def train(model, pixels, labels) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    for _ in range(STEPS):
        model(pixel_values=pixels, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def save_on_every_rank(rank: int, folder) -> None:
    """Each rank holds other weights (rank 0's are `tiny_vit()`'s) and saves three times into the same folder."""
    model = tiny_vit()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(rank)
    for _ in range(3):
        model.save_pretrained(folder)


def fsdp2_train_and_save(rank: int, folder) -> None:
    from torch.distributed.fsdp import fully_shard

    model = tiny_vit()
    for layer in model.vit.layers:
        fully_shard(layer)
    fully_shard(model)
    assert type(next(model.parameters())).__name__ == "DTensor"
    pixels, labels = batch()
    rows = slice(2 * rank, 2 * rank + 2)
    train(model, pixels[rows], labels[rows])
    model.save_pretrained(folder)  # no state_dict given: the shards are gathered


def worker(rank: int, init_file: str, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        save_on_every_rank(rank, os.path.join(folder, "every-rank"))
        dist.barrier()
        fsdp2_train_and_save(rank, os.path.join(folder, "fsdp2"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    init_file = folder / "init"
    torch.multiprocessing.start_processes(
        worker, args=(str(init_file), str(folder)), nprocs=WORLD_SIZE, join=True, start_method="spawn"
    )
    return folder


def assert_same_weights(loaded, expected) -> None:
    loaded_state = loaded.state_dict()
    assert loaded_state.keys() == expected.state_dict().keys()
    for name, tensor in expected.state_dict().items():
        torch.testing.assert_close(loaded_state[name], tensor, atol=1e-6, rtol=1e-5, msg=name)


def test_every_rank_calling_save_pretrained_leaves_one_model_written_by_rank_0(saved):
    assert not list(saved.glob(".*saving-*")), "a staging folder was left behind"
    assert_same_weights(VisionTransformerForImageClassification.from_pretrained(saved / "every-rank"), tiny_vit())


def test_fully_shard_on_two_cpu_processes_trains_like_one_process_and_saves_the_gathered_model(saved):
    reference = tiny_vit()
    train(reference, *batch())  # one process, the whole batch: FSDP2 averages the two halves' gradients
    assert_same_weights(VisionTransformerForImageClassification.from_pretrained(saved / "fsdp2"), reference)
