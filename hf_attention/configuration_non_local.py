"""Configuration of the non-local block (Wang et al., 2018). Torch-free."""

from huggingface_hub.dataclasses import strict

from .checks import check_choice
from .configuration_base import HFAttentionConfig

NON_LOCAL_PAIRWISE_FUNCTIONS = ("embedded_gaussian", "dot_product", "concatenation", "gaussian")


@strict
class NonLocalConfig(HFAttentionConfig):
    r"""
    Configuration of [`NonLocalModel`]: a non-local block (Wang et al., 2018), z = W y + x with
    y_i = sum_j f(x_i, x_j) g(x_j) / C(x).

    Args:
        num_channels (`int`, defaults to 64):
            Channels of the input feature map.
        inner_channels (`int`, *optional*):
            Channels of the embeddings theta, phi and g; defaults to max(1, num_channels // 2) as in the paper.
        pairwise_function (`str`, defaults to `"embedded_gaussian"`):
            f: `"embedded_gaussian"` softmax(theta(x_i) . phi(x_j)), `"gaussian"` softmax(x_i . x_j),
            `"dot_product"` theta(x_i) . phi(x_j) / N, `"concatenation"` ReLU(w . [theta(x_i), phi(x_j)]) / N,
            with N the number of key positions.
        sub_sample (`bool`, defaults to `False`):
            Max-pool (2x2) the keys and values, dividing the pairwise cost by about 4.
        batch_norm (`bool`, defaults to `True`):
            Follow W with a batch norm; the batch norm's scale (or, without it, W itself) starts at zero so the block
            starts as the identity.
        initializer_range (`float`, defaults to 0.02):
            Kept for transformers' initialisation conventions (convolutions use Kaiming initialisation).
    """

    model_type = "hf_attention_non_local"

    num_channels: int = 64
    inner_channels: int | None = None
    pairwise_function: str = "embedded_gaussian"
    sub_sample: bool = False
    batch_norm: bool = True
    initializer_range: float = 0.02

    @classmethod
    def tiny(cls, **overrides) -> "NonLocalConfig":
        """A configuration of a few hundred parameters for tests and demos (every REGISTRY config has one)."""
        return cls(**{"num_channels": 8, **overrides})

    def validate_architecture(self):
        super().validate_architecture()
        check_choice("pairwise_function", self.pairwise_function, NON_LOCAL_PAIRWISE_FUNCTIONS)


__all__ = ["NON_LOCAL_PAIRWISE_FUNCTIONS", "NonLocalConfig"]
