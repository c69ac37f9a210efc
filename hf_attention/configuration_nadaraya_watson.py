"""Nadaraya-Watson kernel regression (attention pooling with a Gaussian kernel) configuration."""

from huggingface_hub.dataclasses import strict

from .configuration_base import HFAttentionConfig


@strict
class NadarayaWatsonConfig(HFAttentionConfig):
    r"""
    Configuration of [`NadarayaWatsonModel`]: Nadaraya-Watson kernel regression (Nadaraya, 1964; Watson, 1964) read
    as attention pooling. A query x averages the values y_i of the key-value pairs (x_i, y_i) with the weights
    softmax_i(-((x - x_i) w)^2 / 2): a Gaussian kernel whose width 1 / w is learned.

    Args:
        initial_bandwidth (`float`, defaults to 1.0):
            Starting value of w, the inverse kernel width; must be positive. Larger w attends to closer keys.
        learnable_bandwidth (`bool`, defaults to `True`):
            Whether w is trained. `False` keeps w at `initial_bandwidth` (the unparameterised regression).

    Example:

    ```python
    >>> from hf_attention import NadarayaWatsonConfig, NadarayaWatsonModel
    >>> model = NadarayaWatsonModel(NadarayaWatsonConfig())
    >>> model(query_points, key_points, key_values).last_hidden_state  # (batch, queries) predictions
    ```
    """

    model_type = "hf_attention_nadaraya_watson"

    initial_bandwidth: float | int = 1.0
    learnable_bandwidth: bool = True

    @classmethod
    def tiny(cls, **overrides) -> "NadarayaWatsonConfig":
        """A configuration of a few hundred parameters for tests and demos (every REGISTRY config has one)."""
        return cls(**{"initial_bandwidth": 1.0, **overrides})

    def validate_architecture(self):
        """Part of `@strict` validation: impossible settings fail at construction, with the reason."""
        super().validate_architecture()
        if not self.initial_bandwidth > 0:
            raise ValueError(f"`initial_bandwidth` must be positive, got {self.initial_bandwidth}.")


__all__ = ["NadarayaWatsonConfig"]
