"""The layers several families share: a transformer MLP, stochastic depth, the attention-map recorder and the
contrastive loss. Plain torch layers inside, named as transformers names them (`fc1`, `fc2`)."""

import torch
from torch import nn
from transformers.activations import ACT2FN

from .checks import check_probability, check_sizes


class FeedForward(nn.Module):
    """A transformer layer's MLP: fc2(dropout(activation(fc1(x)))).

    Args:
        hidden_size: width of the input and the output.
        intermediate_size: width of the hidden layer.
        hidden_act: activation, a key of `transformers.activations.ACT2FN`.
        dropout: dropout on the activations, in [0, 1) (DETR's `activation_dropout`).
    """

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str, dropout: float = 0.0):
        super().__init__()
        check_sizes(hidden_size=hidden_size, intermediate_size=intermediate_size)
        check_probability("dropout", dropout)
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.activation_fn = ACT2FN[hidden_act]
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.activation_fn(self.fc1(hidden_states))))


def drop_path(hidden_states: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a whole residual branch per sample, rescaling the survivors."""
    if drop_prob == 0.0 or not training:
        return hidden_states
    keep_prob = 1.0 - drop_prob
    shape = (hidden_states.shape[0],) + (1,) * (hidden_states.dim() - 1)
    keep = hidden_states.new_empty(shape).bernoulli_(keep_prob)
    return hidden_states * keep / keep_prob


class AttentionMap(nn.Module):
    """Passes attention probabilities through unchanged.

    Blocks that compute their own maps send them through one of these before using them, so `output_attentions=True`
    records (with transformers' output capturing) the very tensor the output is computed from: `retain_grad()` on it
    works.
    """

    def forward(self, probabilities: torch.Tensor) -> torch.Tensor:
        return probabilities


def normalize_embeddings(embeddings: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last dimension, in float32 and back: a zero vector (a text with no real token) stays zero.

    In half precision `F.normalize`'s epsilon (1e-12) rounds to 0, so a zero vector would give 0 / 0 = NaN."""
    return nn.functional.normalize(embeddings.float(), dim=-1).to(embeddings.dtype)


def contrastive_loss(logits: torch.Tensor, rows: str = "image", columns: str = "text") -> torch.Tensor:
    """CLIP's symmetric InfoNCE over matched pairs (row i with column i): the mean of both directions' cross-entropy,
    in float32. `rows` and `columns` name what the logits score, for the error message."""
    num_rows, num_columns = logits.shape
    if num_rows != num_columns:
        raise ValueError(
            f"The contrastive loss needs matched pairs ({rows} i with {columns} i): got {num_rows} {rows}s and "
            f"{num_columns} {columns}s."
        )
    targets = torch.arange(num_rows, device=logits.device)
    logits = logits.float()
    return (nn.functional.cross_entropy(logits, targets) + nn.functional.cross_entropy(logits.T, targets)) / 2


__all__ = ["AttentionMap", "FeedForward", "contrastive_loss", "drop_path", "normalize_embeddings"]
