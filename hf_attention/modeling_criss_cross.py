"""CCNet's recurrent criss-cross attention (Huang et al., 2019): each position attends to its row and column.

Data flow: x -> query, key (1x1 convolutions to channels // reduction) and value (1x1) -> column scores
(b, h, w, h) and row scores (b, h, w, w), one joint softmax (the position itself dropped from its column, so it is
counted once) -> weighted sum of the values of the cross -> x + gamma * that, `recurrence` times with the same
weights. Memory is O(hw(h + w)), not O((hw)^2); scores are computed in float32 whatever the input dtype.

`output_attentions=True` returns one map per pass, (batch, 1, h * w, h + w): for query position (i, j) in row-major
order, first its weights over column j (rows g = 0..h-1; the entry g = i is 0, the position counts in its row),
then over row i (columns v = 0..w-1). Each row sums to 1. `hf_attention.apps.attention_maps.criss_cross_dense`
turns it into (h*w, h*w).
"""

import torch
from torch import nn
from transformers import initialization as init

from .checks import check_feature_map, check_reduction, check_sizes, reduced
from .configuration_criss_cross import CrissCrossAttentionConfig
from .feature_map_pretrained import FeatureAttentionPreTrainedModel, init_query_key_
from .layers import AttentionMap
from .masks import masked_softmax


class CrissCrossAttention(nn.Module):
    """x + gamma * sum over the h + w - 1 positions of x's row and column of softmax(q . k) v, `recurrence` times.

    Plain einsums replace CCNet's CUDA extension, so it runs on any device. The same weights are applied at every
    recurrence (2 lets every position reach every other). gamma starts at 0.

    Args:
        channels: channels of the feature map.
        reduction: queries and keys have max(1, channels // reduction) channels; 1 <= reduction <= channels.
        recurrence: how many times the module is applied.
    """

    def __init__(self, channels: int, reduction: int = 8, recurrence: int = 2):
        super().__init__()
        check_sizes(channels=channels)
        check_reduction(reduction, channels)
        check_sizes(recurrence=recurrence)
        self.channels = channels
        self.recurrence = recurrence
        self.query = nn.Conv2d(channels, reduced(channels, reduction), 1)
        self.key = nn.Conv2d(channels, reduced(channels, reduction), 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.attention_map = AttentionMap()
        self.init_start_values()

    @torch.no_grad()
    def init_start_values(self) -> None:
        init.zeros_(self.gamma)
        init_query_key_(self.query)
        init_query_key_(self.key)

    def attend(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """One criss-cross pass: the attended values (batch, channels, height, width), before gamma and residual."""
        query, key, value = (projection(hidden_states).float() for projection in (self.query, self.key, self.value))
        batch_size, height, width = hidden_states.shape[0], *hidden_states.shape[-2:]
        column_scores = torch.einsum("bchw,bcgw->bhwg", query, key)  # g runs over the rows of column w
        row_scores = torch.einsum("bchw,bchv->bhwv", query, key)  # v runs over the columns of row h
        # each position is dropped from its column (it is counted in its row): keep (height, 1, height + width)
        not_itself = ~torch.eye(height, dtype=torch.bool, device=hidden_states.device)[:, None, :]
        whole_row = torch.ones(height, 1, width, dtype=torch.bool, device=hidden_states.device)
        keep = torch.cat((not_itself, whole_row), dim=-1)
        probabilities = masked_softmax(torch.cat((column_scores, row_scores), dim=-1), keep)
        recorded = self.attention_map(probabilities.reshape(batch_size, 1, height * width, height + width))
        column_probabilities, row_probabilities = recorded.view_as(probabilities).split((height, width), -1)
        from_column = torch.einsum("bhwg,bcgw->bchw", column_probabilities, value)
        from_row = torch.einsum("bhwv,bchv->bchw", row_probabilities, value)
        return (from_column + from_row).to(hidden_states.dtype)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        check_feature_map(hidden_states, self.channels, type(self).__name__, weights_of=self)
        for _ in range(self.recurrence):
            hidden_states = hidden_states + self.gamma * self.attend(hidden_states)
        return hidden_states


class CrissCrossAttentionModel(FeatureAttentionPreTrainedModel):
    """[`CrissCrossAttention`] applied `config.recurrence` times; starts as the identity (gamma = 0).

    `hidden_states`: (input, output) feature maps; `attentions`: one (batch, 1, h * w, h + w) map per pass.
    """

    config: CrissCrossAttentionConfig
    config_class = CrissCrossAttentionConfig
    _no_split_modules = ["CrissCrossAttention"]
    _can_record_outputs = {"attentions": AttentionMap}

    def build_block(self, config: CrissCrossAttentionConfig) -> nn.Module:
        return CrissCrossAttention(config.num_channels, config.reduction, config.recurrence)


__all__ = ["CrissCrossAttention", "CrissCrossAttentionModel"]
