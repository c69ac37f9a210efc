"""Multi-head scaled dot-product attention (Vaswani et al., 2017) as a model of its own.

Data flow: tokens (batch, length, hidden) -> Q/K/V projections -> per head softmax(Q K^T / sqrt(d)) V, with padded
keys masked and dropout on the weights in training -> heads concatenated -> output projection. Self-attention by
default; cross-attention when `encoder_hidden_states` are given. `num_attention_heads=1` is single-head attention.
The layer itself is `hf_attention.MultiHeadAttention`; this file gives it a config and a `PreTrainedModel`.
"""

from typing import Unpack

import torch
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import TransformersKwargs
from transformers.utils.output_capturing import capture_outputs

from .attention import MultiHeadAttention
from .configuration_mha import MultiHeadAttentionConfig
from .masks import build_attention_mask, validate_padding_mask
from .pretrained import HFAttentionPreTrainedModel, in_model_dtype, resolve_forward_kwargs


class MultiHeadAttentionPreTrainedModel(HFAttentionPreTrainedModel):
    config: MultiHeadAttentionConfig
    config_class = MultiHeadAttentionConfig
    base_model_prefix = "mha"
    main_input_name = "inputs_embeds"
    supports_gradient_checkpointing = False  # a single layer: there is nothing to checkpoint between
    _no_split_modules = ["MultiHeadAttention"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    # one layer: hidden states are its input and its output; attentions (batch, heads, queries, keys)
    _can_record_outputs = {"hidden_states": MultiHeadAttention, "attentions": MultiHeadAttention}

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """A deterministic small padded batch that fits the config (transformers' convention for example inputs)."""
        generator = torch.Generator().manual_seed(0)
        inputs = {
            "inputs_embeds": torch.randn(2, 5, self.config.hidden_size, generator=generator),
            "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
        }
        if self.config.encoder_hidden_size is not None:  # a cross-attention config: give it a context to read
            inputs["encoder_hidden_states"] = torch.randn(2, 6, self.config.encoder_hidden_size, generator=generator)
            inputs["encoder_attention_mask"] = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
        return inputs


class MultiHeadAttentionModel(MultiHeadAttentionPreTrainedModel):
    """One multi-head attention layer; `attentions` holds its (batch, heads, query_length, key_length) weights and
    `hidden_states` its input and output (num_layers + 1 = 2 entries)."""

    def __init__(self, config: MultiHeadAttentionConfig):
        super().__init__(config)
        self.attention = MultiHeadAttention(
            config.hidden_size,
            config.num_attention_heads,
            key_dim=config.encoder_hidden_size,
            dropout=config.attention_dropout,
            bias=config.qkv_bias,
            output_bias=config.output_bias,
            is_causal=config.is_causal,
            config=config,
        )
        self.post_init()

    @capture_outputs
    def forward(
        self,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        r"""
        inputs_embeds (`torch.Tensor` of shape `(batch_size, query_length, hidden_size)`):
            The tokens that attend (and, in self-attention, are attended to).
        attention_mask (`torch.Tensor` of shape `(batch_size, query_length)`, *optional*):
            1 for tokens of `inputs_embeds` to keep, 0 for padding. Padded tokens output zeros; in self-attention
            they are also hidden as keys.
        encoder_hidden_states (`torch.Tensor` of shape `(batch_size, key_length, encoder_hidden_size)`, *optional*):
            A context to attend to instead of `inputs_embeds` (cross-attention).
        encoder_attention_mask (`torch.Tensor` of shape `(batch_size, key_length)`, *optional*):
            1 for context tokens to keep, 0 for padding. A query whose whole context is padding outputs zeros.
        """
        kwargs = resolve_forward_kwargs(self, kwargs)
        if inputs_embeds is None:
            raise ValueError("inputs_embeds is required: a (batch, length, hidden_size) tensor.")
        is_cross = encoder_hidden_states is not None
        if encoder_attention_mask is not None and not is_cross:
            raise ValueError("encoder_attention_mask was given without encoder_hidden_states to apply it to.")
        if is_cross and self.config.is_causal:
            raise ValueError("is_causal=True applies to self-attention only; got encoder_hidden_states.")
        inputs_embeds, encoder_hidden_states = (
            in_model_dtype(self, inputs_embeds),
            in_model_dtype(self, encoder_hidden_states),
        )
        keys = encoder_hidden_states if is_cross else inputs_embeds
        if inputs_embeds.dim() != 3 or keys.dim() != 3:
            raise ValueError(
                f"inputs_embeds and encoder_hidden_states must be (batch, length, width) tensors, got shapes "
                f"{tuple(inputs_embeds.shape)} and {tuple(keys.shape)}."
            )
        if attention_mask is not None:
            attention_mask = validate_padding_mask(attention_mask, *inputs_embeds.shape[:2], "attention_mask")
        if encoder_attention_mask is not None:
            encoder_attention_mask = validate_padding_mask(
                encoder_attention_mask, *keys.shape[:2], "encoder_attention_mask"
            )
        mask = build_attention_mask(
            self.config._attn_implementation,
            inputs_embeds,
            keys,
            key_padding_mask=encoder_attention_mask if is_cross else attention_mask,
            query_padding_mask=attention_mask,
            is_causal=self.config.is_causal,
        )
        output, _ = self.attention(inputs_embeds, encoder_hidden_states, mask, **kwargs)
        return BaseModelOutput(last_hidden_state=output)


__all__ = ["MultiHeadAttentionModel", "MultiHeadAttentionPreTrainedModel"]
