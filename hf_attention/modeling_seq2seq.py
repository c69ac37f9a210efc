"""A GRU encoder-decoder with additive attention (Bahdanau et al., 2015), and its fixed-context baseline.

Data flow: source tokens -> embeddings -> bidirectional GRU (padding packed away) -> encoder states h_j (2 x hidden)
and a summary (both directions' final states). The decoder starts from s_0 = tanh(W summary); at step t it reads a
context c_t -- the additive-attention average of the h_j queried by s_{t-1}, or always the summary in the
fixed-context model -- feeds [embed(y_{t-1}); c_t] to its GRU to get s_t, and predicts y_t from [s_t; c_t].
"""

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import GenerationMixin
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, Seq2SeqLMOutput, Seq2SeqModelOutput
from transformers.utils.generic import can_return_tuple

from .configuration_seq2seq import RecurrentSeq2SeqConfig
from .modeling_additive import AdditiveAttention
from .pretrained import HFAttentionPreTrainedModel


def check_padding_mask(attention_mask: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Lengths of right-padded sequences from a (batch, length) mask of 1 (token) and 0 (padding)."""
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
            f"got {tuple(attention_mask.shape)}."
        )
    keep = attention_mask != 0
    lengths = keep.sum(-1)
    positions = torch.arange(keep.shape[1], device=keep.device)
    if not torch.equal(keep, positions[None, :] < lengths[:, None]):
        raise ValueError("attention_mask must be right-padded: 1 for every token first, then 0 for the padding.")
    if (lengths == 0).any():
        raise ValueError("Every source sequence needs at least one token; attention_mask has a row of zeros.")
    return lengths


class RecurrentSeq2SeqEncoder(nn.Module):
    """Bidirectional GRU; returns every position's state and the summary [forward final; backward final]."""

    def __init__(self, config: RecurrentSeq2SeqConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(
            config.embedding_size,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, length), got {tuple(input_ids.shape)}.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lengths = check_padding_mask(attention_mask, input_ids)
        embedded = self.dropout(self.embed_tokens(input_ids))
        # packing makes the forward direction stop at the last real token and the backward one start there
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        states, final = self.gru(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=input_ids.shape[1])
        summary = torch.cat((final[-2], final[-1]), dim=-1)  # last layer, forward and backward directions
        return BaseModelOutputWithPooling(last_hidden_state=states, pooler_output=summary)


class RecurrentSeq2SeqDecoder(nn.Module):
    """GRU decoder that reads a context at every step: attention over the encoder states, or a fixed summary."""

    def __init__(self, config: RecurrentSeq2SeqConfig):
        super().__init__()
        context_size = 2 * config.hidden_size
        self.num_layers = config.num_layers
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.dropout = nn.Dropout(config.dropout)
        self.init_state = nn.Linear(context_size, config.hidden_size)
        self.attention = None
        if config.context == "additive":
            self.attention = AdditiveAttention(
                config.hidden_size, context_size, config.attention_hidden_size, dropout=config.attention_dropout
            )
        self.gru = nn.GRU(
            config.embedding_size + context_size,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )

    def forward(
        self,
        decoder_input_ids: torch.Tensor,
        encoder_states: torch.Tensor,
        encoder_summary: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features [s_t; c_t] (batch, target_length, 3 x hidden) and the attention weights (batch, target, source)."""
        embedded = self.dropout(self.embed_tokens(decoder_input_ids))
        state = torch.tanh(self.init_state(encoder_summary)).expand(self.num_layers, -1, -1).contiguous()
        if self.attention is None:  # the same context at every step: one GRU call over the whole sequence
            contexts = encoder_summary[:, None, :].expand(-1, embedded.shape[1], -1)
            outputs, _ = self.gru(torch.cat((embedded, contexts), dim=-1), state)
            return torch.cat((outputs, contexts), dim=-1), None
        outputs, contexts, weights = [], [], []
        for step in range(embedded.shape[1]):  # the query of step t is the state left by step t-1
            context, step_weights = self.attention(
                state[-1][:, None, :], encoder_states, attention_mask=encoder_attention_mask, output_attentions=True
            )
            output, state = self.gru(torch.cat((embedded[:, step : step + 1], context), dim=-1), state)
            outputs.append(output)
            contexts.append(context)
            weights.append(step_weights)
        features = torch.cat((torch.cat(outputs, dim=1), torch.cat(contexts, dim=1)), dim=-1)
        return features, (torch.cat(weights, dim=1) if output_attentions else None)


class RecurrentSeq2SeqPreTrainedModel(HFAttentionPreTrainedModel):
    config: RecurrentSeq2SeqConfig
    config_class = RecurrentSeq2SeqConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    input_modalities = ("text",)
    supports_gradient_checkpointing = False  # recurrent steps, no layers to checkpoint between
    _no_split_modules = ["RecurrentSeq2SeqEncoder", "RecurrentSeq2SeqDecoder"]
    # additive attention and GRUs: no dot-product kernel applies
    _supports_sdpa = False
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False
    _can_compile_fullgraph = False  # packed sequences and a Python loop over the target steps
    accepts_loss_kwargs = False  # the loss is a mean over label tokens: Trainer scales it for gradient accumulation

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """A deterministic small batch that fits the config (transformers' convention for example inputs)."""
        generator = torch.Generator().manual_seed(0)
        input_ids = torch.randint(3, self.config.vocab_size, (2, 5), generator=generator)
        attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
        decoder_input_ids = torch.randint(3, self.config.vocab_size, (2, 4), generator=generator)
        decoder_input_ids[:, 0] = self.config.decoder_start_token_id
        return {"input_ids": input_ids, "attention_mask": attention_mask, "decoder_input_ids": decoder_input_ids}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # linear and embedding
        if isinstance(module, nn.GRU):  # transformers' default initialises LSTMs only
            for name, parameter in module.named_parameters():
                if name.startswith("weight_ih"):
                    init.xavier_uniform_(parameter)
                elif name.startswith("weight_hh"):
                    init.orthogonal_(parameter)  # keeps the recurrence from blowing up or dying out
                else:
                    init.zeros_(parameter)


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Teacher forcing: the decoder reads [start, y_1, ..., y_{T-1}] to predict [y_1, ..., y_T]."""
    shifted = labels.new_full(labels.shape, decoder_start_token_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == -100, pad_token_id)


class RecurrentSeq2SeqModel(RecurrentSeq2SeqPreTrainedModel):
    """Encoder and decoder; `last_hidden_state` holds the decoder features [s_t; c_t] the LM head reads."""

    def __init__(self, config: RecurrentSeq2SeqConfig):
        super().__init__(config)
        self.encoder = RecurrentSeq2SeqEncoder(config)
        self.decoder = RecurrentSeq2SeqDecoder(config)
        self.post_init()

    def get_encoder(self, modality: str | None = None) -> nn.Module:
        return self.encoder

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.embed_tokens

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutputWithPooling | tuple | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> Seq2SeqModelOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, source_length)`):
            Source tokens, right-padded.
        attention_mask (`torch.Tensor` of shape `(batch_size, source_length)`, *optional*):
            1 for source tokens, 0 for the padding after them.
        decoder_input_ids (`torch.LongTensor` of shape `(batch_size, target_length)`):
            Target tokens shifted right, starting with `decoder_start_token_id`.
        encoder_outputs (*optional*):
            The encoder's output, to decode again without re-encoding (what `generate()` does).
        """
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids are required (or pass labels to the ForConditionalGeneration head).")
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("Pass input_ids (the source tokens) or precomputed encoder_outputs.")
            encoder_outputs = self.encoder(input_ids, attention_mask)
        elif isinstance(encoder_outputs, tuple):
            encoder_outputs = BaseModelOutputWithPooling(*encoder_outputs)
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        features, weights = self.decoder(
            decoder_input_ids,
            encoder_outputs.last_hidden_state,
            encoder_outputs.pooler_output,
            attention_mask,
            output_attentions=output_attentions,
        )
        return Seq2SeqModelOutput(
            last_hidden_state=features,
            cross_attentions=None if weights is None else (weights[:, None],),  # one layer, one head
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
        )


class RecurrentSeq2SeqForConditionalGeneration(RecurrentSeq2SeqPreTrainedModel, GenerationMixin):
    """The encoder-decoder with a linear LM head over [s_t; c_t]; trains with Trainer, decodes with `generate()`.

    The decoder keeps no cache: each generation step re-reads the whole target prefix (O(length) per step), which
    keeps greedy, sampling and beam search exact without a recurrent-state cache to reorder between beams.
    """

    def __init__(self, config: RecurrentSeq2SeqConfig):
        super().__init__(config)
        self.model = RecurrentSeq2SeqModel(config)
        self.lm_head = nn.Linear(3 * config.hidden_size, config.vocab_size)
        self.post_init()

    def get_encoder(self, modality: str | None = None) -> nn.Module:
        return self.model.encoder

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # a GRU state is not a key/value cache

    def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None, past_key_values=None, **kwargs):
        # never slice the prefix to its last token: without a cache the decoder needs all of it
        return super().prepare_inputs_for_generation(input_ids, next_sequence_length=None, **kwargs)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutputWithPooling | tuple | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, target_length)`, *optional*):
            Target tokens ending with `eos_token_id`, -100 where no loss is wanted (padding). When given without
            `decoder_input_ids`, the decoder reads the labels shifted right (teacher forcing).
        """
        if labels is not None and decoder_input_ids is None:
            decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)
        outputs = self.model(
            input_ids,
            attention_mask,
            decoder_input_ids=decoder_input_ids,
            encoder_outputs=encoder_outputs,
            output_attentions=output_attentions,
        )
        logits = self.lm_head(outputs.last_hidden_state)
        loss = None
        if labels is not None:  # labels are already aligned with the logits: no causal-LM shift
            loss = nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
        )


__all__ = [
    "RecurrentSeq2SeqForConditionalGeneration",
    "RecurrentSeq2SeqModel",
    "RecurrentSeq2SeqPreTrainedModel",
]
