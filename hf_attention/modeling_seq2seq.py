"""A GRU encoder-decoder with additive attention (Bahdanau et al., 2015), and its fixed-context baseline.

Data flow: source tokens -> embeddings -> bidirectional GRU (padding packed away) -> encoder states h_j (2 x hidden)
and a summary (both directions' final states). The decoder starts from s_0 = tanh(W summary); at step t it reads a
context c_t -- the additive-attention average of the h_j queried by s_{t-1}, or always the summary in the
fixed-context model -- feeds [embed(y_{t-1}); c_t] to its GRU to get s_t, and predicts y_t from [s_t; c_t].
"""

import inspect
from typing import Unpack

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from transformers import GenerationMixin
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, Seq2SeqLMOutput, Seq2SeqModelOutput
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .checks import check_input_ids, is_compiling
from .configuration_seq2seq import RecurrentSeq2SeqConfig
from .masks import validate_padding_mask
from .modeling_additive import AdditiveAttention
from .pretrained import FORWARD_KWARGS, HFAttentionPreTrainedModel, check_labels, resolve_forward_kwargs


def source_lengths(attention_mask: torch.Tensor | None, input_ids: torch.Tensor) -> torch.Tensor:
    """Lengths of right-padded sequences from a (batch, length) mask of 1 (token) and 0 (padding)."""
    if attention_mask is None:
        return torch.full(input_ids.shape[:1], input_ids.shape[1], dtype=torch.long, device=input_ids.device)
    keep = validate_padding_mask(attention_mask, *input_ids.shape, "attention_mask").to(input_ids.device)
    lengths = keep.sum(-1)
    positions = torch.arange(keep.shape[1], device=keep.device)
    if is_compiling():  # data-dependent checks would break the graph
        return lengths
    if not torch.equal(keep, positions[None, :] < lengths[:, None]):
        raise ValueError("attention_mask must be right-padded: 1 for every token first, then 0 for the padding.")
    if (lengths == 0).any():
        raise ValueError("Every source sequence needs at least one token; attention_mask has a row of zeros.")
    return lengths


def check_token_ids(name: str, token_ids: torch.Tensor, vocab_size: int) -> None:
    check_input_ids(token_ids, vocab_size, name)
    if token_ids.shape[1] == 0:
        raise ValueError(f"`{name}` is an empty sequence (length 0); it needs at least one token.")


def gru_layer_by_layer(gru: nn.GRU, inputs, state: torch.Tensor | None = None):
    """`gru(inputs, state)`, plus the output of every layer (nn.GRU returns the last layer's only).

    Each layer runs with the GRU's own weights through a one-layer template on the meta device, so the weights and
    their checkpoint names stay those of the one multi-layer `nn.GRU`. Dropout between layers as in `nn.GRU`.
    """
    directions = 2 if gru.bidirectional else 1
    outputs, finals = [], []
    for layer in range(gru.num_layers):
        template = nn.GRU(
            inputs.data.shape[-1] if isinstance(inputs, PackedSequence) else inputs.shape[-1],
            gru.hidden_size,
            batch_first=gru.batch_first,
            bidirectional=gru.bidirectional,
            device="meta",
        )
        weights = {name: getattr(gru, name.replace("_l0", f"_l{layer}")) for name in template._flat_weights_names}
        layer_state = None if state is None else state[layer * directions : (layer + 1) * directions]
        inputs, final = functional_call(template, weights, (inputs, layer_state))
        outputs.append(inputs)
        finals.append(final)
        if gru.training and gru.dropout and layer < gru.num_layers - 1:
            dropped = nn.functional.dropout(inputs.data if isinstance(inputs, PackedSequence) else inputs, gru.dropout)
            inputs = inputs._replace(data=dropped) if isinstance(inputs, PackedSequence) else dropped
    return inputs, torch.cat(finals), outputs


class RecurrentSeq2SeqEncoder(nn.Module):
    """Bidirectional GRU; returns every position's state and the summary [forward final; backward final]."""

    def __init__(self, config: RecurrentSeq2SeqConfig):
        super().__init__()
        self.vocab_size = config.vocab_size
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
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        return_dict: bool = True,
    ) -> BaseModelOutputWithPooling:
        """`hidden_states`, when asked for: the embeddings, then every GRU layer's states (num_layers + 1).

        `output_attentions` and `return_dict` are what `generate()` passes to every encoder: this one computes no
        attention and always returns a `BaseModelOutputWithPooling`.
        """
        check_token_ids("input_ids", input_ids, self.embed_tokens.num_embeddings)
        lengths = source_lengths(attention_mask, input_ids)
        embedded = self.dropout(self.embed_tokens(input_ids))
        # packing makes the forward direction stop at the last real token and the backward one start there; an
        # empty batch has nothing to pack
        is_empty = input_ids.shape[0] == 0
        inputs = embedded if is_empty else pack_padded_sequence(embedded, lengths.cpu(), True, enforce_sorted=False)
        if output_hidden_states:
            _, final, layers = gru_layer_by_layer(self.gru, inputs)
        else:
            states, final = self.gru(inputs)
            layers = [states]
        if not is_empty:
            layers = [pad_packed_sequence(layer, True, total_length=input_ids.shape[1])[0] for layer in layers]
        summary = torch.cat((final[-2], final[-1]), dim=-1)  # last layer, forward and backward directions
        return BaseModelOutputWithPooling(
            last_hidden_state=layers[-1],
            pooler_output=summary,
            hidden_states=(embedded, *layers) if output_hidden_states else None,
        )


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
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, ...] | None]:
        """Features [s_t; c_t] (batch, target_length, 3 x hidden), the attention weights (batch, 1, target, source)
        and, when asked for, the hidden states: the target embeddings, then every GRU layer's states s_t."""
        check_token_ids("decoder_input_ids", decoder_input_ids, self.embed_tokens.num_embeddings)
        embedded = self.dropout(self.embed_tokens(decoder_input_ids))
        state = torch.tanh(self.init_state(encoder_summary)).expand(self.num_layers, -1, -1).contiguous()
        if self.attention is None:  # the same context at every step: one GRU call over the whole sequence
            contexts = encoder_summary[:, None, :].expand(-1, embedded.shape[1], -1)
            inputs = torch.cat((embedded, contexts), dim=-1)
            if output_hidden_states:
                outputs, _, layers = gru_layer_by_layer(self.gru, inputs, state)
            else:
                outputs, layers = self.gru(inputs, state)[0], None
            return torch.cat((outputs, contexts), dim=-1), None, (embedded, *layers) if layers else None
        outputs, contexts, weights, states = [], [], [], []
        for step in range(embedded.shape[1]):  # the query of step t is the state left by step t-1
            context, step_weights = self.attention(
                state[-1][:, None, :], encoder_states, None, encoder_attention_mask, output_attentions=True
            )
            output, state = self.gru(torch.cat((embedded[:, step : step + 1], context), dim=-1), state)
            outputs.append(output)
            contexts.append(context)
            weights.append(step_weights)
            states.append(state)
        features = torch.cat((torch.cat(outputs, dim=1), torch.cat(contexts, dim=1)), dim=-1)
        hidden_states = None
        if output_hidden_states:  # a step's new state of layer l is that layer's output at the step
            hidden_states = (embedded, *torch.stack(states, dim=2).unbind(0))
        return features, (torch.cat(weights, dim=2) if output_attentions else None), hidden_states


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

    def get_encoder(self, modality: str | None = None) -> nn.Module:
        return self.base_model.encoder

    def get_decoder(self, modality: str | None = None) -> nn.Module:
        return self.base_model.decoder

    def get_input_embeddings(self) -> nn.Module:
        """The source token table (the decoder has its own: `get_decoder().embed_tokens`)."""
        return self.base_model.encoder.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.base_model.encoder.embed_tokens = value

    def _resize_token_embeddings(self, new_num_tokens, pad_to_multiple_of=None, mean_resizing=True):
        """Resize the source table (and the LM head) as transformers does, then the target table to the same size."""
        old_target = self.get_decoder().embed_tokens
        source = super()._resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        target = self._get_resized_embeddings(old_target, source.weight.shape[0], mean_resizing=mean_resizing)
        target.requires_grad_(old_target.weight.requires_grad)
        self.get_decoder().embed_tokens = target
        return source

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
    """Encoder and decoder; `last_hidden_state` holds the decoder features [s_t; c_t] the LM head reads.

    Outputs on request: `encoder_hidden_states` (source embeddings, then each encoder GRU layer's states: num_layers
    + 1), `decoder_hidden_states` (target embeddings, then each decoder GRU layer's states s_t), and
    `cross_attentions`, one (batch, 1, target_length, source_length) map: one layer, one head.
    """

    def __init__(self, config: RecurrentSeq2SeqConfig):
        super().__init__(config)
        self.encoder = RecurrentSeq2SeqEncoder(config)
        self.decoder = RecurrentSeq2SeqDecoder(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutputWithPooling | tuple | None = None,
        **kwargs: Unpack[TransformersKwargs],
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
        kwargs = resolve_forward_kwargs(self, kwargs)
        output_hidden_states = bool(kwargs["output_hidden_states"])
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids are required (or pass labels to the ForConditionalGeneration head).")
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("Pass input_ids (the source tokens) or precomputed encoder_outputs.")
            encoder_outputs = self.encoder(input_ids, attention_mask, output_hidden_states=output_hidden_states)
        elif isinstance(encoder_outputs, tuple):
            encoder_outputs = BaseModelOutputWithPooling(*encoder_outputs)
        source_batch = encoder_outputs.last_hidden_state.shape[0]
        if decoder_input_ids.dim() and decoder_input_ids.shape[0] != source_batch:
            raise ValueError(
                f"decoder_input_ids hold {decoder_input_ids.shape[0]} sequences but the source batch (input_ids or "
                f"encoder_outputs) holds {source_batch}; pass one target sequence per source sequence."
            )
        features, weights, decoder_hidden_states = self.decoder(
            decoder_input_ids,
            encoder_outputs.last_hidden_state,
            encoder_outputs.pooler_output,
            attention_mask,
            output_attentions=bool(kwargs["output_attentions"]),
            output_hidden_states=output_hidden_states,
        )
        return Seq2SeqModelOutput(
            last_hidden_state=features,
            decoder_hidden_states=decoder_hidden_states,
            cross_attentions=None if weights is None else (weights,),
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states if output_hidden_states else None,
        )


def token_loss(labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the label tokens that are not -100 (already aligned with the logits: no causal-LM
    shift); a batch whose labels are all -100 gives 0, never NaN."""
    labels = labels.to(logits.device).flatten().long()  # any integer dtype: cross_entropy takes int64 only
    total = nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels, ignore_index=-100, reduction="sum")
    return total / (labels != -100).sum().clamp(min=1)


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

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # a GRU state is not a key/value cache

    def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None, past_key_values=None, **kwargs):
        # never slice the prefix to its last token: without a cache the decoder needs all of it
        inputs = super().prepare_inputs_for_generation(input_ids, next_sequence_length=None, **kwargs)
        parameters = inspect.signature(self.forward).parameters
        return {name: value for name, value in inputs.items() if name in parameters or name in FORWARD_KWARGS}

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutputWithPooling | tuple | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> Seq2SeqLMOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, target_length)`, *optional*):
            Target tokens ending with `eos_token_id`, -100 where no loss is wanted (padding). When given without
            `decoder_input_ids`, the decoder reads the labels shifted right (teacher forcing).
        """
        if labels is not None:  # before the shift, so that a bad label is reported as a label
            logits_shape = torch.empty(*labels.shape, self.config.vocab_size, device="meta")
            check_labels(labels, logits_shape, "single_label_classification")
            if input_ids is not None and labels.dim() and labels.shape[0] != input_ids.shape[0]:
                raise ValueError(
                    f"labels hold {labels.shape[0]} sequences but input_ids hold {input_ids.shape[0]}; pass one target "
                    "sequence per source sequence."
                )
        if labels is not None and decoder_input_ids is None:
            decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)
        elif labels is not None and labels.shape != decoder_input_ids.shape:
            raise ValueError(
                f"labels {tuple(labels.shape)} must have the shape of decoder_input_ids "
                f"{tuple(decoder_input_ids.shape)}: one label per decoder step, (batch, target_length)."
            )
        outputs = self.model(
            input_ids,
            attention_mask,
            decoder_input_ids=decoder_input_ids,
            encoder_outputs=encoder_outputs,
            **kwargs,
        )
        logits = self.lm_head(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = token_loss(labels, logits)
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            decoder_hidden_states=outputs.decoder_hidden_states,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
        )


__all__ = [
    "RecurrentSeq2SeqForConditionalGeneration",
    "RecurrentSeq2SeqModel",
    "RecurrentSeq2SeqPreTrainedModel",
]
