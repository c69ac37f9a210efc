"""The full models export to ONNX with a dynamic batch, and onnxruntime gives PyTorch's outputs at other batch sizes.

Both exporters: the legacy TorchScript-based one (`dynamo=False`) and the `torch.export`-based one (`dynamo=True`),
each on the default `sdpa` backend. Skipped where onnx / onnxruntime (or onnxscript, for dynamo) do not import.
"""

import pytest
import torch

from hf_attention import (
    VideoTransformerConfig,
    VideoTransformerForVideoClassification,
    VisionTextCrossAttentionConfig,
    VisionTextCrossAttentionModel,
    VisionTransformerConfig,
    VisionTransformerForImageClassification,
)

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

EXPORT_BATCH, RUN_BATCHES = 2, (1, 3)

# (model, the output fields compared)
MODELS = {
    "vit": (lambda: VisionTransformerForImageClassification(VisionTransformerConfig.tiny()), ["logits"]),
    "video": (lambda: VideoTransformerForVideoClassification(VideoTransformerConfig.tiny()), ["logits"]),
    "image_text": (
        lambda: VisionTextCrossAttentionModel(VisionTextCrossAttentionConfig.tiny()),
        ["logits_per_image", "image_embeds", "text_embeds", "itm_logits"],
    ),
}


class OutputTensors(torch.nn.Module):
    """The model with positional tensor inputs (in `dummy_inputs`' order) and a tuple of the compared outputs."""

    def __init__(self, model: torch.nn.Module, input_names: list[str], output_names: list[str]):
        super().__init__()
        self.model, self.input_names, self.output_names = model, input_names, output_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(**dict(zip(self.input_names, inputs, strict=True)))
        return tuple(outputs[name] for name in self.output_names)


def batch_of(model, batch_size: int) -> dict[str, torch.Tensor]:
    """The model's `dummy_inputs` (a padded text among them), repeated or cut to `batch_size` rows."""
    return {name: tensor.repeat_interleave(2, dim=0)[:batch_size] for name, tensor in model.dummy_inputs.items()}


def export_and_compare(name: str, path, dynamo: bool) -> dict[int, float]:
    """Export at EXPORT_BATCH, run onnxruntime at every batch of RUN_BATCHES: {batch: largest |difference|}."""
    build, output_names = MODELS[name]
    model = build().eval()
    assert model.config._attn_implementation == "sdpa"
    inputs = batch_of(model, EXPORT_BATCH)
    wrapper = OutputTensors(model, list(inputs), output_names)
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=64)
        dynamic = {"dynamic_shapes": (tuple({0: batch} for _ in inputs),)}  # one entry: the tuple of *inputs
    else:
        dynamic = {"dynamic_axes": {name: {0: "batch"} for name in [*inputs, *output_names]}}
    torch.onnx.export(
        wrapper, tuple(inputs.values()), str(path), dynamo=dynamo, input_names=list(inputs),
        output_names=output_names, **dynamic,
    )  # fmt: skip
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    largest = {}
    for batch_size in RUN_BATCHES:
        inputs = batch_of(model, batch_size)
        got = session.run(output_names, {key: value.numpy() for key, value in inputs.items()})
        with torch.no_grad():
            expected = wrapper(*inputs.values())
        for output_name, array, reference in zip(output_names, got, expected, strict=True):
            assert array.shape == tuple(reference.shape), (name, output_name, batch_size)
            difference = float((torch.from_numpy(array) - reference).abs().max())
            largest[batch_size] = max(largest.get(batch_size, 0.0), difference)
    return largest


# the text pooling's index is an argmax, never negative, which is all the aten::index warning is about
@pytest.mark.filterwarnings(
    "ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning", "ignore:Exporting aten.+index operator:UserWarning"
)
@pytest.mark.parametrize("name", list(MODELS))
def test_legacy_export_with_a_dynamic_batch_runs_at_other_batch_sizes(name, tmp_path):
    largest = export_and_compare(name, tmp_path / f"{name}.onnx", dynamo=False)
    assert sorted(largest) == sorted(RUN_BATCHES) and max(largest.values()) < 1e-4, largest


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_dynamo_export_with_a_dynamic_batch_runs_at_other_batch_sizes(name, tmp_path):
    pytest.importorskip("onnxscript")
    largest = export_and_compare(name, tmp_path / f"{name}.onnx", dynamo=True)
    assert sorted(largest) == sorted(RUN_BATCHES) and max(largest.values()) < 1e-4, largest
