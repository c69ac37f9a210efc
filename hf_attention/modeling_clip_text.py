"""CLIP's text model (Radford et al., 2021), the one text encoder of the image-text and the video-text families.

Data flow:
input_ids -> token embeddings + position embeddings -> CLIP residual attention blocks (causal in CLIP), each
    x + self_attn(layer_norm1(x)), then x + mlp(layer_norm2(x))
-> final layer norm -> last_hidden_state
-> the state of one token per text, `config.pooling`'s (CLIP's end-of-text token, the last or the first real token)
-> pooler_output.
The layers carry transformers' CLIPTextModel names, so its weights load with the embeddings and encoder prefixes
dropped (`hf_attention.from_transformers` does it).
"""

from typing import Unpack

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import TransformersKwargs
from transformers.utils.output_capturing import capture_outputs

from .attention import MultiHeadAttention
from .checks import check_input_ids, check_position_ids
from .configuration_clip_text import CLIPResidualTextConfig
from .masks import build_attention_mask, validate_padding_mask
from .modeling_clip_residual import CLIPResidualAttentionBlock
from .pretrained import HFAttentionPreTrainedModel, resolve_forward_kwargs


class CLIPResidualTextModel(HFAttentionPreTrainedModel):
    """CLIP's text model: token + position embeddings -> CLIP residual blocks -> final layer norm -> pooled token.

    `pooler_output` is the state of the token `config.pooling` names; a text that is all padding pools to zeros.
    """

    config: CLIPResidualTextConfig
    config_class = CLIPResidualTextConfig
    base_model_prefix = "text_model"
    main_input_name = "input_ids"
    input_modalities = ("text",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPResidualAttentionBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": CLIPResidualAttentionBlock, "attentions": MultiHeadAttention}

    def __init__(self, config: CLIPResidualTextConfig):
        super().__init__(config)
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        num_layers = config.num_hidden_layers
        self.layers = nn.ModuleList(CLIPResidualAttentionBlock.from_config(config) for _ in range(num_layers))
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.token_embedding

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.token_embedding = value

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        input_ids = torch.randint(1, self.config.vocab_size, (2, 5), generator=generator)
        return {"input_ids": input_ids, "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])}

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, length)`):
            Token ids from the tokenizer.
        attention_mask (`torch.Tensor` of shape `(batch_size, length)`, *optional*):
            1 for tokens to keep, 0 for padding. Padded tokens neither give nor take attention and are never pooled.
        position_ids (`torch.LongTensor` of shape `(batch_size, length)`, *optional*):
            Positions of the tokens; 0, 1, 2, ... by default.
        token_type_ids (`torch.LongTensor`, *optional*):
            Accepted because BERT-style tokenizers return it; this model has one segment, so only zeros are allowed.
        """
        kwargs = resolve_forward_kwargs(self, kwargs)
        keeps = self._check_inputs(input_ids, attention_mask, token_type_ids)
        length = input_ids.shape[1]
        if position_ids is None:
            position_ids = torch.arange(length, device=input_ids.device)[None]
        check_position_ids(position_ids, input_ids.shape[0], length, self.config.max_position_embeddings)
        hidden_states = self.token_embedding(input_ids) + self.position_embedding(position_ids)
        mask = build_attention_mask(
            self.config._attn_implementation,
            hidden_states,
            key_padding_mask=keeps,
            query_padding_mask=keeps,
            is_causal=self.config.is_causal,
        )
        for block in self.layers:
            hidden_states = block(hidden_states, attention_mask=mask, **kwargs)
        hidden_states = self.final_layer_norm(hidden_states)
        pooled = pool_text(hidden_states, input_ids, keeps, self.config.pooling)
        return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=pooled)

    def _check_inputs(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor | None:
        """Refuse inputs this model would read wrongly; returns the padding mask as bool (True keeps), or None."""
        if input_ids is None:
            raise ValueError("input_ids is required: a (batch, length) tensor of token ids from the tokenizer.")
        check_input_ids(input_ids, self.config.vocab_size)
        batch_size, length = input_ids.shape
        if length > self.config.max_position_embeddings:
            raise ValueError(
                f"The texts are {length} tokens long but the model covers max_position_embeddings="
                f"{self.config.max_position_embeddings}; truncate them "
                "(tokenizer(..., truncation=True, max_length=...))."
            )
        if token_type_ids is not None and bool((token_type_ids != 0).any()):
            raise ValueError("This text model has a single segment: token_type_ids must be all zeros (or not passed).")
        if attention_mask is None:
            return None
        return validate_padding_mask(attention_mask, batch_size, length, "attention_mask")


def pool_text(
    hidden_states: torch.Tensor, input_ids: torch.Tensor, keeps: torch.Tensor | None, pooling: str
) -> torch.Tensor:
    """The (batch, hidden) state of one token per text, chosen by `pooling` among the real tokens (`keeps`, True for
    a real token; None: all are real); zeros for a text with no real token."""
    if keeps is None:
        keeps = torch.ones_like(input_ids, dtype=torch.bool)
    if pooling == "end_of_text":  # CLIP's end-of-text token is the last id of its vocabulary
        index = input_ids.masked_fill(~keeps, -1).argmax(dim=-1)
    elif pooling == "last_token":  # counted from the end, so left padding pools the right token too
        index = keeps.shape[1] - 1 - keeps.flip(-1).long().argmax(dim=-1)
    elif pooling == "first_token":
        index = keeps.long().argmax(dim=-1)
    else:
        raise ValueError(f"Unknown text pooling {pooling!r}.")
    pooled = hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), index]
    return torch.where(keeps.any(dim=-1, keepdim=True), pooled, 0.0)


__all__ = ["CLIPResidualTextModel"]
