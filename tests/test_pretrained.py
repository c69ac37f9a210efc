"""The shared base class: atomic saves that carry their code, label checks, refused keywords."""

import json
import logging
import os
import re
from pathlib import Path

import pytest
import torch
import transformers.modeling_utils
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel

from hf_attention import (
    CLIPResidualTransformerConfig,
    CLIPResidualTransformerModel,
    VisionTransformerConfig,
    VisionTransformerForImageClassification,
)
from hf_attention.pretrained import classification_loss


def tiny(seed: int = 0):
    torch.manual_seed(seed)
    return VisionTransformerForImageClassification(VisionTransformerConfig.tiny()).eval()


def test_a_save_that_fails_half_way_leaves_the_previous_checkpoint_loadable_and_unchanged(tmp_path, monkeypatch):
    tiny(0).save_pretrained(tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}

    def disk_full(state_dict, filename, *args, **kwargs):
        with open(filename, "wb") as handle:  # half a file, then the disk is full
            handle.write(b"\x00" * 64)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        tiny(1).save_pretrained(tmp_path)
    monkeypatch.undo()
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    assert not [path for path in tmp_path.parent.iterdir() if ".saving-" in path.name]  # no staging folder left
    loaded = VisionTransformerForImageClassification.from_pretrained(tmp_path)
    for name, tensor in tiny(0).state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, atol=0, rtol=0)


def test_a_move_into_place_that_fails_half_way_puts_the_previous_files_back(tmp_path, monkeypatch):
    tiny(0).save_pretrained(tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    real_replace, failed = os.replace, []

    def fails_once_after_the_weights(source, destination):  # names move in sorted order: config, weights, this
        if Path(destination) == tmp_path / "modeling_vit.py" and not failed:
            failed.append(destination)
            raise PermissionError(13, "Permission denied", str(destination))
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", fails_once_after_the_weights)
    with pytest.raises(PermissionError):
        tiny(1).save_pretrained(tmp_path)
    monkeypatch.undo()
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    assert not [path for path in tmp_path.parent.iterdir() if ".saving-" in path.name]


def test_saving_over_a_file_raises_and_a_new_save_replaces_stale_shards(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="it is a file"):
        tiny().save_pretrained(tmp_path / "file")
    folder = tmp_path / "model"
    tiny().save_pretrained(folder, max_shard_size="20KB")
    assert len(list(folder.glob("model-*.safetensors"))) > 1
    tiny().save_pretrained(folder)
    weights = sorted(path.name for path in folder.iterdir() if path.name.startswith(("model.safetensors", "model-")))
    assert weights == ["model.safetensors"]
    VisionTransformerForImageClassification.from_pretrained(folder)


def test_every_saved_folder_names_its_code_in_auto_map(tmp_path):
    tiny().save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_vit.VisionTransformerConfig",
        "AutoModel": "modeling_vit.VisionTransformerModel",
        "AutoModelForImageClassification": "modeling_vit.VisionTransformerForImageClassification",
    }
    for module in ("modeling_vit", "configuration_vit", "configuration_base", "checks", "attention", "pretrained"):
        assert (tmp_path / f"{module}.py").is_file(), module


def test_the_loss_matches_cross_entropy_and_honours_num_items_in_batch():
    config = VisionTransformerConfig.tiny()
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, -100, 1])
    expected = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100)
    torch.testing.assert_close(classification_loss(labels, logits, config), expected)
    summed = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    torch.testing.assert_close(classification_loss(labels, logits, config, num_items_in_batch=6), summed / 6)
    regression = VisionTransformerConfig.tiny(num_labels=1)
    values = torch.randn(4)
    torch.testing.assert_close(
        classification_loss(values, logits[:, :1], regression), torch.nn.functional.mse_loss(logits[:, 0], values)
    )
    with pytest.raises(ValueError, match="regression takes float labels"):
        classification_loss(torch.tensor([1, 0, 1, 0]), logits[:, :1], regression)
    with pytest.raises(ValueError, match="targets in \\[0, 1\\]"):
        classification_loss(torch.full((4, 3), 2.0), logits, config)


@pytest.mark.parametrize("truncate", [True, False])
def test_corrupt_or_truncated_checkpoint_names_the_problem(tmp_path, truncate):
    tiny().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if truncate else b"not a safetensors file at all")
    with pytest.raises(OSError, match="corrupt or truncated"):
        VisionTransformerForImageClassification.from_pretrained(tmp_path)


@pytest.mark.parametrize("path", ["{tmp}/no-such-model", "./no-such-model", "{tmp}/a/b/c", "~/no-such-model"])
def test_a_local_path_that_does_not_exist_is_named_as_a_missing_folder(tmp_path, path):
    path = path.format(tmp=tmp_path)
    for name_or_path in (path, Path(path)):
        with pytest.raises(FileNotFoundError, match=rf"No such folder: '{re.escape(str(name_or_path))}'"):
            VisionTransformerForImageClassification.from_pretrained(name_or_path)


def test_weights_holding_nan_load_with_a_warning_that_names_them(tmp_path, caplog):
    tiny().save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING):
        VisionTransformerForImageClassification.from_pretrained(tmp_path)
    assert "NaN" not in caplog.text
    weights = load_file(tmp_path / "model.safetensors")
    weights["classifier.weight"][0, 0] = float("nan")
    weights["vit.layers.0.attention.q_proj.bias"][1] = float("inf")
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        loaded = VisionTransformerForImageClassification.from_pretrained(tmp_path)
    assert "hold NaN or infinite values in 2 tensor(s)" in caplog.text
    assert "classifier.weight" in caplog.text and "vit.layers.0.attention.q_proj.bias" in caplog.text
    assert torch.isnan(loaded.classifier.weight[0, 0])  # loaded as saved: a warning, not a refusal


def test_is_main_process_false_writes_nothing(tmp_path):
    tiny(0).save_pretrained(tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    tiny(1).save_pretrained(tmp_path, is_main_process=False)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    assert not [path for path in tmp_path.parent.iterdir() if ".saving-" in path.name]


def test_missing_checkpoint_is_reported(tmp_path):
    tiny().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(OSError, match="model.safetensors"):
        VisionTransformerForImageClassification.from_pretrained(tmp_path)


# --- checkpoints of earlier releases ----------------------------------------------------------------------------


def fused_projections(state_dict: dict, attention: str) -> dict:
    """The layout before the plain layers: each `<attention>.q_proj/k_proj/v_proj` stored as one `qkv_proj`."""
    old = {}
    for name, tensor in state_dict.items():
        prefix, projection, kind = name.rsplit(".", 2) if name.count(".") >= 2 else ("", "", name)
        if prefix.endswith(attention) and projection in ("q_proj", "k_proj", "v_proj"):
            if projection == "q_proj":
                parts = [state_dict[f"{prefix}.{which}.{kind}"] for which in ("q_proj", "k_proj", "v_proj")]
                old[f"{prefix}.qkv_proj.{kind}"] = torch.cat(parts)
            continue
        old[name] = tensor
    return old


# our CLIP block's names -> OpenAI's, which the earlier releases used
OPENAI_CLIP_NAMES = [("layers.", "resblocks."), (".layer_norm1.", ".ln_1."), (".layer_norm2.", ".ln_2."),
                     (".self_attn.", ".attn."), (".mlp.fc1.", ".mlp.c_fc."), (".mlp.fc2.", ".mlp.c_proj.")]  # fmt: skip


def write_old_checkpoint(model, state_dict: dict, folder) -> None:
    folder.mkdir()
    model.config.save_pretrained(folder)
    save_file({name: tensor.contiguous() for name, tensor in state_dict.items()}, folder / "model.safetensors")


@torch.no_grad()
def test_checkpoints_of_the_fused_qkv_and_openai_clip_layouts_load_and_give_the_same_outputs(tmp_path):
    vit = tiny(0)
    vit_state = fused_projections(vit.state_dict(), "attention")
    assert "vit.layers.0.attention.qkv_proj.weight" in vit_state
    clip = CLIPResidualTransformerModel(CLIPResidualTransformerConfig.tiny(is_causal=True)).eval()
    clip_state = {}
    for name, tensor in fused_projections(clip.state_dict(), "self_attn").items():
        for new, old in OPENAI_CLIP_NAMES:
            name = name.replace(new, old)
        clip_state[name] = tensor
    assert "resblocks.0.attn.qkv_proj.weight" in clip_state and "resblocks.0.mlp.c_fc.weight" in clip_state
    for model, state_dict in ((vit, vit_state), (clip, clip_state)):
        folder = tmp_path / type(model).__name__
        write_old_checkpoint(model, state_dict, folder)
        loaded, info = type(model).from_pretrained(folder, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"]
        inputs = model.dummy_inputs
        torch.testing.assert_close(loaded.eval()(**inputs).to_tuple(), model(**inputs).to_tuple(), atol=0, rtol=0)
        loaded.save_pretrained(tmp_path / "resaved")  # a loaded old checkpoint is saved in the current layout
        assert set(safe_open(tmp_path / "resaved" / "model.safetensors", "pt").keys()) == set(model.state_dict())


class OldLayoutConfig(PreTrainedConfig):
    """A config of our ViT's model type from other code, as `trust_remote_code` loads an old folder's."""

    model_type = VisionTransformerConfig.model_type


class OldLayoutModel(PreTrainedModel):
    """Code of our model type that still holds one fused `qkv_proj`, as an earlier release's saved folder ships."""

    config_class = OldLayoutConfig

    def __init__(self, config):
        super().__init__(config)
        self.attention = nn.Module()
        self.attention.qkv_proj = nn.Linear(4, 12)
        self.post_init()


@torch.no_grad()
def test_code_of_our_model_type_with_the_old_layout_saves_and_loads_its_own_names(tmp_path):
    """Our legacy transforms are registered for our model types, and transformers applies a type's transforms to every
    class of that type, reversed when it saves. Other code of those types (an old folder's, loaded with
    trust_remote_code) must keep its `qkv_proj` both ways: it saved as `qkqkv_proj` before the transforms matched
    only while one of our classes loads."""
    old = OldLayoutModel(OldLayoutConfig())
    old.attention.qkv_proj.weight.normal_()
    old.save_pretrained(tmp_path)
    assert set(safe_open(tmp_path / "model.safetensors", "pt").keys()) == set(old.state_dict())
    loaded, info = OldLayoutModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    torch.testing.assert_close(loaded.attention.qkv_proj.weight, old.attention.qkv_proj.weight, atol=0, rtol=0)
