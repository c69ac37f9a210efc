"""Configuration of the recurrent attention model (hard attention with glimpses, Mnih et al. 2014)."""

from huggingface_hub.dataclasses import strict

from .checks import check_choice, check_positive, check_probability
from .configuration_base import HFAttentionConfig

CORE_TYPES = ("rnn", "gru", "lstm")
LOCATION_POLICIES = ("learned", "random", "raster")


def as_size_pair(value: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    """(height, width) from an int or a two-element sequence."""
    if isinstance(value, int):
        return value, value
    if len(value) != 2:
        raise ValueError(f"`image_size` must be an int or a (height, width) pair, got {value!r}.")
    return int(value[0]), int(value[1])


@strict
class RecurrentAttentionConfig(HFAttentionConfig):
    r"""
    Configuration of [`RecurrentAttentionModel`] and [`RecurrentAttentionForImageClassification`]: the recurrent
    attention model (RAM) of Mnih, Heess, Graves and Kavukcuoglu, "Recurrent Models of Visual Attention" (NIPS 2014).

    The model never sees the whole image. At each of `num_glimpses` steps a retina extracts `num_scales` square
    patches centred on a location (the first `patch_size` pixels wide, each next one twice as wide, all resized to
    `patch_size` x `patch_size`), a glimpse network fuses this "what" with the "where", a recurrent core updates its
    state, and a location policy picks the next location. The choice of location is not differentiable (hard
    attention): the policy is trained with REINFORCE, the classifier with cross-entropy. The defaults are the paper's
    28x28 MNIST setting (6 glimpses of 8x8, one scale).

    Args:
        image_size (`int` or `(int, int)`, defaults to 28):
            Height and width of the training images. The sensor itself works on any size and aspect ratio; this is
            what `dummy_inputs` and the saved image processor use.
        num_channels (`int`, defaults to 1):
            Channels of the input images (3 for models used through `pipeline`, which hands over RGB images).
        patch_size (`int`, defaults to 8):
            Side g, in pixels, of the finest retina patch; every patch is resized to g x g.
        num_scales (`int`, defaults to 1):
            Number k of patches per glimpse, each twice as wide as the previous one (g, 2g, 4g, ...).
        num_glimpses (`int`, defaults to 6):
            Number of glimpses (steps of the recurrent core) before the classification.
        glimpse_hidden_size (`int`, defaults to 128):
            Width of the "what" pathway h_g = ReLU(Linear(retina)).
        location_hidden_size (`int`, defaults to 128):
            Width of the "where" pathway h_l = ReLU(Linear(location)).
        glimpse_embedding_size (`int`, defaults to 256):
            Width of the fused glimpse feature g = ReLU(Linear(h_g) + Linear(h_l)).
        hidden_size (`int`, defaults to 256):
            Width of the recurrent core's state.
        core_type (`str`, defaults to `"rnn"`):
            The recurrent core: `"rnn"` (the paper's h_t = ReLU(Linear(h_{t-1}) + Linear(g_t))), `"gru"` or `"lstm"`.
        location_std (`float`, defaults to 0.1):
            Fixed standard deviation of the Gaussian location policy, in the normalised coordinates where the image
            spans [-1, 1] (0.1 is 5% of the image width). Must be positive.
        location_policy (`str`, defaults to `"learned"`):
            `"learned"`: the Gaussian policy trained with REINFORCE (the paper). `"random"`: every location drawn
            uniformly from [-1, 1]^2 and no REINFORCE term, the ablation that shows what the learned policy is worth.
            `"raster"`: a fixed path over the image, the same for every image (rows of the grid of `num_glimpses`
            cells closest to square, left to right, top to bottom, each glimpse at a cell's centre), no REINFORCE.
        location_policy_hidden_units (`int`, defaults to 0):
            0: the location policy's mean is tanh(Linear(h_t)) (the paper). Positive: a two-layer location network,
            tanh(Linear(ReLU(Linear(h_t)))) with a hidden layer this wide, which later reproductions found to learn
            the where-to-look task more reliably.
        reinforce_weight (`float`, defaults to 1.0):
            Weight of the REINFORCE term in the loss (cross-entropy + baseline MSE + weight x REINFORCE).
        num_monte_carlo_rollouts (`int`, defaults to 1):
            In eval, average the class probabilities of this many stochastic rollouts instead of following the
            policy's mean. This Monte-Carlo averaging is an addition of a later paper (DRAM: Ba, Mnih and
            Kavukcuoglu, "Multiple Object Recognition with Visual Attention", 2015), not RAM; with more than one
            rollout, evaluation is no longer deterministic.
        hidden_dropout_prob (`float`, defaults to 0.0):
            Dropout on the final core state before the classifier, in [0, 1).

    Example:

    ```python
    >>> from hf_attention import RecurrentAttentionConfig, RecurrentAttentionForImageClassification
    >>> config = RecurrentAttentionConfig(image_size=60, patch_size=12, num_scales=3, num_glimpses=8, num_labels=10)
    >>> model = RecurrentAttentionForImageClassification(config)
    ```
    """

    model_type = "hf_attention_recurrent_attention"
    # what Trainer's evaluation leaves out of the predictions it gathers (it keeps the logits)
    keys_to_ignore_at_inference = ["glimpse_locations", "log_probs", "baselines", "rewards", "hidden_states"]

    image_size: int | list[int] | tuple[int, int] = 28
    num_channels: int = 1
    patch_size: int = 8
    num_scales: int = 1
    num_glimpses: int = 6
    glimpse_hidden_size: int = 128
    location_hidden_size: int = 128
    glimpse_embedding_size: int = 256
    hidden_size: int = 256
    core_type: str = "rnn"
    location_std: float | int = 0.1
    location_policy: str = "learned"
    location_policy_hidden_units: int = 0
    reinforce_weight: float | int = 1.0
    num_monte_carlo_rollouts: int = 1
    hidden_dropout_prob: float | int = 0.0

    @classmethod
    def tiny(cls, **overrides) -> "RecurrentAttentionConfig":
        """A configuration of a few thousand parameters for tests and demos (every REGISTRY config has one)."""
        settings = dict(image_size=16, patch_size=4, num_scales=2, num_glimpses=3, glimpse_hidden_size=16)
        settings |= dict(location_hidden_size=8, glimpse_embedding_size=32, hidden_size=32, num_labels=3)
        return cls(**{**settings, **overrides})

    def validate_architecture(self):
        """Part of `@strict` validation: impossible settings fail at construction, with the reason."""
        super().validate_architecture()
        for name in (
            "num_channels", "patch_size", "num_scales", "num_glimpses", "glimpse_hidden_size",
            "location_hidden_size", "glimpse_embedding_size", "hidden_size", "num_monte_carlo_rollouts",
        ):  # fmt: skip
            check_positive(name, getattr(self, name))
        if not self.location_std > 0:
            raise ValueError(
                "`location_std` must be positive (the Gaussian policy needs a spread to explore), "
                f"got {self.location_std}."
            )
        if not self.reinforce_weight >= 0:
            raise ValueError(f"`reinforce_weight` must be >= 0, got {self.reinforce_weight}.")
        check_choice("core_type", self.core_type, CORE_TYPES)
        check_choice("location_policy", self.location_policy, LOCATION_POLICIES)
        check_probability("hidden_dropout_prob", self.hidden_dropout_prob)
        height, width = as_size_pair(self.image_size)
        check_positive("image_size", min(height, width))
        if self.num_labels < 2:
            raise ValueError(
                f"The recurrent attention model classifies, and is rewarded for the right class: it needs "
                f"num_labels >= 2, got {self.num_labels}."
            )
        if self.problem_type == "regression":
            raise ValueError(
                "The recurrent attention model is rewarded for a correct classification, so it supports "
                "problem_type 'single_label_classification' or 'multi_label_classification' (or None), "
                "not 'regression'."
            )


__all__ = ["RecurrentAttentionConfig"]
