"""Recurrent attention model (Mnih, Heess, Graves, Kavukcuoglu, "Recurrent Models of Visual Attention", NIPS 2014).

Hard attention: the model looks at a few small glimpses instead of the whole image, and *where* it looks is a
sampled, non-differentiable choice, trained with REINFORCE. Data flow, for t = 0 .. num_glimpses - 1:

    location l_t ~ N(tanh(W h_t.detach()), std^2)              (LocationPolicy; h_0 = 0, so l_0 is learned too;
                                                               optionally tanh(W2 ReLU(W1 h_t.detach())))
    patches   = retina(image, l_t)                             (GlimpseSensor: k scales, g x g each)
    g_t       = ReLU(Linear(ReLU(Linear(patches))) + Linear(ReLU(Linear(l_t))))   (GlimpseNetwork: what + where)
    h_{t+1}   = core(g_t, h_t)                                 (rnn / gru / lstm)
    b_t       = Linear(h_t.detach())                           (baseline of the reward)

then class logits = Linear(h_T). Reward R = 1 when the prediction is right. Loss = cross-entropy + MSE(b, R) +
REINFORCE sum_t -log pi(l_t) (R - b_t), the advantage detached. Locations are always detached before the sensor
and the glimpse network, so the classification loss never reaches the location policy: only REINFORCE trains it.

Locations are (x, y) in normalised image coordinates: x = -1 is the left edge of the image, +1 the right edge,
y = -1 the top, +1 the bottom, (0, 0) the centre; the same convention as `torch.nn.functional.grid_sample`.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .checks import check_pixel_values, is_compiling
from .configuration_glimpse import RecurrentAttentionConfig, as_size_pair
from .pretrained import HFAttentionPreTrainedModel, parameter_dtype, problem_type_of, resolve_forward_kwargs


class GlimpseSensor(nn.Module):
    """The multi-resolution retina: `num_scales` square patches centred on each location, resized to g x g.

    Patch s is `patch_size * 2**s` pixels wide and is the area average of its pixels over 2**s x 2**s blocks, read
    with one `grid_sample` per scale for the whole batch from an average-pooled image pyramid. Parts of a patch that
    leave the image read zeros (of `pixel_values`: mid-grey after a normalisation to [-1, 1]). Any image height and
    width work (the pyramid pads the bottom and right edges to a multiple of the coarsest block, which moves no
    coordinate). When a patch's left/top edge falls on a multiple of 2**s pixels, the result equals cropping the
    zero-padded image and average-pooling it exactly; in between, the pooled pixels are interpolated bilinearly, so the
    patches move smoothly with the location.

    Input: `pixel_values` (batch, channels, height, width) and `locations` (batch, 2) as (x, y) in [-1, 1].
    Output: (batch, num_scales, channels, patch_size, patch_size).
    """

    def __init__(self, patch_size: int, num_scales: int):
        super().__init__()
        if patch_size <= 0 or num_scales <= 0:
            raise ValueError(f"patch_size and num_scales must be positive, got {patch_size} and {num_scales}.")
        self.patch_size = patch_size
        self.num_scales = num_scales

    def build_pyramid(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Level s: the image, zero-padded to a multiple of 2**(k-1), average-pooled over 2**s x 2**s blocks."""
        block = 2 ** (self.num_scales - 1)
        height, width = pixel_values.shape[-2:]
        padded = F.pad(pixel_values, (0, -width % block, 0, -height % block))
        return tuple(F.avg_pool2d(padded, 2**s) if s else padded for s in range(self.num_scales))

    def read(
        self, pyramid: tuple[torch.Tensor, ...], locations: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """The patches at `locations` from a pyramid of `build_pyramid` for images of `image_size` (h, w)."""
        check_locations(locations, pyramid[0].shape[0])
        height, width = image_size
        padded_height, padded_width = pyramid[0].shape[-2:]
        locations = locations.to(pyramid[0].dtype)
        # centre in the padded image's normalised coordinates; padding at the bottom/right shrinks them
        centre = (locations + 1) * locations.new_tensor([width / padded_width, height / padded_height]) - 1
        # (1, g, g, 2): the normalised positions of a g x g grid's cell centres, in [-1, 1]
        # half precision builds it in float32: aten's half grid rounds the base grid before the product (and emulates)
        identity = torch.eye(2, 3, dtype=torch.promote_types(centre.dtype, torch.float32), device=centre.device)[None]
        unit = F.affine_grid(identity, [1, 1, self.patch_size, self.patch_size], align_corners=False).to(centre.dtype)
        patches = []
        for scale, level in enumerate(pyramid):
            half_extent = self.patch_size * 2**scale / centre.new_tensor([padded_width, padded_height])
            grid = unit * half_extent + centre[:, None, None, :]
            patches.append(F.grid_sample(level, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
        return torch.stack(patches, dim=1)

    def forward(self, pixel_values: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        if pixel_values.dim() != 4:
            raise ValueError(
                f"`pixel_values` must have shape (batch, channels, height, width), got {tuple(pixel_values.shape)}."
            )
        return self.read(self.build_pyramid(pixel_values), locations, tuple(pixel_values.shape[-2:]))


def check_locations(locations: torch.Tensor, batch_size: int) -> None:
    """Locations must be (batch, 2) finite (x, y) in [-1, 1]; pixel coordinates are the usual mistake."""
    if locations.dim() != 2 or locations.shape != (batch_size, 2):
        raise ValueError(
            f"`locations` must have shape (batch={batch_size}, 2) as (x, y), got {tuple(locations.shape)}."
        )
    if not locations.is_floating_point():
        raise TypeError(f"`locations` must be a float tensor of (x, y) in [-1, 1], got dtype {locations.dtype}.")
    if locations.numel() and not is_compiling():
        if not bool(torch.isfinite(locations).all()):
            raise ValueError("`locations` contain NaN or inf; expected (x, y) in [-1, 1].")
        largest = float(locations.abs().max())
        if largest > 1:
            raise ValueError(
                f"`locations` must lie in [-1, 1] (normalised: -1 the left/top edge, +1 the right/bottom edge, "
                f"(0, 0) the centre), got a coordinate of magnitude {largest:g}. Pixel coordinates must be "
                "normalised first: x = 2 * column / width - 1."
            )


class GlimpseNetwork(nn.Module):
    """Fuses what the retina saw and where: g = ReLU(Linear(ReLU(Linear(patches))) + Linear(ReLU(Linear(l))))."""

    def __init__(self, config: RecurrentAttentionConfig):
        super().__init__()
        retina_size = config.num_channels * config.num_scales * config.patch_size**2
        self.what = nn.Linear(retina_size, config.glimpse_hidden_size)
        self.where = nn.Linear(2, config.location_hidden_size)
        self.what_to_glimpse = nn.Linear(config.glimpse_hidden_size, config.glimpse_embedding_size)
        self.where_to_glimpse = nn.Linear(config.location_hidden_size, config.glimpse_embedding_size)

    def forward(self, patches: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        what = F.relu(self.what(patches.flatten(1)))
        where = F.relu(self.where(locations.to(what.dtype)))
        return F.relu(self.what_to_glimpse(what) + self.where_to_glimpse(where))


class RecurrentAttentionCore(nn.Module):
    """The recurrent state update h_{t+1} = core(g_t, h_t); the LSTM also carries its cell state."""

    def __init__(self, config: RecurrentAttentionConfig):
        super().__init__()
        self.core_type = config.core_type
        if config.core_type == "rnn":
            self.input_to_hidden = nn.Linear(config.glimpse_embedding_size, config.hidden_size)
            self.hidden_to_hidden = nn.Linear(config.hidden_size, config.hidden_size)
        elif config.core_type == "gru":
            self.cell = nn.GRUCell(config.glimpse_embedding_size, config.hidden_size)
        else:
            self.cell = nn.LSTMCell(config.glimpse_embedding_size, config.hidden_size)

    def forward(
        self, glimpse: torch.Tensor, hidden_state: torch.Tensor, cell_state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.core_type == "rnn":
            return F.relu(self.input_to_hidden(glimpse) + self.hidden_to_hidden(hidden_state)), None
        if self.core_type == "gru":
            return self.cell(glimpse, hidden_state), None
        return self.cell(glimpse, (hidden_state, cell_state))


class RecurrentAttentionStep(GradientCheckpointingLayer):
    """One glimpse: read the retina at the (detached) location, embed it, update the core state."""

    def __init__(self, config: RecurrentAttentionConfig):
        super().__init__()
        self.sensor = GlimpseSensor(config.patch_size, config.num_scales)
        self.glimpse_network = GlimpseNetwork(config)
        self.core = RecurrentAttentionCore(config)

    def forward(
        self,
        hidden_state: torch.Tensor,
        cell_state: torch.Tensor | None,
        locations: torch.Tensor,
        *pyramid: torch.Tensor,
        image_size: tuple[int, int] = (0, 0),
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The pyramid levels come positionally: reentrant checkpointing passes gradients only to positional tensors
        (keyword arguments are frozen into the recomputed function), and the pixels may require a gradient."""
        locations = locations.detach()  # hard attention: no gradient through where the model looked
        patches = self.sensor.read(pyramid, locations, image_size)
        glimpse = self.glimpse_network(patches, locations)
        return self.core(glimpse, hidden_state, cell_state)


class LocationPolicy(nn.Module):
    """Gaussian policy over the next location: mean tanh(W h.detach() + b), fixed std; samples clamped to [-1, 1].

    With `policy_hidden_size` > 0 the mean is tanh(W ReLU(W1 h.detach() + b1) + b), a two-layer location network.
    The hidden state is detached, so REINFORCE trains only this network (as in the paper's reimplementations) and
    the core is shaped by the classification loss alone. The log-probability is that of the sample before
    clamping (the clamp is part of the environment, not of the policy). Without sampling (eval) the location is the
    mean, and the log-probability is the density there.
    """

    def __init__(self, hidden_size: int, std: float, policy_hidden_size: int = 0):
        super().__init__()
        if not std > 0:
            raise ValueError(f"The location policy's std must be positive, got {std}.")
        self.std = std
        self.hidden = nn.Linear(hidden_size, policy_hidden_size) if policy_hidden_size > 0 else None
        self.weight = nn.Parameter(torch.empty(2, policy_hidden_size or hidden_size))
        self.bias = nn.Parameter(torch.empty(2))

    def forward(self, hidden_state: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        features = hidden_state.detach()
        if self.hidden is not None:
            features = F.relu(self.hidden(features))
        mean = torch.tanh(F.linear(features, self.weight, self.bias)).float()
        locations = (mean + self.std * torch.randn_like(mean)).detach() if sample else mean.detach()
        log_probs = torch.distributions.Normal(mean, self.std, validate_args=False).log_prob(locations).sum(-1)
        return locations.clamp(-1.0, 1.0), log_probs


class RewardBaseline(nn.Module):
    """b_t = w . h_t.detach() + c: the learned expected reward, subtracted from R to cut REINFORCE's variance.

    A dot product rather than an `nn.Linear` with one output: BLAS's one-column kernels round differently with the
    weight's memory alignment, so a saved and reloaded model would give baselines one ulp apart.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(hidden_size))
        self.bias = nn.Parameter(torch.empty(1))

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        return (hidden_state.detach().float() * self.weight.float()).sum(-1) + self.bias.float()


def random_locations(batch_size: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Locations uniform on [-1, 1]^2 and their log-density, log(1/4): the untrained-policy ablation."""
    locations = torch.rand(batch_size, 2, device=like.device) * 2 - 1
    return locations, torch.full((batch_size,), -math.log(4.0), device=like.device)


def raster_locations(num_glimpses: int, batch_size: int, like: torch.Tensor) -> torch.Tensor:
    """(batch, num_glimpses, 2): the fixed raster path, the centres of the cells of a rows x columns grid over
    [-1, 1]^2 (rows = floor(sqrt(n)), columns = ceil(n / rows)), left to right, top to bottom; the ablation that looks
    everywhere in a fixed order."""
    rows = max(1, math.isqrt(num_glimpses))
    columns = -(-num_glimpses // rows)
    cell = torch.arange(rows * columns, device=like.device)[:num_glimpses]
    x = (cell % columns * 2 + 1).float() / columns - 1
    y = (cell // columns * 2 + 1).float() / rows - 1
    return torch.stack([x, y], dim=-1).expand(batch_size, num_glimpses, 2)


@dataclass
class RecurrentAttentionModelOutput(ModelOutput):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        The core's state after the last glimpse.
    glimpse_locations (`torch.FloatTensor` of shape `(batch_size, num_glimpses, 2)`):
        Where each glimpse looked, (x, y) in [-1, 1] (-1 the left/top edge, +1 the right/bottom edge).
    log_probs (`torch.FloatTensor` of shape `(batch_size, num_glimpses)`):
        log pi(l_t | h_t) of each location under the policy (before clamping to the image).
    baselines (`torch.FloatTensor` of shape `(batch_size, num_glimpses)`):
        The learned baseline b_t of the reward at each step.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        num_glimpses core states, each of shape `(batch_size, hidden_size)`: the state after each glimpse, h_1 ..
        h_T (the last one is `last_hidden_state`). The initial state h_0 = 0 is left out: it is the same constant
        for every input, so every returned state depends on the image and carries a gradient.
    """

    last_hidden_state: torch.FloatTensor | None = None
    glimpse_locations: torch.FloatTensor | None = None
    log_probs: torch.FloatTensor | None = None
    baselines: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class RecurrentAttentionClassifierOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned with `labels`):
        cross-entropy + baseline MSE + `reinforce_weight` x REINFORCE.
    logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
        Class scores after the last glimpse (log of the mean probability over Monte-Carlo rollouts, if any).
    glimpse_locations, log_probs, baselines, hidden_states:
        As in [`RecurrentAttentionModelOutput`] (of the first rollout when several are averaged).
    rewards (`torch.FloatTensor` of shape `(batch_size, num_glimpses)`, *optional*, returned with `labels`):
        The return that follows each location choice: 1 when the final prediction is right, else 0 (the only
        reward comes at the end, undiscounted, so every step of a sample has the same return).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    glimpse_locations: torch.FloatTensor | None = None
    log_probs: torch.FloatTensor | None = None
    baselines: torch.FloatTensor | None = None
    rewards: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class RecurrentAttentionPreTrainedModel(HFAttentionPreTrainedModel):
    config: RecurrentAttentionConfig
    config_class = RecurrentAttentionConfig
    base_model_prefix = "recurrent_attention"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["RecurrentAttentionStep"]
    # no dot-product attention anywhere: the attention is where the glimpses go
    _supports_sdpa = False
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False
    _can_compile_fullgraph = False  # the location range check reads tensor values
    _can_record_outputs = {
        # the state after each glimpse; the step's input h_0 = 0 is a constant, not a state of the image
        "hidden_states": OutputRecorder(
            RecurrentAttentionStep, index=0, capture_initial_hidden_state=False, num_hidden_layers_key="num_glimpses"
        ),
    }

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """A deterministic batch of two images that fits the config (transformers' convention for example inputs)."""
        height, width = as_size_pair(self.config.image_size)
        generator = torch.Generator().manual_seed(0)
        return {"pixel_values": torch.randn(2, self.config.num_channels, height, width, generator=generator)}

    def hub_tags(self) -> list[str]:
        return ["hard-attention", "recurrent-attention-model", "reinforce"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's default uniform(+-1/sqrt(fan_in)) for every layer: the ReLU core keeps its scale over glimpses
        if isinstance(module, nn.Linear):
            bound = 1 / math.sqrt(module.in_features)
            init.uniform_(module.weight, -bound, bound)
            init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (nn.GRUCell, nn.LSTMCell)):
            bound = 1 / math.sqrt(module.hidden_size)
            for parameter in module.parameters():
                init.uniform_(parameter, -bound, bound)
        elif isinstance(module, RewardBaseline):
            bound = 1 / math.sqrt(module.weight.shape[0])
            init.uniform_(module.weight, -bound, bound)
            init.zeros_(module.bias)
        elif isinstance(module, LocationPolicy):
            bound = 1 / math.sqrt(module.weight.shape[1])
            init.uniform_(module.weight, -bound, bound)
            init.zeros_(module.bias)  # the untrained policy's first glimpse is at the centre


class RecurrentAttentionModel(RecurrentAttentionPreTrainedModel):
    """The glimpse loop without a classifier: the final core state, the locations, their log-probs, the baselines."""

    def __init__(self, config: RecurrentAttentionConfig):
        super().__init__(config)
        self.step = RecurrentAttentionStep(config)
        self.location_policy = LocationPolicy(
            config.hidden_size, config.location_std, config.location_policy_hidden_units
        )
        self.baseline = RewardBaseline(config.hidden_size)
        self.post_init()

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        sample_locations: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RecurrentAttentionModelOutput:
        r"""
        pixel_values (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            Images of any size, e.g. from the saved `ViTImageProcessor`.
        sample_locations (`bool`, *optional*):
            Sample each location from the Gaussian policy (default in training) or take its mean (default in eval).
        """
        kwargs = resolve_forward_kwargs(self, kwargs)
        check_pixel_values(pixel_values, self.config.num_channels)
        if pixel_values.numel() and not is_compiling() and not bool(torch.isfinite(pixel_values).all()):
            # else the policy turns them into NaN locations, or (random / raster paths) NaN logits
            raise ValueError("`pixel_values` contain NaN or inf; expected finite pixel values.")
        if sample_locations is not None and not isinstance(sample_locations, bool):
            raise TypeError(f"`sample_locations` must be True, False or None, got {sample_locations!r}.")
        pixel_values = pixel_values.to(parameter_dtype(self, pixel_values.dtype))
        sample = self.training if sample_locations is None else sample_locations
        pyramid = self.step.sensor.build_pyramid(pixel_values)
        batch_size, image_size = pixel_values.shape[0], tuple(pixel_values.shape[-2:])
        hidden_state = pixel_values.new_zeros(batch_size, self.config.hidden_size)
        cell_state = torch.zeros_like(hidden_state) if self.config.core_type == "lstm" else None
        raster = raster_locations(self.config.num_glimpses, batch_size, hidden_state)
        locations, log_probs, baselines = [], [], []
        for glimpse in range(self.config.num_glimpses):
            if self.config.location_policy == "random":
                location, log_prob = random_locations(batch_size, hidden_state)
            elif self.config.location_policy == "raster":
                location, log_prob = raster[:, glimpse], hidden_state.new_zeros(batch_size, dtype=torch.float)
            else:
                location, log_prob = self.location_policy(hidden_state, sample)
            baselines.append(self.baseline(hidden_state))
            hidden_state, cell_state = self.step(hidden_state, cell_state, location, *pyramid, image_size=image_size)
            locations.append(location)
            log_probs.append(log_prob)
        return RecurrentAttentionModelOutput(
            last_hidden_state=hidden_state,
            glimpse_locations=torch.stack(locations, dim=1),
            log_probs=torch.stack(log_probs, dim=1),
            baselines=torch.stack(baselines, dim=1),
        )


class RecurrentAttentionForImageClassification(RecurrentAttentionPreTrainedModel):
    """The classifier on the final core state, trained end to end: cross-entropy + baseline MSE + REINFORCE."""

    def __init__(self, config: RecurrentAttentionConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.recurrent_attention = RecurrentAttentionModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        sample_locations: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RecurrentAttentionClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, or float `(batch_size, num_labels)`, *optional*):
            Class indices (-100 leaves a sample out of every term of the loss), or multi-hot targets in [0, 1]
            (multi-label: the reward is 1 when every label's decision, logit > 0, matches its target > 0.5).
        sample_locations (`bool`, *optional*):
            See [`RecurrentAttentionModel.forward`]. Monte-Carlo averaging (`config.num_monte_carlo_rollouts > 1`)
            applies in eval when this is not given.
        """
        rollouts = self.config.num_monte_carlo_rollouts if not self.training and sample_locations is None else 1
        outputs = self.recurrent_attention(
            pixel_values, sample_locations=True if rollouts > 1 else sample_locations, **kwargs
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        if rollouts > 1:
            probabilities = logits.float().softmax(-1)
            for _ in range(rollouts - 1):
                more = self.recurrent_attention(pixel_values, sample_locations=True, **kwargs)
                probabilities = probabilities + self.classifier(more.last_hidden_state).float().softmax(-1)
            logits = (probabilities / rollouts).log().to(logits.dtype)
        loss = rewards = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)  # checks the labels first
            rewards, reinforcement_loss = self.reinforcement_loss(labels, logits, outputs)
            loss = loss + reinforcement_loss
        return RecurrentAttentionClassifierOutput(
            loss=loss,
            logits=logits,
            glimpse_locations=outputs.glimpse_locations,
            log_probs=outputs.log_probs,
            baselines=outputs.baselines,
            rewards=rewards,
            hidden_states=outputs.hidden_states,
        )

    def reinforcement_loss(
        self, labels: torch.Tensor, logits: torch.Tensor, outputs: RecurrentAttentionModelOutput
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(rewards, baseline MSE + weight x REINFORCE), averaged over the samples whose label is not -100."""
        labels = labels.to(logits.device)
        if problem_type_of(self.config, labels) == "multi_label_classification":
            counted = labels.new_ones(labels.shape[0], dtype=torch.float)
            reward = ((logits.detach() > 0) == (labels > 0.5)).all(-1).float()
        else:
            counted = (labels != -100).float()
            reward = (logits.detach().argmax(-1) == labels).float() * counted
        rewards = reward[:, None].expand_as(outputs.baselines)
        advantage = (rewards - outputs.baselines).detach()
        baseline_loss = ((outputs.baselines - rewards) ** 2).mean(-1)
        # log pi - (log pi).detach() is 0 with the gradient of log pi: the logged loss stays CE + MSE, readable
        reinforce = (-(outputs.log_probs - outputs.log_probs.detach()) * advantage).sum(-1)
        if self.config.location_policy != "learned":
            reinforce = torch.zeros_like(reinforce)  # no policy to train
        per_sample = baseline_loss + self.config.reinforce_weight * reinforce
        return rewards, (per_sample * counted).sum() / counted.sum().clamp(min=1)


__all__ = [
    "GlimpseNetwork",
    "GlimpseSensor",
    "LocationPolicy",
    "RecurrentAttentionCore",
    "RecurrentAttentionForImageClassification",
    "RecurrentAttentionModel",
    "RecurrentAttentionPreTrainedModel",
    "RecurrentAttentionStep",
    "RewardBaseline",
]
