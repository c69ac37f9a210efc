"""The checks only a GPU can run, as one prepared script (under 5 minutes on one GPU); on a CPU it runs the parts
that need none (backend equality in float32 and bfloat16, torch.compile) and records the GPU parts as skipped.

1. SDPA's flash and memory-efficient kernels really selected: the ViT runs under `torch.nn.attention.sdpa_kernel`
   with only that backend allowed (torch raises "No available kernel" when it cannot use it);
2. `flash_attention_2`, if the `flash-attn` package imports, against eager;
3. float16 / bfloat16 equality of every attention backend against eager on the ViT and every other registered
   family whose model supports sdpa (REGISTRY, tiny configs, `dummy_inputs`; flex with one head per layer, as its
   CUDA kernel needs heads at least 16 wide);
4. `torch.compile` of the ViT against eager mode;
5. ViT-S/16 throughput against transformers' (same weights, interleaved rounds, medians);
6. FSDP2 through accelerate: `accelerate launch --use_fsdp` starts one process per GPU running this file's
   `--fsdp-worker`, which trains a tiny ViT two steps under `Accelerator(fsdp_plugin=...(fsdp_version=2))` with every
   rank calling `save_pretrained`; the saved weights must equal one process's training on the whole batch. On a CPU
   it runs two processes and records what accelerate chose instead (it keeps DDP: FSDP needs an accelerator device).
   `--only fsdp` runs this case alone.

    python benchmarks/gpu_check.py                           # -> benchmarks/results/gpu.json (cpu.json on a CPU)
    python benchmarks/attention_cnn_table.py --epochs 2 --jobs 1    # a separate run, if time is left

Where the GPU machine's transformers is older than this package needs (5.23), carry transformers 5.25.0 and what it
needs (huggingface_hub 2.4, kernels, httpx2, httpcore2, hf-xet, regex, click, tomlkit, truststore, idna, anyio) as
wheels, install them with `pip install --no-index --no-deps --target /tmp/site`, and run with
`PYTHONPATH=/tmp/site:$PWD`: that is how `benchmarks/results/gpu.json` was measured, on the machine's own torch 2.11.

The attention-CNN table on the full Fashion-MNIST training set (three seeds, mean and spread) is a separate run
because it takes longer than this script's 5 minutes; on 2 CPU cores, its defaults (one epoch) took 45 minutes.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import transformers
from transformers import PreTrainedConfig

from hf_attention import REGISTRY, from_transformers
from hf_attention.configuration_vit import VisionTransformerConfig
from hf_attention.modeling_vit import VisionTransformerForImageClassification

TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 6e-2}


def first_tensor(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else next(v for v in output.values() if torch.is_tensor(v))


def tiny_vit(device, dtype) -> VisionTransformerForImageClassification:
    torch.manual_seed(0)
    config = VisionTransformerConfig(
        image_size=32, patch_size=4, num_channels=3, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=256, num_labels=10,
    )  # fmt: skip  # head_dim 64: every flash kernel accepts it
    return VisionTransformerForImageClassification(config).eval().to(device, dtype)


@torch.no_grad()
def sdpa_kernels_selected(device) -> dict:
    """Each SDPA backend alone: the forward must run (so the kernel was selected) and agree with eager."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = tiny_vit(device, torch.float16)
    pixels = torch.randn(4, 3, 32, 32, device=device, dtype=torch.float16)
    model.set_attn_implementation("eager")
    reference = model(pixel_values=pixels).logits
    model.set_attn_implementation("sdpa")
    results = {}
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
        with sdpa_kernel([backend]):
            logits = model(pixel_values=pixels).logits
        results[backend.name] = {"selected": True, "max_abs_difference": float((logits - reference).abs().max())}
    return results


@torch.no_grad()
def flash_attention_2(device) -> dict:
    try:
        import flash_attn  # noqa: F401
    except Exception as error:
        return {"skipped": f"flash-attn does not import: {error}"}
    model = tiny_vit(device, torch.bfloat16)
    pixels = torch.randn(4, 3, 32, 32, device=device, dtype=torch.bfloat16)
    model.set_attn_implementation("eager")
    reference = model(pixel_values=pixels).logits
    model.set_attn_implementation("flash_attention_2")
    return {"max_abs_difference": float((model(pixel_values=pixels).logits - reference).abs().max())}


def one_head_per_layer(config):
    """The config, and the configs nested in it, with one attention head wherever they name a head count: flex's
    CUDA kernel needs head_dim >= 16, which the tiny configs' 8-wide heads are not."""
    for name, value in vars(config).items():
        if "num_" in name and name.endswith("heads") and isinstance(value, int):  # num_fusion_heads too
            setattr(config, name, 1)
        elif isinstance(value, PreTrainedConfig):
            one_head_per_layer(value)
    return config


def difference_from_eager(base_model, config, device, dtype, implementation) -> tuple[float, bool]:
    torch.manual_seed(0)
    model = base_model(config).eval().to(device, dtype)
    inputs = {
        name: value.to(device, dtype) if value.is_floating_point() else value.to(device)
        for name, value in model.dummy_inputs.items()
    }
    model.set_attn_implementation("eager")
    reference = first_tensor(model(**inputs)).float()
    model.set_attn_implementation(implementation)
    difference = float((first_tensor(model(**inputs)).float() - reference).abs().max())
    return difference, difference <= TOLERANCE[dtype] * max(1.0, reference.abs().max().item())


@torch.no_grad()
def backend_equality(device, dtypes) -> list[dict]:
    """Every registered family that supports sdpa: sdpa (and flex on a GPU, with one head per layer) against eager,
    in each dtype."""
    torch._dynamo.config.recompile_limit = 64  # flex compiles once per family, shape and dtype
    rows = []
    for config_class, base_model, _heads in REGISTRY:
        if not getattr(base_model, "_supports_sdpa", False):
            continue
        implementations = {"sdpa": config_class.tiny}
        if device.type == "cuda" and getattr(base_model, "_supports_flex_attn", False):
            implementations["flex_attention"] = lambda config_class=config_class: one_head_per_layer(
                config_class.tiny()
            )
        for dtype in dtypes:
            row = {"family": base_model.__name__, "dtype": str(dtype).removeprefix("torch.")}
            for implementation, build_config in implementations.items():
                try:  # one failure must not hide the other results
                    difference, ok = difference_from_eager(base_model, build_config(), device, dtype, implementation)
                    row[implementation], row[f"{implementation}_ok"] = difference, ok
                except Exception as error:
                    row[f"{implementation}_error"] = f"{type(error).__name__}: {str(error)[:300]}"
            rows.append(row)
    return rows


@torch.no_grad()
def compiled_vit(device, dtype) -> dict:
    model = tiny_vit(device, dtype)
    pixels = torch.randn(4, 3, 32, 32, device=device, dtype=dtype)
    eager = model(pixel_values=pixels).logits
    start = time.perf_counter()
    compiled = torch.compile(model, fullgraph=True)(pixel_values=pixels).logits
    return {
        "max_abs_difference": float((compiled - eager).abs().max()),
        "compile_and_first_call_s": round(time.perf_counter() - start, 1),
    }


def vit_s_pair(device, dtype) -> dict[str, torch.nn.Module]:
    """transformers' ViT-S/16 (random weights) and ours with the same weights, both on sdpa, in inference."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536)
    config._attn_implementation = "sdpa"
    reference = ViTForImageClassification(config).eval()
    ours = from_transformers(reference).eval()
    ours.set_attn_implementation("sdpa")
    return {"transformers": reference.to(device, dtype), "hf_attention": ours.to(device, dtype)}


@torch.no_grad()
def vit_throughput(device, dtype, batch_size: int = 64, rounds: int = 7, iterations: int = 10) -> dict:
    models = vit_s_pair(device, dtype)
    pixels = torch.randn(batch_size, 3, 224, 224, device=device, dtype=dtype)

    def rate(model) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iterations):
            model(pixel_values=pixels)
        torch.cuda.synchronize()
        return iterations * batch_size / (time.perf_counter() - start)

    for model in models.values():
        rate(model)
    per_round = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            per_round[name].append(rate(model))
    ratios = [o / t for o, t in zip(per_round["hf_attention"], per_round["transformers"], strict=True)]
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "batch_size": batch_size,
        **{f"{name}_images_per_s": round(statistics.median(values), 1) for name, values in per_round.items()},
        "ratio": round(statistics.median(ratios), 3),
    }


FSDP_STEPS, FSDP_LEARNING_RATE, FSDP_ROWS_PER_PROCESS = 2, 0.5, 2


def fsdp_vit(device) -> VisionTransformerForImageClassification:
    torch.manual_seed(0)
    return VisionTransformerForImageClassification(VisionTransformerConfig.tiny()).to(device)


def fsdp_batch(processes: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    config = VisionTransformerConfig.tiny()
    generator = torch.Generator().manual_seed(1)
    size = (FSDP_ROWS_PER_PROCESS * processes, config.num_channels, config.image_size, config.image_size)
    labels = torch.arange(size[0]) % config.num_labels
    return torch.randn(size, generator=generator).to(device), labels.to(device)


def fsdp_train(model, optimizer, pixels, labels, backward=torch.Tensor.backward) -> None:
    for _ in range(FSDP_STEPS):
        backward(model(pixel_values=pixels, labels=labels).loss)
        optimizer.step()
        optimizer.zero_grad()


def fsdp_worker(folder: str) -> None:
    """One rank of the FSDP case (started by `accelerate launch`): accelerate's FSDP2 on this rank's rows, then
    every rank calls `save_pretrained`, which gathers the DTensor shards (a collective) and writes on rank 0 only."""
    from accelerate import Accelerator
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="transformer_based_wrap", state_dict_type="FULL_STATE_DICT"
    )
    accelerator = Accelerator(fsdp_plugin=plugin, cpu=not torch.cuda.is_available())
    model = fsdp_vit(accelerator.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=FSDP_LEARNING_RATE)
    model, optimizer = accelerator.prepare(model, optimizer)
    pixels, labels = fsdp_batch(accelerator.num_processes, accelerator.device)
    first = FSDP_ROWS_PER_PROCESS * accelerator.process_index
    rows = slice(first, first + FSDP_ROWS_PER_PROCESS)
    fsdp_train(model, optimizer, pixels[rows], labels[rows], backward=accelerator.backward)
    parameter_type = type(next(model.parameters())).__name__
    accelerator.unwrap_model(model).save_pretrained(Path(folder) / "model")
    if accelerator.is_main_process:
        report = {"distributed_type": accelerator.distributed_type.name, "parameter_type": parameter_type}
        (Path(folder) / "worker.json").write_text(json.dumps(report))
    accelerator.end_training()


def fsdp_through_accelerate(device) -> dict:
    processes = torch.cuda.device_count() if device.type == "cuda" else 2
    root = Path(__file__).resolve().parents[1]
    python_path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": python_path}
    with tempfile.TemporaryDirectory() as folder:
        # accelerate's launcher (torchrun underneath, even for one process, because of --use_fsdp)
        command = [sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp", "--fsdp_version", "2",
                   "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
                   "--dynamo_backend", "no", str(Path(__file__).resolve()), "--fsdp-worker", folder]  # fmt: skip
        finished = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
        if finished.returncode:
            return {"processes": processes, "error": finished.stderr[-3000:]}
        worker = json.loads((Path(folder) / "worker.json").read_text())
        loaded = VisionTransformerForImageClassification.from_pretrained(Path(folder) / "model").to(device)
    reference = fsdp_vit(device)
    optimizer = torch.optim.SGD(reference.parameters(), lr=FSDP_LEARNING_RATE)
    fsdp_train(reference, optimizer, *fsdp_batch(processes, device))  # one process, the whole batch
    expected = reference.state_dict()
    difference = max(float((tensor - expected[name]).abs().max()) for name, tensor in loaded.state_dict().items())
    return {
        "processes": processes,
        **worker,
        "max_abs_weight_difference": difference,
        # 1e-3: cuDNN's TF32 convolution (the patch embedding) on a GPU, summed in another order across ranks
        "ok": worker["distributed_type"] == "FSDP" and worker["parameter_type"] == "DTensor" and difference <= 1e-3,
    }


def run(name: str, function, *args) -> dict | list:
    start = time.perf_counter()
    try:
        result = function(*args)
    except Exception as error:
        result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc(limit=3)}
    print(f"{name}: {time.perf_counter() - start:.1f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="default: benchmarks/results/gpu.json on a GPU, /tmp/gpu_check_cpu.json on a CPU")
    parser.add_argument("--only", choices=["fsdp"], help="run one case alone")
    parser.add_argument("--fsdp-worker", metavar="FOLDER", help=argparse.SUPPRESS)  # one rank of the FSDP case
    args = parser.parse_args()
    if args.fsdp_worker:
        return fsdp_worker(args.fsdp_worker)
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    report = {
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if args.only == "fsdp":
        report["fsdp"] = run("fsdp", fsdp_through_accelerate, device)
    elif on_gpu:
        report["sdpa_kernels"] = run("sdpa kernels", sdpa_kernels_selected, device)
        report["flash_attention_2"] = run("flash_attention_2", flash_attention_2, device)
        report["backend_equality"] = run("backends", backend_equality, device, (torch.float16, torch.bfloat16))
        report["compile"] = run("compile", compiled_vit, device, torch.float16)
        dtypes = (torch.float16, torch.bfloat16)
        report["vit_throughput"] = [run("throughput", vit_throughput, device, dtype) for dtype in dtypes]
        report["fsdp"] = run("fsdp", fsdp_through_accelerate, device)
    else:
        report["skipped"] = "no GPU: sdpa kernels, flash_attention_2, throughput need one"
        report["backend_equality"] = run("backends", backend_equality, device, (torch.float32, torch.bfloat16))
        report["compile"] = run("compile", compiled_vit, device, torch.float32)
        report["fsdp"] = run("fsdp", fsdp_through_accelerate, device)  # records accelerate's fallback to DDP
    out = Path(args.out or ("benchmarks/results/gpu.json" if on_gpu else "/tmp/gpu_check_cpu.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2)[:4000])


if __name__ == "__main__":
    main()
