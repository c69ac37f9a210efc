"""Configuration of the recurrent encoder-decoder with additive attention (Bahdanau et al., 2015)."""

from huggingface_hub.dataclasses import strict

from .checks import check_positive, check_probability
from .configuration_base import HFAttentionConfig

CONTEXT_TYPES = ("additive", "fixed")


@strict
class RecurrentSeq2SeqConfig(HFAttentionConfig):
    r"""
    Configuration of [`RecurrentSeq2SeqModel`] and [`RecurrentSeq2SeqForConditionalGeneration`]: a bidirectional GRU
    encoder and a GRU decoder. With `context="additive"` the decoder reads a new context at every step, an additive
    attention average of the encoder states queried by its own state (Bahdanau et al., 2015); with
    `context="fixed"` every step reads the same context, the encoder's final states (Cho et al., 2014): the fixed-
    length bottleneck that attention was invented to remove.

    Args:
        vocab_size (`int`, defaults to 16):
            Number of tokens; source and target share the ids (each side has its own embedding table).
        embedding_size (`int`, defaults to 64):
            Width of the token embeddings.
        hidden_size (`int`, defaults to 128):
            Width of the GRU states; the bidirectional encoder's states have twice this width.
        num_layers (`int`, defaults to 1):
            GRU layers of the encoder and of the decoder.
        context (`str`, defaults to `"additive"`):
            `"additive"` (attention over the encoder states at every step) or `"fixed"` (one context vector).
        attention_hidden_size (`int`, defaults to 128):
            Hidden units of the additive scoring MLP.
        dropout (`float`, defaults to 0.0):
            Dropout on the embeddings and between GRU layers, in [0, 1).
        attention_dropout (`float`, defaults to 0.0):
            Dropout on the attention weights, in [0, 1).
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of embeddings and linear layers (GRU weights use
            Xavier / orthogonal initialisation).
        pad_token_id (`int`, defaults to 0):
            Padding token.
        bos_token_id (`int`, defaults to 1):
            Beginning-of-sequence token.
        eos_token_id (`int`, defaults to 2):
            End-of-sequence token; generation stops at it.
        decoder_start_token_id (`int`, defaults to 1):
            The token generation starts from.

    Example:

    ```python
    >>> from hf_attention import RecurrentSeq2SeqConfig, RecurrentSeq2SeqForConditionalGeneration
    >>> model = RecurrentSeq2SeqForConditionalGeneration(RecurrentSeq2SeqConfig(vocab_size=13, hidden_size=64))
    >>> model.generate(input_ids, max_new_tokens=12)  # input_ids: (batch, length) source tokens
    ```
    """

    model_type = "hf_attention_gru_seq2seq"

    vocab_size: int = 16
    embedding_size: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    context: str = "additive"
    attention_hidden_size: int = 128
    dropout: float | int = 0.0
    attention_dropout: float | int = 0.0
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    decoder_start_token_id: int | None = 1
    is_encoder_decoder: bool = True
    tie_word_embeddings: bool = False

    @classmethod
    def tiny(cls, **overrides) -> "RecurrentSeq2SeqConfig":
        """A configuration of a few hundred parameters for tests and demos (every REGISTRY config has one)."""
        return cls(
            **{"vocab_size": 13, "embedding_size": 8, "hidden_size": 16, "attention_hidden_size": 8, **overrides}
        )

    def validate_architecture(self):
        """Part of `@strict` validation: impossible settings fail at construction, with the reason."""
        super().validate_architecture()
        check_positive("num_layers", self.num_layers)  # the base allows 0 layers; a GRU needs one
        for name in ("dropout", "attention_dropout"):
            check_probability(name, getattr(self, name))
        if self.context not in CONTEXT_TYPES:
            raise ValueError(f"`context` must be one of {CONTEXT_TYPES}, got {self.context!r}.")
        # the base checks every single `*_token_id`; generation also takes a list of end tokens
        if isinstance(self.eos_token_id, list) and not all(0 <= token < self.vocab_size for token in self.eos_token_id):
            raise ValueError(f"`eos_token_id` must be token ids in [0, {self.vocab_size}), got {self.eos_token_id}.")


__all__ = ["RecurrentSeq2SeqConfig"]
