"""Parity with the seeds' own libraries: CompressAI, vit-pytorch + linformer, timm.

They import torchvision, which does not load next to the CPU torch 2.13.0 of the main environment, so these tests
skip there; `bash benchmarks/setup_reference_venv.sh` builds a second venv (torch 2.14.1 + torchvision 0.29.1)
in which they run.
"""

import importlib

import pytest
import torch
from torch import nn

from hf_attention import CompressAIAttentionBlock, VisionTransformerConfig
from hf_attention.conversion import (
    convert_timm_non_local_state_dict,
    convert_timm_squeeze_excite_state_dict,
    convert_vit_pytorch_linformer_state_dict,
)
from hf_attention.modeling_non_local import NonLocalBlock
from hf_attention.modeling_squeeze_excitation import SqueezeExcitation
from hf_attention.modeling_vit import VisionTransformerForImageClassification


def import_or_skip(name: str):
    """The module, or a skip naming why it does not import (missing, or torchvision's operators missing)."""
    try:
        return importlib.import_module(name)
    except Exception as error:  # torchvision's CUDA/CPU mismatch raises RuntimeError, not ImportError
        pytest.skip(f"{name} does not import here ({type(error).__name__}: {error}); see setup_reference_venv.sh")


def randomise_batch_norm(norm: nn.BatchNorm2d) -> None:
    """Non-trivial statistics and affine weights: a zero-initialised norm would hide the whole branch."""
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)


@torch.no_grad()
def test_compressai_attention_block_loads_compressai_weights_with_the_same_outputs():
    layers = import_or_skip("compressai.layers")
    torch.manual_seed(0)
    reference = layers.AttentionBlock(16).eval()
    ours = CompressAIAttentionBlock(16).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    for height, width in ((8, 8), (7, 5)):
        x = torch.randn(2, 16, height, width)
        expected = reference(x)
        assert (expected - x).abs().max() > 1e-2  # the attention branch is not a no-op
        torch.testing.assert_close(ours(x), expected)


def build_seed_efficient_vit(vit_efficient, linformer, **sizes):
    """The seed's efficient ViT: vit_pytorch.efficient.ViT over linformer.Linformer, patches not normalised."""
    transformer = linformer.Linformer(
        dim=sizes["dim"], seq_len=sizes["num_patches"] + 1, depth=2, heads=4, k=sizes["k"]
    )
    model = vit_efficient.ViT(
        dim=sizes["dim"], image_size=sizes["image_size"], patch_size=sizes["patch_size"], num_classes=5,
        transformer=transformer, channels=3, pool="cls",
    )  # fmt: skip
    # recent vit-pytorch releases normalise patches before and after the linear embedding; the seed's code and
    # the paper do not, and neither does our ViT
    model.to_patch_embedding[1] = nn.Identity()
    model.to_patch_embedding[3] = nn.Identity()
    return model.eval()


@torch.no_grad()
def test_seed_efficient_vit_over_linformer_matches_our_linformer_vit_with_mapped_weights():
    vit_efficient = import_or_skip("vit_pytorch.efficient")
    linformer = import_or_skip("linformer")
    torch.manual_seed(0)
    image_size, patch_size, dim, k = 16, 4, 32, 6
    reference = build_seed_efficient_vit(
        vit_efficient, linformer, dim=dim, image_size=image_size, patch_size=patch_size, k=k, num_patches=16
    )
    config = VisionTransformerConfig(
        image_size=image_size, patch_size=patch_size, num_channels=3, hidden_size=dim, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=4 * dim, hidden_act="gelu", layer_norm_eps=1e-5, qkv_bias=False,
        attention_type="linformer", linformer_k=k, linformer_sharing="headwise", pooling="cls", num_labels=5,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    ours = VisionTransformerForImageClassification(config).eval()
    state_dict = convert_vit_pytorch_linformer_state_dict(reference.state_dict(), patch_size)
    ours.load_state_dict(state_dict, strict=True)
    pixels = torch.randn(3, 3, image_size, image_size)
    for implementation in ("eager", "sdpa"):
        ours.set_attn_implementation(implementation)
        torch.testing.assert_close(ours(pixel_values=pixels).logits, reference(pixels), atol=1e-5, rtol=1e-5)


def test_seed_vit_with_normalised_patches_is_refused_not_converted():
    vit_efficient = import_or_skip("vit_pytorch.efficient")
    linformer = import_or_skip("linformer")
    transformer = linformer.Linformer(dim=32, seq_len=17, depth=1, heads=4, k=6)
    reference = vit_efficient.ViT(dim=32, image_size=16, patch_size=4, num_classes=5, transformer=transformer)
    with pytest.raises(ValueError, match="normalises its patches"):
        convert_vit_pytorch_linformer_state_dict(reference.state_dict(), 4)


@torch.no_grad()
def test_timm_squeeze_excite_matches_our_squeeze_excitation():
    timm_layers = import_or_skip("timm.layers")
    torch.manual_seed(0)
    # timm rounds its bottleneck to a multiple of 8; 64 // 8 = 8 hidden units on both sides
    reference = timm_layers.SqueezeExcite(64, rd_channels=8).eval()
    ours = SqueezeExcitation(64, reduction=8).eval()
    ours.load_state_dict(convert_timm_squeeze_excite_state_dict(reference.state_dict()), strict=True)
    x = torch.randn(2, 64, 5, 6)
    torch.testing.assert_close(ours(x), reference(x))


@torch.no_grad()
def test_timm_non_local_attn_matches_our_block_without_its_score_scaling_and_differs_with_it():
    non_local = import_or_skip("timm.layers.non_local_attn")
    torch.manual_seed(0)
    channels, inner = 32, 8
    x = torch.randn(2, channels, 5, 6)
    ours = NonLocalBlock(channels, inner_channels=inner, pairwise_function="embedded_gaussian").eval()
    unscaled = non_local.NonLocalAttn(channels, use_scale=False, rd_channels=inner).eval()
    randomise_batch_norm(unscaled.norm)
    ours.load_state_dict(convert_timm_non_local_state_dict(unscaled.state_dict()), strict=True)
    torch.testing.assert_close(ours(x), unscaled(x), atol=1e-5, rtol=1e-5)
    # timm's default scales the scores by in_channels ** -0.5 (the paper does not): the outputs differ, and scaling
    # our theta by that factor (a linear map, so the scores scale with it) gives timm's back
    scaled = non_local.NonLocalAttn(channels, use_scale=True, rd_channels=inner).eval()
    scaled.load_state_dict(unscaled.state_dict())
    assert (ours(x) - scaled(x)).abs().max() > 1e-3
    ours.theta.weight.mul_(channels**-0.5)
    ours.theta.bias.mul_(channels**-0.5)
    torch.testing.assert_close(ours(x), scaled(x), atol=1e-5, rtol=1e-5)
