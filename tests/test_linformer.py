"""Linformer self-attention, alone and in the Vision Transformer."""

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification

from hf_attention import (
    LinformerConfig,
    LinformerSelfAttention,
    LinformerSelfAttentionModel,
    MultiHeadAttention,
    VisionTransformerConfig,
    VisionTransformerForImageClassification,
)

# flex attention is compared with eager by tests/test_modeling_common.py; compiling it again here costs a minute
KERNELS = ["eager", "sdpa"]


def per_head_formula(attention: LinformerSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """softmax(Q_i (E_i^T K_i)^T / sqrt(d)) (F_i^T V_i) for each head i, concatenated, then the output projection."""
    length, heads, head_dim = x.shape[1], attention.num_heads, attention.head_dim
    q, k, v = attention.q_proj(x), attention.k_proj(x), attention.v_proj(x)
    outputs = []
    for head in range(heads):
        columns = slice(head * head_dim, (head + 1) * head_dim)
        e = attention.key_projection[head % attention.key_projection.shape[0], :length]
        f = attention.value_projection[head % attention.value_projection.shape[0], :length]
        projected_k, projected_v = e.T @ k[..., columns], f.T @ v[..., columns]
        weights = torch.softmax(q[..., columns] @ projected_k.transpose(-1, -2) / head_dim**0.5, dim=-1)
        outputs.append(weights @ projected_v)
    return attention.out_proj(torch.cat(outputs, dim=-1))


@pytest.mark.parametrize("sharing", ["none", "headwise"])
@torch.no_grad()
def test_linformer_matches_the_formula_for_per_head_and_shared_projections(sharing):
    attention = LinformerSelfAttention(16, 4, max_length=12, projected_length=5, sharing=sharing).eval()
    assert attention.key_projection.shape == ((4 if sharing == "none" else 1), 12, 5)
    x = torch.randn(2, 9, 16)  # shorter than max_length: the first 9 rows of the projections apply
    output, probs = attention(x, output_attentions=True)
    torch.testing.assert_close(output, per_head_formula(attention, x))
    assert probs.shape == (2, 4, 9, 5)


@pytest.mark.parametrize("share_kv", [False, True])
@torch.no_grad()
def test_parity_with_the_linformer_package(share_kv):
    linformer = pytest.importorskip("linformer")
    reference = linformer.LinformerSelfAttention(dim=32, seq_len=20, k=8, heads=4, share_kv=share_kv).eval()
    ours = LinformerSelfAttention(32, 4, 20, 8, sharing="key_value" if share_kv else "headwise").eval()
    assert (ours.value_projection is None) == share_kv
    ours.q_proj.weight.copy_(reference.to_q.weight)
    ours.k_proj.weight.copy_(reference.to_k.weight)
    ours.v_proj.weight.copy_((reference.to_k if share_kv else reference.to_v).weight)  # share_kv: values = keys
    ours.key_projection.copy_(reference.proj_k[None])
    if not share_kv:
        ours.value_projection.copy_(reference.proj_v[None])
    ours.out_proj.load_state_dict(reference.to_out.state_dict())
    for length in (20, 13):
        x = torch.randn(2, length, 32)
        for implementation in ("eager", "sdpa"):  # flex is compared with eager in the tests below
            ours.attn_implementation = implementation
            torch.testing.assert_close(ours(x)[0], reference(x), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_padding_is_left_out_and_fully_padded_rows_give_zeros_on_every_backend():
    config = LinformerConfig(hidden_size=32, num_attention_heads=4, max_sequence_length=17, projected_length=6)
    model = LinformerSelfAttentionModel(config).eval()
    x, mask = torch.randn(2, 17, 32), torch.zeros(2, 17, dtype=torch.long)
    mask[0, :11] = 1  # row 1 is all padding
    outputs = {}
    for implementation in KERNELS:
        model.set_attn_implementation(implementation)
        outputs[implementation] = model(x, mask).last_hidden_state
    for implementation in KERNELS[1:]:
        torch.testing.assert_close(outputs[implementation], outputs["eager"], atol=1e-6, rtol=1e-5)
    assert (outputs["eager"][0, 11:] == 0).all() and (outputs["eager"][1] == 0).all()
    model.set_attn_implementation("eager")
    alone = model(x[:1, :11]).last_hidden_state  # right padding = the shorter sequence alone
    torch.testing.assert_close(outputs["eager"][0, :11], alone[0], atol=1e-6, rtol=1e-5)
    with_bias = LinformerSelfAttentionModel(LinformerConfig.tiny(qkv_bias=True)).eval()
    padded = with_bias(x[:, :10, :16], mask[:, :10] * (torch.arange(10) < 6)).last_hidden_state
    alone = with_bias(x[:1, :6, :16]).last_hidden_state  # the padded keys' bias must not leak in
    torch.testing.assert_close(padded[0, :6], alone[0], atol=1e-6, rtol=1e-5)
    assert (padded[0, 6:] == 0).all() and (padded[1] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@torch.no_grad()
def test_half_precision_with_a_padding_mask(dtype):
    model = LinformerSelfAttentionModel(LinformerConfig.tiny()).eval()
    x, mask = torch.randn(2, 8, 16), torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    expected = model(x, mask).last_hidden_state
    model.to(dtype)
    for implementation in ("eager", "sdpa"):
        model.set_attn_implementation(implementation)
        output = model(x.to(dtype), mask).last_hidden_state
        assert output.dtype == dtype and (output[1, 5:] == 0).all() and torch.isfinite(output).all()
        torch.testing.assert_close(output.float(), expected, atol=2e-2, rtol=2e-2)


def test_is_a_multi_head_attention_and_keeps_the_checkpoint_names_of_before():
    model = LinformerSelfAttentionModel(LinformerConfig.tiny(projection_sharing="none", qkv_bias=True))
    assert isinstance(model.attention, MultiHeadAttention)  # projections, head split, backends, checks: reused
    names = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    projections = {f"attention.{kind}_proj.{part}" for kind in "qkvo" for part in ("weight", "bias")}
    projections = {name.replace("o_proj", "out_proj") for name in projections}
    assert set(names) == projections | {"attention.key_projection", "attention.value_projection"}
    assert names["attention.key_projection"] == (2, 12, 4)  # (heads, max_length, k) with sharing="none"


@torch.no_grad()
@pytest.mark.parametrize("implementation", KERNELS)
def test_nan_in_padded_tokens_never_reaches_the_projected_keys(implementation):
    model = LinformerSelfAttentionModel(LinformerConfig.tiny(qkv_bias=True)).eval()
    model.set_attn_implementation(implementation)
    x, mask = torch.randn(2, 8, 16), torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    clean = model(x, mask).last_hidden_state
    x[1, 5:] = float("nan")
    torch.testing.assert_close(model(x, mask).last_hidden_state, clean, atol=1e-6, rtol=1e-6)


def test_bad_inputs_and_settings_raise_errors_that_name_the_problem():
    model = LinformerSelfAttentionModel(LinformerConfig.tiny())
    with pytest.raises(ValueError, match="13 tokens but the Linformer projections cover at most max_length=12"):
        model(torch.randn(1, 13, 16))
    with pytest.raises(ValueError, match=r"hidden_states of shape \(batch, length, 16\), got \(1, 5, 8\)"):
        model(torch.randn(1, 5, 8))
    with pytest.raises(ValueError, match=r"`attention_mask` must have shape \(batch_size, length\) = \(2, 5\)"):
        model(torch.randn(2, 5, 16), torch.ones(2, 6))
    with pytest.raises(TypeError, match="`hidden_states` must be a floating-point tensor"):
        model(torch.ones(2, 5, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="empty sequence"):
        model(torch.randn(2, 0, 16))
    with pytest.raises(ValueError, match="self-attention only"):
        model.attention(torch.randn(2, 5, 16), key_value_states=torch.randn(2, 5, 16))
    with pytest.raises(StrictDataclassClassValidationError, match=r"projection sharing must be one of"):
        LinformerConfig(projection_sharing="layerwise")
    with pytest.raises(StrictDataclassClassValidationError, match=r"`projected_length` must be positive, got 0"):
        LinformerConfig(max_sequence_length=12, projected_length=0)
    with pytest.raises(StrictDataclassClassValidationError, match=r"hidden size \(30\) is not a multiple"):
        LinformerConfig(hidden_size=30, num_attention_heads=4)


# --- the Vision Transformer with Linformer attention -----------------------------------------------------------------


@torch.no_grad()
def test_the_seeds_efficient_vit_builds_and_runs_at_2048_pixels_with_4097_tokens():
    # the seed's Linformer(dim=512, seq_len=4096 + 1, depth=12, heads=8, k=256) + ViT(image_size=2048,
    # patch_size=32, num_classes=1000), with a narrow, shallow body so the test stays fast
    config = VisionTransformerConfig(
        image_size=2048, patch_size=32, num_labels=1000, attention_type="linformer", linformer_k=256,
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
    )  # fmt: skip
    model = VisionTransformerForImageClassification(config).eval()
    attention = model.vit.layers[0].attention
    assert isinstance(attention, LinformerSelfAttention) and attention.key_projection.shape == (1, 4097, 256)
    output = model(torch.randn(1, 3, 2048, 2048), output_attentions=True)
    assert output.logits.shape == (1, 1000) and torch.isfinite(output.logits).all()
    assert output.attentions[0].shape == (1, 2, 4097, 256)


def tiny_linformer_vit(**overrides) -> VisionTransformerForImageClassification:
    return VisionTransformerForImageClassification(
        VisionTransformerConfig.tiny(attention_type="linformer", linformer_k=6, **overrides)
    ).eval()


@torch.no_grad()
def test_linformer_vit_every_backend_gives_the_same_logits():
    pixels = torch.randn(2, 3, 16, 16)
    model = tiny_linformer_vit(linformer_sharing="none")
    logits = {}
    for implementation in KERNELS:
        model.set_attn_implementation(implementation)
        logits[implementation] = model(pixels).logits
    for implementation in KERNELS[1:]:
        torch.testing.assert_close(logits[implementation], logits["eager"], atol=1e-5, rtol=1e-5)


def test_linformer_vit_save_load_round_trip_and_every_parameter_initialised(tmp_path):
    model = tiny_linformer_vit()
    for name, parameter in model.named_parameters():
        assert torch.isfinite(parameter).all(), name
        if name.endswith("_projection"):
            assert parameter.abs().max() <= 6**-0.5 and parameter.std() > 0, name
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.attention_type == "linformer" and loaded.config.linformer_k == 6
    saved = load_file(tmp_path / "model.safetensors")
    assert "vit.layers.0.attention.key_projection" in saved
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0)
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).logits, model(pixels).logits, rtol=0, atol=0)


@torch.no_grad()
def test_linformer_vit_runs_smaller_images_and_refuses_larger_ones():
    model = tiny_linformer_vit()
    assert model(torch.randn(1, 3, 8, 12), interpolate_pos_encoding=True).logits.shape == (1, 3)  # 7 of 17 rows
    with pytest.raises(ValueError, match="26 tokens but the Linformer projections cover at most max_length=17"):
        model(torch.randn(1, 3, 20, 20), interpolate_pos_encoding=True)


def test_linformer_vit_settings_are_validated():
    with pytest.raises(StrictDataclassClassValidationError, match=r"attention_type.*must be one of"):
        VisionTransformerConfig.tiny(attention_type="performer")
    with pytest.raises(StrictDataclassClassValidationError, match=r"`linformer_k` must be positive, got 0"):
        VisionTransformerConfig.tiny(attention_type="linformer", linformer_k=0)
    with pytest.raises(StrictDataclassClassValidationError, match=r"projection sharing must be one of"):
        VisionTransformerConfig.tiny(attention_type="linformer", linformer_sharing="layers")
