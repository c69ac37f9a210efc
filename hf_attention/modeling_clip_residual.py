"""CLIP's residual attention block (Radford et al., 2021) and the transformer stacked from it.

Data flow, per block: x + self_attn(layer_norm1(x)), then x + mlp(layer_norm2(x)), where mlp is fc1 -> QuickGELU -> fc2
and self_attn is multi-head self-attention, causal in CLIP's text tower. The layers carry transformers' CLIP names
(OpenAI's checkpoints call them ln_1, attn, ln_2, c_fc and c_proj). The stack has no final norm: CLIP applies its
`ln_final` / `ln_post` outside the transformer, to the token it reads out.
"""

from typing import Unpack

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import TransformersKwargs
from transformers.utils.output_capturing import capture_outputs

from .attention import ATTENTION_KWARGS, MultiHeadAttention
from .checks import check_dtype_matches, check_float_input, check_keywords, check_positive, check_sizes
from .configuration_clip_residual import CLIPResidualTransformerConfig
from .layers import FeedForward
from .masks import AttentionMask, build_attention_mask, validate_padding_mask
from .pretrained import HFAttentionPreTrainedModel, in_model_dtype, resolve_forward_kwargs


class CLIPResidualAttentionBlock(GradientCheckpointingLayer):
    """Pre-norm block: x + self_attn(layer_norm1(x)), then x + mlp(layer_norm2(x)) with a QuickGELU MLP.

    Args:
        hidden_size: width of the tokens.
        num_heads: attention heads; must divide `hidden_size`.
        intermediate_size: width of the MLP's hidden layer; defaults to 4 * `hidden_size` as in CLIP.
        hidden_act: MLP activation, a key of `transformers.activations.ACT2FN`.
        layer_norm_eps: epsilon of both layer norms.
        attention_dropout: dropout on the attention weights, in [0, 1).
        is_causal: hide later tokens from each token (CLIP's text tower).
        attn_implementation: backend when no `config` drives the module ("eager", "sdpa", "flex_attention", ...).
        config: a `PreTrainedConfig` whose live `_attn_implementation` overrides `attn_implementation`.

    Forward takes (batch, length, hidden_size) tokens and an optional padding mask (batch, length), 1 to keep, or
    an `AttentionMask` from `build_attention_mask` (for a structural mask), and returns tokens of the same shape.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int | None = None,
        *,
        hidden_act: str = "quick_gelu",
        layer_norm_eps: float = 1e-5,
        attention_dropout: float = 0.0,
        is_causal: bool = False,
        attn_implementation: str = "sdpa",
        config=None,
    ):
        super().__init__()
        check_sizes(hidden_size=hidden_size, num_heads=num_heads, intermediate_size=intermediate_size)
        check_positive("layer_norm_eps", layer_norm_eps)
        self.layer_norm1 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.self_attn = MultiHeadAttention(
            hidden_size,
            num_heads,
            dropout=attention_dropout,
            is_causal=is_causal,
            attn_implementation=attn_implementation,
            config=config,
        )
        self.layer_norm2 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.mlp = FeedForward(hidden_size, intermediate_size or 4 * hidden_size, hidden_act)

    @classmethod
    def from_config(cls, config) -> "CLIPResidualAttentionBlock":
        """A block of a stack whose config has CLIP's fields (hidden_size, num_attention_heads, intermediate_size,
        hidden_act, layer_norm_eps, attention_dropout, is_causal), driven by that config's live backend."""
        return cls(
            config.hidden_size,
            config.num_attention_heads,
            config.intermediate_size,
            hidden_act=config.hidden_act,
            layer_norm_eps=config.layer_norm_eps,
            attention_dropout=config.attention_dropout,
            is_causal=config.is_causal,
            config=config,
        )

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | AttentionMask | None = None, **kwargs
    ) -> torch.Tensor:
        check_keywords(self, kwargs, ATTENTION_KWARGS)
        check_float_input("hidden_states", hidden_states, "(batch, length, hidden_size)")
        check_dtype_matches("hidden_states", hidden_states, self)
        attention_output, _ = self.self_attn(self.layer_norm1(hidden_states), attention_mask=attention_mask, **kwargs)
        hidden_states = hidden_states + attention_output
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class CLIPResidualTransformerPreTrainedModel(HFAttentionPreTrainedModel):
    config: CLIPResidualTransformerConfig
    config_class = CLIPResidualTransformerConfig
    base_model_prefix = "transformer"
    main_input_name = "inputs_embeds"
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPResidualAttentionBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {"hidden_states": CLIPResidualAttentionBlock, "attentions": MultiHeadAttention}

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """A deterministic small padded batch that fits the config (transformers' convention for example inputs)."""
        generator = torch.Generator().manual_seed(0)
        return {
            "inputs_embeds": torch.randn(2, 5, self.config.hidden_size, generator=generator),
            "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
        }


class CLIPResidualTransformerModel(CLIPResidualTransformerPreTrainedModel):
    """`num_hidden_layers` residual attention blocks over token embeddings; the mask is built once for all."""

    def __init__(self, config: CLIPResidualTransformerConfig):
        super().__init__(config)
        num_layers = config.num_hidden_layers
        self.layers = nn.ModuleList(CLIPResidualAttentionBlock.from_config(config) for _ in range(num_layers))
        self.post_init()

    @capture_outputs
    def forward(
        self,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        r"""
        inputs_embeds (`torch.Tensor` of shape `(batch_size, length, hidden_size)`):
            Token embeddings (with position embeddings already added, as CLIP does before its transformer).
        attention_mask (`torch.Tensor` of shape `(batch_size, length)`, *optional*):
            1 for tokens to keep, 0 for padding. Padded tokens neither give nor take attention.
        """
        kwargs = resolve_forward_kwargs(self, kwargs)
        if inputs_embeds is None or inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
            shape = None if inputs_embeds is None else tuple(inputs_embeds.shape)
            raise ValueError(f"inputs_embeds must have shape (batch, length, {self.config.hidden_size}), got {shape}.")
        check_float_input("inputs_embeds", inputs_embeds, f"(batch, length, {self.config.hidden_size})")
        if attention_mask is not None:
            attention_mask = validate_padding_mask(attention_mask, *inputs_embeds.shape[:2], "attention_mask")
        mask = build_attention_mask(
            self.config._attn_implementation,
            inputs_embeds,
            key_padding_mask=attention_mask,
            query_padding_mask=attention_mask,
            is_causal=self.config.is_causal,
        )
        hidden_states = in_model_dtype(self, inputs_embeds)
        for block in self.layers:
            hidden_states = block(hidden_states, attention_mask=mask, **kwargs)
        return BaseModelOutput(last_hidden_state=hidden_states)


__all__ = [
    "CLIPResidualAttentionBlock",
    "CLIPResidualTransformerModel",
    "CLIPResidualTransformerPreTrainedModel",
]
