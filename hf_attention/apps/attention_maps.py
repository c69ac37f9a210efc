"""Where a model attends, as numbers (torch only): the maps `hf-attention show` draws, checkable apart from the drawing.

`attention_rollout`, `vit_attention_maps`, `query_attention_map` (non-local, DANet), `criss_cross_maps`,
`video_attention_maps`, `image_text_word_maps`, and `record_feature_attention`, which reads SE gates,
residual-attention masks and STN transforms with forward hooks (the blocks themselves are not changed).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


def attention_rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar and Zuidema, 2020): how much each input token flows into each output token.

    Per layer the heads are averaged, the identity is added for the residual connection, and rows are renormalised
    to sum to 1; the layers are then multiplied, first layer on the right. `attentions` holds one (batch, heads,
    tokens, tokens) map per layer; returns (batch, tokens, tokens) whose rows sum to 1.
    """
    if not attentions:
        raise ValueError("attention_rollout needs at least one layer's attention map, got none.")
    rollout = None
    for layer, attention in enumerate(attentions):
        if attention.dim() != 4 or attention.shape[-1] != attention.shape[-2]:
            raise ValueError(
                f"attention_rollout needs self-attention maps (batch, heads, tokens, tokens); layer {layer} has shape "
                f"{tuple(attention.shape)}."
            )
        mixed = attention.float().mean(dim=1) + torch.eye(attention.shape[-1], device=attention.device)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed if rollout is None else mixed @ rollout
    return rollout


@dataclass
class VisionTransformerMaps:
    """The two ViT pictures' numbers for one image: `rollout` (grid_h, grid_w) and `heads` (heads, grid_h, grid_w).

    `query` says whose attention they are, the token the classifier reads: the class token for `pooling="cls"`, the
    mean over the patch tokens' rows for `pooling="mean"`. `heads` is the last layer's attention over the patches;
    `class_token_share` (heads,) is what each head gives the class token instead.
    """

    rollout: torch.Tensor
    heads: torch.Tensor
    class_token_share: torch.Tensor
    query: str


def vit_attention_maps(
    attentions: Sequence[torch.Tensor], grid_size: tuple[int, int], pooling: str = "cls", index: int = 0
) -> VisionTransformerMaps:
    """The rollout and the last layer's per-head attention of image `index`, over its (grid_h, grid_w) patches."""
    grid_height, grid_width = grid_size
    num_tokens = attentions[-1].shape[-1]
    if num_tokens != grid_height * grid_width + 1 or attentions[-1].shape[-2] != num_tokens:
        raise ValueError(
            f"Expected attention over a class token and {grid_height}x{grid_width} patches "
            f"({grid_height * grid_width + 1} keys), got maps of shape {tuple(attentions[-1].shape)}. Linformer "
            "attention runs over projected keys, not over the patches, so it cannot be drawn over the image."
        )
    rollout = attention_rollout(attentions)[index]
    last = attentions[-1][index].float()
    if pooling == "mean":
        rollout_row, head_rows, query = rollout[1:].mean(dim=0), last[:, 1:].mean(dim=1), "mean of patches"
    else:
        rollout_row, head_rows, query = rollout[0], last[:, 0], "class token"
    return VisionTransformerMaps(
        rollout=rollout_row[1:].reshape(grid_height, grid_width),
        heads=head_rows[:, 1:].reshape(-1, grid_height, grid_width),
        class_token_share=head_rows[:, 0],
        query=query,
    )


def feature_cell(pixel: tuple[int, int], image_size: tuple[int, int], grid_size: tuple[int, int]) -> tuple[int, int]:
    """The cell of a (grid_h, grid_w) feature map that covers input pixel (row, column) of an (h, w) image."""
    (row, column), (height, width) = pixel, image_size
    if not (0 <= row < height and 0 <= column < width):
        raise ValueError(f"The query pixel {pixel} lies outside the {height}x{width} input image (rows, columns).")
    return row * grid_size[0] // height, column * grid_size[1] // width


def query_attention_map(
    attention: torch.Tensor,
    query_cell: tuple[int, int],
    query_grid: tuple[int, int],
    key_grid: tuple[int, int],
    index: int = 0,
) -> torch.Tensor:
    """One query position's attention over the key positions of a feature map, as a (key_h, key_w) map.

    `attention` is (batch, heads, query_h * query_w, key_h * key_w), positions in row-major order, as the non-local
    and DANet position blocks return it; the heads (one in both papers) are averaged.
    """
    expected = query_grid[0] * query_grid[1], key_grid[0] * key_grid[1]
    if attention.dim() != 4 or tuple(attention.shape[-2:]) != expected:
        raise ValueError(
            f"Expected an attention map (batch, heads, {expected[0]}, {expected[1]}) between a {query_grid} query grid "
            f"and a {key_grid} key grid, got {tuple(attention.shape)}."
        )
    query = query_cell[0] * query_grid[1] + query_cell[1]
    return attention[index, :, query].float().mean(dim=0).reshape(key_grid)


def criss_cross_dense(probabilities: torch.Tensor) -> torch.Tensor:
    """One criss-cross pass as a dense (batch, h * w, h * w) map between positions (row-major).

    `probabilities` is (batch, h, w, h + w): for query (i, j), first its weights over column j (rows g = 0..h-1,
    zero at g = i, where the position is counted in its row), then over row i (columns v = 0..w-1). Rows sum to 1.
    """
    batch, height, width, length = probabilities.shape
    if length != height + width:
        raise ValueError(
            f"Expected criss-cross weights (batch, height, width, height + width), got {tuple(probabilities.shape)}."
        )
    column, row = probabilities.float().split((height, width), dim=-1)
    dense = probabilities.new_zeros(batch, height, width, height, width, dtype=torch.float32)
    dense += torch.einsum("bhwg,wx->bhwgx", column, torch.eye(width))  # key (g, w): the query's own column
    dense += torch.einsum("bhwv,hy->bhwyv", row, torch.eye(height))  # key (h, v): the query's own row
    return dense.reshape(batch, height * width, height * width)


def criss_cross_maps(
    passes: Sequence[torch.Tensor], query_cell: tuple[int, int], index: int = 0
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """For one query position: the (h, w) cross it attends over in each pass, and its reach after all passes (the
    product of the passes' dense maps, last pass on the left: after two passes every position is reached)."""
    height, width = passes[0].shape[1:3]
    query = query_cell[0] * width + query_cell[1]
    denses = [criss_cross_dense(probabilities[index : index + 1])[0] for probabilities in passes]
    reach = denses[0]
    for dense in denses[1:]:
        reach = dense @ reach
    crosses = [dense[query].reshape(height, width) for dense in denses]
    return crosses, reach[query].reshape(height, width)


@dataclass
class VideoAttentionMaps:
    """The video pictures' numbers for one clip: `frames` (frames, grid_h, grid_w), each frame's class token's
    last-layer attention over its patches (heads averaged); `message_share` (frames,), what it gives its frame's
    message token; `cross_frame` (frames, frames), the last layer's attention between the frames' message tokens
    (row: the frame that attends), or None without cross-frame attention."""

    frames: torch.Tensor
    message_share: torch.Tensor | None
    cross_frame: torch.Tensor | None


def video_attention_maps(
    attentions: Sequence[torch.Tensor],
    cross_frame_attentions: Sequence[torch.Tensor] | None,
    num_frames: int,
    grid_size: tuple[int, int],
    index: int = 0,
) -> VideoAttentionMaps:
    """Per frame the class token's attention, and the CFA map, of clip `index`, from the video model's outputs.

    `attentions[-1]` is (batch * frames, heads, tokens (+ 1), tokens (+ 1)), frames folded into the batch clip by
    clip: the class token first, then the patches, then (with cross-frame attention) the frame's message token;
    `cross_frame_attentions[-1]` is (batch, heads, frames, frames).
    """
    num_patches = grid_size[0] * grid_size[1]
    last = attentions[-1]
    if last.dim() != 4 or last.shape[-1] not in (num_patches + 1, num_patches + 2) or last.shape[0] % num_frames:
        raise ValueError(
            f"Expected intra-frame maps (batch * {num_frames} frames, heads, tokens, tokens) over a class token and "
            f"{num_patches} patches (and a message token), got {tuple(last.shape)}."
        )
    per_frame = last.unflatten(0, (-1, num_frames))[index]  # (frames, heads, tokens, tokens)
    class_rows = per_frame[:, :, 0].float().mean(dim=1)
    frames = class_rows[:, 1 : 1 + num_patches].reshape(num_frames, *grid_size)
    has_message = last.shape[-1] == num_patches + 2
    cross_frame = None
    if cross_frame_attentions:
        cross_frame = cross_frame_attentions[-1][index].float().mean(dim=0)
    return VideoAttentionMaps(frames, class_rows[:, -1] if has_message else None, cross_frame)


def image_text_word_maps(
    cross_attentions: Sequence[torch.Tensor],
    word_ids: Sequence[int | None],
    grid_size: tuple[int, int],
    text_queries: bool = True,
    index: int = 0,
) -> dict[int, torch.Tensor]:
    """{word index: (grid_h, grid_w) map} of pair `index`: the last fusion layer's cross-attention (heads averaged)
    between each word of the caption and the image patches, the maps of a word's sub-word tokens averaged.

    `cross_attentions[-1]` is (pairs, heads, queries, keys); with `text_queries` the queries are the text tokens
    and the keys the image tokens (class token first), so a word's map is its row over the patches; otherwise the
    image tokens query the text and a word's map is its column over the patch queries. `word_ids` gives each text
    token's word (None for special tokens and padding, which are left out), as a fast tokenizer's `word_ids()`.
    """
    last = cross_attentions[-1][index].float().mean(dim=0)
    per_token = last[:, 1:] if text_queries else last[1:].T  # (text tokens, patches)
    num_patches = grid_size[0] * grid_size[1]
    if per_token.shape != (len(word_ids), num_patches):
        raise ValueError(
            f"Expected cross-attention between {len(word_ids)} text tokens and a class token + {num_patches} patches, "
            f"got a map of shape {tuple(cross_attentions[-1].shape)}."
        )
    maps = {}
    for word in dict.fromkeys(word for word in word_ids if word is not None):
        tokens = [position for position, token_word in enumerate(word_ids) if token_word == word]
        maps[word] = per_token[tokens].mean(dim=0).reshape(grid_size)
    return maps


# --- forward hooks: what the blocks compute but do not return ------------------------------------------------


@dataclass
class RecordedBlock:
    """What one feature-map attention block computed during a forward pass, found by a forward hook.

    `kind` is "squeeze_excitation" (`value`: channel gates (batch, channels)), "residual_attention" (`value`: the soft
    mask M (batch, channels, h, w)) or "spatial_transformer" (`value`: the affine transforms (batch, 2, 3)).
    """

    name: str
    kind: str
    value: torch.Tensor


def is_block(module: nn.Module, *class_names: str) -> bool:
    """Whether `module` is (a subclass of) one of our blocks, by class name: a model loaded with trust_remote_code
    holds the folder's copies of our classes, which `isinstance` with the package's classes would miss."""
    return any(klass.__name__ in class_names for klass in type(module).__mro__)


def _recording_hooks(model: nn.Module):
    """(module, kind, how to turn its output into the recorded value) for every block the hooks can read."""
    for name, module in model.named_modules():
        if is_block(module, "SqueezeExcitation"):  # the gate is sigmoid(fc2(...)); fc2 is the last layer before it
            yield name, module.fc2, "squeeze_excitation", torch.sigmoid
        elif is_block(module, "ResidualAttentionModule"):
            yield name, module.mask, "residual_attention", lambda output: output
        elif is_block(module, "SpatialTransformer"):
            yield name, module.theta, "spatial_transformer", lambda output: output.view(-1, 2, 3)


@contextmanager
def record_feature_attention(model: nn.Module):
    """Within the block, every forward pass of `model` appends a `RecordedBlock` per SE, residual-attention and STN
    block to the yielded list, in the order the blocks ran. The hooks are removed on exit."""
    records: list[RecordedBlock] = []
    handles = []
    for name, module, kind, transform in _recording_hooks(model):

        def hook(_module, _inputs, output, name=name, kind=kind, transform=transform):
            records.append(RecordedBlock(name, kind, transform(output.detach()).float()))

        handles.append(module.register_forward_hook(hook))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def block_grids(model: nn.Module, run) -> tuple[object, list[tuple[str, tuple[int, int]]]]:
    """Call `run()` and return its result with (module name, (height, width) of the feature map it attended over)
    for every non-local, DANet position and criss-cross block, in the order they ran."""
    grids, handles = [], []
    for name, module in model.named_modules():
        if is_block(module, "NonLocalBlock", "PositionAttention", "CrissCrossAttention"):

            def hook(_module, inputs, name=name):
                grids.append((name, tuple(inputs[0].shape[-2:])))

            handles.append(module.register_forward_pre_hook(hook))
    try:
        return run(), grids
    finally:
        for handle in handles:
            handle.remove()
