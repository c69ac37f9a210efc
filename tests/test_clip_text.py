"""CLIP's text model, shared by the image-text and the video-text families: parity with transformers' CLIPTextModel,
the pooling modes, checkpoints and configs saved before the two text towers became one, and remote code that pools
as the package does. The REGISTRY-wide contract (tests/test_modeling_common.py) covers the rest."""

import json
import subprocess
import sys

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

from hf_attention import (
    CLIPResidualTextConfig,
    CLIPResidualTextModel,
    VideoTextTransformerConfig,
    VideoTextTransformerModel,
    VisionTextCrossAttentionConfig,
    VisionTextCrossAttentionModel,
    from_transformers,
)

# the previous release's names inside a CLIP block (OpenAI's), newest first; its q/k/v were one fused `qkv_proj`
OLD_BLOCK_NAMES = [
    (".layer_norm1.", ".ln_1."),
    (".layer_norm2.", ".ln_2."),
    (".self_attn.", ".attn."),
    (".mlp.fc1.", ".mlp.c_fc."),
    (".mlp.fc2.", ".mlp.c_proj."),
]


def old_layout(state_dict: dict, prefix: str = "", blocks_prefix: str = "") -> dict:
    """The previous release's weights of the CLIP text model under `prefix`: its blocks `layers.N` were
    `{blocks_prefix}resblocks.N`, with OpenAI's names and a fused qkv_proj. Other weights keep their names."""
    old = {}
    for name, tensor in state_dict.items():
        rest = name.removeprefix(prefix)
        if not name.startswith(prefix) or not rest.startswith("layers."):
            old[name] = tensor
        elif ".self_attn.q_proj." in rest:
            projections = [state_dict[name.replace("q_proj", part)] for part in ("q_proj", "k_proj", "v_proj")]
            old[blocks_prefix + old_block_name(rest.replace("q_proj", "qkv_proj"))] = torch.cat(projections)
        elif ".self_attn.k_proj." not in rest and ".self_attn.v_proj." not in rest:
            old[blocks_prefix + old_block_name(rest)] = tensor
    return old


def old_block_name(name: str) -> str:
    name = "resblocks." + name.removeprefix("layers.")
    for new, legacy in OLD_BLOCK_NAMES:
        name = name.replace(new, legacy)
    return name


def write_folder(folder, state_dict: dict, config: dict) -> None:
    folder.mkdir()
    save_file({name: tensor.contiguous() for name, tensor in state_dict.items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config))


def padded_texts(vocab_size: int):
    """Two right-padded texts ending in the end-of-text token (the highest id), one text at full length."""
    end = vocab_size - 1
    input_ids = torch.tensor([[5, 9, 13, end, 0, 0], [7, 8, 9, 10, 11, end], [3, 4, end, 0, 0, 0]])
    return input_ids, (input_ids != 0).long()


# --- parity -------------------------------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_converted_clip_text_model_matches_transformers(implementation):
    reference_config = CLIPTextConfig(
        vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=16, bos_token_id=1, pad_token_id=0, eos_token_id=59,
    )  # fmt: skip
    reference = CLIPTextModel(reference_config).eval()
    reference.set_attn_implementation(implementation)
    ours = from_transformers(reference)
    assert type(ours) is CLIPResidualTextModel and ours.config.pooling == "end_of_text"
    input_ids, mask = padded_texts(60)
    expected = reference(input_ids, attention_mask=mask, output_hidden_states=True)
    got = ours(input_ids, attention_mask=mask, output_hidden_states=True)
    kept = mask.bool()
    torch.testing.assert_close(got.last_hidden_state[kept], expected.last_hidden_state[kept], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, atol=1e-5, rtol=1e-5)
    for mine, theirs in zip(got.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(mine[kept], theirs[kept], atol=1e-5, rtol=1e-5)


def test_a_clip_text_model_that_pools_elsewhere_than_the_highest_id_is_refused():
    config = CLIPTextConfig(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                            num_attention_heads=4, eos_token_id=7)  # fmt: skip
    with pytest.raises(ValueError, match="first eos_token_id=7, which is not the highest id"):
        from_transformers(CLIPTextModel(config))


# --- pooling ------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_each_pooling_reads_its_token_among_the_real_ones_and_all_padding_pools_to_zeros():
    model = CLIPResidualTextModel(CLIPResidualTextConfig.tiny()).eval()
    input_ids = torch.tensor([[5, 9, 60, 7, 63, 63], [63, 63, 4, 62, 8, 3], [1, 2, 3, 4, 5, 6]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]])  # right, left, all padding
    expected_index = {"end_of_text": [2, 3], "last_token": [3, 5], "first_token": [0, 2]}
    for pooling, index in expected_index.items():
        model.config.pooling = pooling  # read from the live config, as every field
        outputs = model(input_ids, attention_mask=mask)
        torch.testing.assert_close(outputs.pooler_output[:2], outputs.last_hidden_state[[0, 1], index], msg=pooling)
        assert torch.equal(outputs.pooler_output[2], torch.zeros(32)), pooling
    model.config.pooling = "end_of_text"
    unpadded = model(input_ids[:1, :4]).pooler_output
    torch.testing.assert_close(unpadded, model(input_ids[:1, :4]).last_hidden_state[:, 2])


def test_pooling_defaults_to_what_configs_without_the_field_did_and_is_validated():
    assert CLIPResidualTextConfig.tiny().pooling == "last_token"  # causal: the last real token has seen them all
    assert CLIPResidualTextConfig.tiny(is_causal=False).pooling == "first_token"
    assert CLIPResidualTextConfig.tiny(is_causal=False, pooling="end_of_text").pooling == "end_of_text"
    saved = CLIPResidualTextConfig.tiny(is_causal=False).to_dict()
    assert saved["pooling"] == "first_token"  # stored, so a later change of is_causal does not move it
    with pytest.raises(StrictDataclassClassValidationError, match="`pooling` must be one of"):
        CLIPResidualTextConfig.tiny(pooling="eos")
    old_image_text = VisionTextCrossAttentionConfig.tiny().to_dict()
    del old_image_text["text_config"]["pooling"]
    assert VisionTextCrossAttentionConfig.from_dict(old_image_text).text_config.pooling == "last_token"


def test_the_video_text_model_reads_texts_out_at_the_end_of_text_token_and_holds_the_vocabulary_in_its_text_config():
    config = VideoTextTransformerConfig.tiny()
    text = config.get_text_config()
    assert text is config.text_config and text.model_type == CLIPResidualTextConfig.model_type
    assert (text.vocab_size, text.max_position_embeddings, text.pooling) == (50, 8, "end_of_text")
    assert (text.pad_token_id, text.bos_token_id, text.eos_token_id) == (1, 0, 2)  # X-CLIP's
    assert VideoTextTransformerConfig(text_config={"hidden_size": 16}).text_config.pooling == "end_of_text"
    with pytest.raises(StrictDataclassClassValidationError, match="must be a CLIPResidualTextConfig"):
        VideoTextTransformerConfig.tiny(text_config=VisionTextCrossAttentionConfig.tiny().vision_config)


# --- checkpoints and configs of the previous release --------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("is_causal", [True, False])
def test_an_old_image_text_checkpoint_loads_with_the_same_outputs(tmp_path, is_causal):
    model = CLIPResidualTextModel(CLIPResidualTextConfig.tiny(is_causal=is_causal)).eval()
    config = {**model.config.to_dict(), "architectures": ["CLIPResidualTextModel"]}
    for field in ("pooling", "bos_token_id", "eos_token_id"):  # fields the previous release did not have
        del config[field]
    write_folder(tmp_path / "old", old_layout(model.state_dict()), config)
    loaded, info = CLIPResidualTextModel.from_pretrained(tmp_path / "old", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert loaded.config.pooling == ("last_token" if is_causal else "first_token")
    inputs = model.dummy_inputs
    expected, got = model(**inputs), loaded.eval()(**inputs)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, atol=1e-6, rtol=1e-6)


def old_video_text_config(config: VideoTextTransformerConfig) -> dict:
    """What the previous release wrote: a bare transformer as text_config, the text model's vocabulary, length and
    token ids at the top level."""
    saved = {**config.to_dict(), "architectures": ["VideoTextTransformerModel"], "note": "a user's extra key"}
    text = saved["text_config"]
    for field in ("vocab_size", "max_position_embeddings", "pad_token_id", "bos_token_id", "eos_token_id"):
        saved[field] = text.pop(field)
    del text["pooling"]
    text["model_type"] = "hf_attention_clip_residual"
    return saved


@torch.no_grad()
def test_an_old_video_text_checkpoint_loads_with_the_same_outputs_and_saves_in_the_current_layout(tmp_path):
    model = VideoTextTransformerModel(VideoTextTransformerConfig.tiny()).eval()
    old_weights = old_layout(model.state_dict(), "text_model.", "text_model.transformer.")
    assert "text_model.transformer.resblocks.0.attn.qkv_proj.weight" in old_weights
    write_folder(tmp_path / "old", old_weights, old_video_text_config(model.config))
    loaded, info = VideoTextTransformerModel.from_pretrained(tmp_path / "old", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    text = loaded.config.text_config
    assert (text.vocab_size, text.max_position_embeddings, text.pooling, text.pad_token_id) == (50, 8, "end_of_text", 1)
    assert loaded.config.note == "a user's extra key" and not hasattr(loaded.config, "vocab_size")
    inputs = model.dummy_inputs
    expected, got = model(**inputs), loaded.eval()(**inputs)
    torch.testing.assert_close(got.logits_per_video, expected.logits_per_video, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got.text_embeds, expected.text_embeds, atol=1e-6, rtol=1e-6)
    loaded.save_pretrained(tmp_path / "new")
    saved = json.loads((tmp_path / "new" / "config.json").read_text())
    assert "vocab_size" not in saved and saved["text_config"]["model_type"] == CLIPResidualTextConfig.model_type
    assert load_file(tmp_path / "new" / "model.safetensors").keys() == model.state_dict().keys()


# --- remote code --------------------------------------------------------------------------------------------------

LOAD_AND_RUN_WITHOUT_THE_PACKAGE = """
import sys, torch
sys.modules["hf_attention"] = None  # the saved code alone: its config classes come from other module copies
from transformers import AutoModel

def tensors(output):
    if isinstance(output, torch.Tensor):
        return [output]
    return [tensor for item in output.values() for tensor in tensors(item)] if hasattr(output, "values") else []

for folder in sys.argv[1:]:
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    inputs, expected = torch.load(folder + "/reference.pt")
    with torch.no_grad():
        got = tensors(model(**inputs))
    assert len(got) == len(expected), folder
    print(type(model).__name__, max(float((one - other).abs().max()) for one, other in zip(got, expected)))
"""


def tensors_of(output) -> list[torch.Tensor]:
    """Every tensor of a ModelOutput, nested outputs included, in order (as the subprocess collects them)."""
    if isinstance(output, torch.Tensor):
        return [output]
    return [tensor for item in output.values() for tensor in tensors_of(item)] if hasattr(output, "values") else []


@pytest.mark.slow  # a subprocess
def test_models_loaded_as_remote_code_pool_as_the_package_does(tmp_path):
    folders = []
    for config_class, model_class in (
        (CLIPResidualTextConfig, CLIPResidualTextModel),
        (VisionTextCrossAttentionConfig, VisionTextCrossAttentionModel),
        (VideoTextTransformerConfig, VideoTextTransformerModel),
    ):
        model = model_class(config_class.tiny()).eval()
        folder = tmp_path / model_class.__name__
        model.save_pretrained(folder)
        with torch.no_grad():
            outputs = model(**model.dummy_inputs)
        torch.save((model.dummy_inputs, tensors_of(outputs)), folder / "reference.pt")
        folders.append(str(folder))
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_RUN_WITHOUT_THE_PACKAGE, *folders], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    differences = dict(line.split() for line in result.stdout.splitlines())
    assert len(differences) == 3 and all(float(value) <= 1e-6 for value in differences.values()), differences


def test_one_dimensional_position_ids_broadcast_over_the_batch_as_in_transformers_clip():
    model = CLIPResidualTextModel(CLIPResidualTextConfig.tiny()).eval()
    input_ids = torch.randint(3, model.config.vocab_size, (2, 5))
    with torch.no_grad():
        expected = model(input_ids=input_ids).last_hidden_state
        given = model(input_ids=input_ids, position_ids=torch.arange(5)).last_hidden_state
    torch.testing.assert_close(given, expected)
