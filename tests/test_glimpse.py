"""The recurrent attention model (hard attention, Mnih et al. 2014): the retina against direct crops, the wall
between the classification loss and the location policy, the REINFORCE loss against its formula, bad input, and
the training job through to `pipeline("image-classification")`."""

import gzip
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassClassValidationError as InvalidConfig
from PIL import Image
from transformers import AutoModelForImageClassification, TrainingArguments, pipeline

from hf_attention import (
    GlimpseSensor,
    RecurrentAttentionConfig,
    RecurrentAttentionForImageClassification,
    RecurrentAttentionModel,
)
from hf_attention.apps.cli import main
from hf_attention.apps.data_glimpse import (
    ClutteredCanvasCollator,
    draw_cluttered_canvases,
    load_cluttered_mnist,
    load_glimpse_dataset,
    place_on_canvas,
    prepare_glimpse_dataset,
)
from hf_attention.apps.show import load_image
from hf_attention.apps.training import collate, make_image_processor
from hf_attention.apps.training_glimpse import RewardLoggingTrainer
from hf_attention.apps.visualize_glimpse import draw_glimpse_paths


def direct_crop(image: torch.Tensor, centre_x: int, centre_y: int, size: int, block: int) -> torch.Tensor:
    """The size x size crop centred on pixel corner (centre_x, centre_y) of the zero-padded image, block-averaged."""
    margin = 2 * size
    padded = F.pad(image, (margin, margin, margin, margin))
    top, left = centre_y - size // 2 + margin, centre_x - size // 2 + margin
    crop = padded[:, top : top + size, left : left + size]
    return F.avg_pool2d(crop[None], block)[0] if block > 1 else crop


@pytest.mark.parametrize("height, width", [(20, 28), (24, 24)])
def test_sensor_patches_equal_direct_crops_with_zeros_outside(height, width):
    sensor = GlimpseSensor(patch_size=4, num_scales=3)
    images = torch.rand(3, 2, height, width, dtype=torch.float64)  # float64: exact up to coordinate rounding
    # patch centres on multiples of 4 pixels (where the pooled pixels align), including ones that leave the image
    centres = [(12, 8), (0, 0), (width, height)]
    locations = torch.tensor([[2 * x / width - 1, 2 * y / height - 1] for x, y in centres], dtype=torch.float64)
    patches = sensor(images, locations)
    assert patches.shape == (3, 3, 2, 4, 4)
    for index, (x, y) in enumerate(centres):
        for scale in range(3):
            expected = direct_crop(images[index], x, y, 4 * 2**scale, 2**scale)
            torch.testing.assert_close(patches[index, scale], expected, rtol=0, atol=1e-12)
    # the corner patch (x, y) = (1, 1) reads the last pixel at the top-left of its finest patch, zeros elsewhere
    assert patches[2, 0, :, 2:, 2:].abs().max() == 0 and patches[2, 0, :, 1, 1].abs().min() > 0


def test_sensor_has_no_nan_at_the_border_and_gradients_flow_to_pixels_only():
    sensor = GlimpseSensor(patch_size=5, num_scales=2)
    images = torch.rand(4, 1, 13, 17, requires_grad=True)
    corners = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]])
    patches = sensor(images, corners)
    patches.sum().backward()
    assert torch.isfinite(patches).all() and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_classification_loss_never_reaches_the_location_policy():
    model = RecurrentAttentionForImageClassification(RecurrentAttentionConfig.tiny()).train()
    labels = torch.tensor([0, 2])
    outputs = model(**model.dummy_inputs, labels=labels)
    policy = list(model.recurrent_attention.location_policy.parameters())
    core = list(model.recurrent_attention.step.parameters())
    cross_entropy = F.cross_entropy(outputs.logits, labels)
    policy_grads = torch.autograd.grad(cross_entropy, policy, allow_unused=True, retain_graph=True)
    assert all(grad is None or grad.abs().max() == 0 for grad in policy_grads)
    assert all(grad.abs().sum() > 0 for grad in torch.autograd.grad(cross_entropy, core[:2], retain_graph=True))
    # the whole loss does train the policy, through REINFORCE alone
    assert all(grad.abs().sum() > 0 for grad in torch.autograd.grad(outputs.loss, policy, retain_graph=True))
    assert outputs.glimpse_locations.shape == (2, 3, 2) and not outputs.glimpse_locations.requires_grad


def test_loss_is_cross_entropy_plus_baseline_mse_plus_reinforce():
    config = RecurrentAttentionConfig.tiny(reinforce_weight=0.5)
    model = RecurrentAttentionForImageClassification(config).train()
    labels = torch.tensor([1, -100])
    outputs = model(**model.dummy_inputs, labels=labels)
    reward = (outputs.logits.argmax(-1)[0] == 1).float()
    assert outputs.rewards.tolist() == [[reward.item()] * 3, [0.0] * 3]
    cross_entropy = F.cross_entropy(outputs.logits[:1], labels[:1])
    baseline_mse = ((outputs.baselines[0] - reward) ** 2).mean()
    # the REINFORCE surrogate is 0 in value, so the loss reads as cross-entropy + baseline MSE
    torch.testing.assert_close(outputs.loss, cross_entropy + baseline_mse)
    reinforce = 0.5 * (-outputs.log_probs[0] * (reward - outputs.baselines[0]).detach()).sum()
    policy = list(model.recurrent_attention.location_policy.parameters())
    expected = torch.autograd.grad(reinforce, policy, retain_graph=True)
    for got, want in zip(torch.autograd.grad(outputs.loss, policy), expected, strict=True):
        torch.testing.assert_close(got, want)
    # a policy's log-density: an isotropic 2-d Gaussian of std 0.1 around its tanh mean
    mean = torch.tanh(policy[1])  # h_0 = 0: the first location's mean is tanh(bias)
    density = -((outputs.glimpse_locations[:, 0] - mean) ** 2).sum(-1) / 0.02 - 2 * math.log(
        0.1 * math.sqrt(2 * math.pi)
    )
    inside = outputs.glimpse_locations[:, 0].abs().lt(1).all(-1)  # clamped samples keep their unclamped density
    torch.testing.assert_close(outputs.log_probs[:, 0][inside], density[inside])
    # multi-hot targets: the reward is 1 when every label's decision is right; the config is left as it was
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    multi_label = model(**model.dummy_inputs, labels=targets)
    expected = ((multi_label.logits > 0) == (targets > 0.5)).all(-1).float()
    assert torch.equal(multi_label.rewards[:, -1], expected) and config.problem_type is None


def test_eval_follows_the_policy_mean_and_training_samples():
    model = RecurrentAttentionForImageClassification(RecurrentAttentionConfig.tiny(num_glimpses=4))
    inputs = model.dummy_inputs
    model.eval()
    first, second = model(**inputs, output_hidden_states=True), model(**inputs)
    torch.testing.assert_close(first.glimpse_locations, second.glimpse_locations, rtol=0, atol=0)
    assert first.glimpse_locations[:, 0].abs().max() == 0  # untrained: the first look is at the centre
    assert len(first.hidden_states) == 4  # h_1 .. h_4: the location of glimpse t + 1 is the policy's mean at h_t
    policy = model.recurrent_attention.location_policy
    torch.testing.assert_close(
        first.glimpse_locations[:, 2], torch.tanh(F.linear(first.hidden_states[1], policy.weight, policy.bias))
    )
    model.train()
    sampled = model(**inputs).glimpse_locations
    assert (sampled - first.glimpse_locations).abs().max() > 1e-3


def test_hidden_states_are_the_state_after_each_glimpse_and_carry_gradients():
    model = RecurrentAttentionForImageClassification(RecurrentAttentionConfig.tiny(num_glimpses=4)).train()
    pixel_values = model.dummy_inputs["pixel_values"].requires_grad_()
    outputs = model(pixel_values, output_hidden_states=True)
    assert len(outputs.hidden_states) == 4 and all(state.shape == (2, 32) for state in outputs.hidden_states)
    # h_1 = ReLU(W_g g_0 + W_h h_0 + b) with h_0 = 0: the first glimpse's embedding through the core
    step, first = model.recurrent_attention.step, outputs.glimpse_locations[:, 0]
    embedded = step.glimpse_network(step.sensor(pixel_values, first), first)
    first_state = F.relu(step.core.input_to_hidden(embedded) + step.core.hidden_to_hidden.bias)
    torch.testing.assert_close(outputs.hidden_states[0], first_state)
    torch.testing.assert_close(model.classifier(outputs.hidden_states[-1]), outputs.logits)  # no dropout in tiny
    for state in outputs.hidden_states:  # each depends on the image, and the gradient reaches it
        (gradient,) = torch.autograd.grad(state.sum(), pixel_values, retain_graph=True)
        assert state.requires_grad and gradient.abs().sum() > 0


@pytest.mark.parametrize(("core_type", "location_policy"), [("rnn", "learned"), ("lstm", "raster")])
def test_checkpointing_reentrant_or_not_gives_the_gradients_of_no_checkpointing(core_type, location_policy):
    config = RecurrentAttentionConfig.tiny(
        core_type=core_type, location_policy=location_policy, location_policy_hidden_units=8
    )
    model = RecurrentAttentionForImageClassification(config).train()
    pixel_values = model.dummy_inputs["pixel_values"].requires_grad_()

    def gradients(checkpointing: dict | None) -> dict[str, torch.Tensor]:
        model.zero_grad()
        pixel_values.grad = None
        if checkpointing is None:
            model.activation_checkpointing_disable()
        else:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing)
        torch.manual_seed(0)  # the same sampled locations
        model(pixel_values, labels=torch.tensor([0, 2])).loss.backward()
        found = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        return found | {"pixel_values": pixel_values.grad.clone()}

    expected = gradients(None)
    assert {name for name, _ in model.named_parameters() if name.startswith("recurrent_attention.step.")} <= set(
        expected
    )
    for checkpointing in ({"use_reentrant": True}, {"use_reentrant": False}):
        found = gradients(checkpointing)
        assert found.keys() == expected.keys(), checkpointing
        for name, gradient in expected.items():
            torch.testing.assert_close(found[name], gradient, msg=f"{name} under {checkpointing}")


def test_raster_path_and_two_layer_location_network():
    model = RecurrentAttentionModel(RecurrentAttentionConfig.tiny(num_glimpses=6, location_policy="raster"))
    locations = model(**model.dummy_inputs).glimpse_locations
    # 6 glimpses: 2 rows x 3 columns, the cells' centres, left to right then top to bottom, for every image
    xs, ys = [-2 / 3, 0.0, 2 / 3] * 2, [-0.5] * 3 + [0.5] * 3
    torch.testing.assert_close(locations, torch.tensor([xs, ys]).T.expand(2, 6, 2))
    config = RecurrentAttentionConfig.tiny(location_policy_hidden_units=5)
    policy = RecurrentAttentionModel(config).eval().location_policy
    state = torch.randn(2, config.hidden_size)
    mean, _ = policy(state, sample=False)
    torch.testing.assert_close(mean, torch.tanh(F.linear(F.relu(policy.hidden(state)), policy.weight, policy.bias)))
    assert policy.hidden.out_features == 5 and policy.weight.shape == (2, 5)
    with pytest.raises(InvalidConfig, match="location_policy_hidden_units"):
        RecurrentAttentionConfig.tiny(location_policy_hidden_units=-1)


def test_random_policy_and_monte_carlo_rollouts():
    random_model = RecurrentAttentionForImageClassification(RecurrentAttentionConfig.tiny(location_policy="random"))
    outputs = random_model(**random_model.dummy_inputs, labels=torch.tensor([0, 1]))
    assert outputs.glimpse_locations.abs().max() <= 1 and outputs.glimpse_locations.std() > 0.2
    policy = list(random_model.recurrent_attention.location_policy.parameters())
    assert all(grad is None for grad in torch.autograd.grad(outputs.loss, policy, allow_unused=True))

    model = RecurrentAttentionForImageClassification(RecurrentAttentionConfig.tiny(num_monte_carlo_rollouts=3)).eval()
    torch.manual_seed(1)
    averaged = model(**model.dummy_inputs).logits
    torch.manual_seed(1)
    rollouts = [model(**model.dummy_inputs, sample_locations=True).logits.softmax(-1) for _ in range(3)]
    torch.testing.assert_close(averaged, torch.stack(rollouts).mean(0).log())


@pytest.mark.parametrize("core_type", ["gru", "lstm"])
def test_gated_cores_train_and_round_trip(core_type, tmp_path):
    model = RecurrentAttentionForImageClassification(RecurrentAttentionConfig.tiny(core_type=core_type))
    outputs = model(**model.dummy_inputs, labels=torch.tensor([0, 1]))
    outputs.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.recurrent_attention.step.parameters())
    model.eval().save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded(**model.dummy_inputs).logits, model(**model.dummy_inputs).logits, rtol=0, atol=0)


def test_bad_input_is_refused_with_the_reason():
    model = RecurrentAttentionModel(RecurrentAttentionConfig.tiny())
    with pytest.raises(ValueError, match="3 channels but the model expects num_channels=1"):
        model(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"shape \(batch, channels, height, width\)"):
        model(torch.rand(16, 16))
    with pytest.raises(TypeError, match="image processor"):
        model(torch.randint(0, 255, (1, 1, 16, 16), dtype=torch.uint8))
    with pytest.raises(TypeError, match="sample_locatoins.*did you mean `sample_locations`"):
        model(torch.rand(1, 1, 16, 16), sample_locatoins=True)
    sensor = GlimpseSensor(4, 2)
    with pytest.raises(ValueError, match=r"\[-1, 1\].*magnitude 14.*normalised first"):
        sensor(torch.rand(1, 1, 16, 16), torch.tensor([[14.0, 3.0]]))
    with pytest.raises(ValueError, match="NaN or inf"):
        sensor(torch.rand(1, 1, 16, 16), torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match=r"shape \(batch=1, 2\)"):
        sensor(torch.rand(1, 1, 16, 16), torch.zeros(1, 3))
    with pytest.raises(InvalidConfig, match="`num_glimpses` must be positive, got 0"):
        RecurrentAttentionConfig.tiny(num_glimpses=0)
    for std in (0.0, -0.1):
        with pytest.raises(InvalidConfig, match="`location_std` must be positive"):
            RecurrentAttentionConfig.tiny(location_std=std)
    with pytest.raises(InvalidConfig, match="not 'regression'"):
        RecurrentAttentionConfig.tiny(problem_type="regression")
    with pytest.raises(InvalidConfig, match="core_type"):
        RecurrentAttentionConfig.tiny(core_type="transformer")
    head = RecurrentAttentionForImageClassification(RecurrentAttentionConfig.tiny())
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        head(**head.dummy_inputs, labels=torch.tensor([[0, 1]]))


def test_non_finite_pixels_are_named_not_blamed_on_the_locations():
    for policy in ("learned", "random"):  # random: the NaN would reach the logits without a location check
        model = RecurrentAttentionModel(RecurrentAttentionConfig.tiny(location_policy=policy))
        with pytest.raises(ValueError, match="`pixel_values` contain NaN or inf"):
            model(torch.full((1, 1, 16, 16), float("nan")))


def test_sample_locations_must_be_a_bool():
    model = RecurrentAttentionModel(RecurrentAttentionConfig.tiny())
    with pytest.raises(TypeError, match="`sample_locations` must be True, False or None, got 'yes'"):
        model(**model.dummy_inputs, sample_locations="yes")


def test_pictures_refuse_locations_outside_the_image():
    with pytest.raises(ValueError, match=r"\[-1, 1\].*magnitude 30.*normalised first"):
        draw_glimpse_paths(torch.zeros(1, 1, 60, 60), torch.tensor([[[30.0, 12.0]]]), patch_size=12)


def test_cluttered_canvases_refuse_a_digit_larger_than_the_canvas():
    digits = torch.zeros(2, 28, 28, dtype=torch.uint8)
    with pytest.raises(ValueError, match="28x28 digit and 8x8 clutter do not fit a 20x20 canvas"):
        draw_cluttered_canvases(digits, digits, torch.Generator(), canvas_size=20)


def test_cluttered_mnist_job_refuses_another_image_size(capsys):
    assert main(["train", "glimpse", "--dataset", "cluttered-mnist", "--image-size", "28"]) == 2
    assert "cluttered-mnist is built on 60x60 canvases; --image-size must be 60, got 28" in capsys.readouterr().err


def test_translated_canvas_places_the_image_and_fixes_test_offsets(tmp_path):
    image = Image.fromarray(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28) % 250 + 1)
    canvas = np.asarray(place_on_canvas(image, 60, 30, 5))
    np.testing.assert_array_equal(canvas[5:33, 30:58], np.asarray(image))
    assert canvas.sum() == np.asarray(image, dtype=np.int64).sum()
    with pytest.raises(ValueError, match="does not fit"):
        place_on_canvas(image, 60, 40, 0)
    write_fashion_mnist(tmp_path)
    first = load_glimpse_dataset("translated-fashion-mnist", str(tmp_path), seed=3)
    assert (
        first["test"]["offset"]
        == load_glimpse_dataset("translated-fashion-mnist", str(tmp_path), seed=3)["test"]["offset"]
    )
    prepared = prepare_glimpse_dataset(first, "translated-fashion-mnist", make_image_processor(60))
    test_images = prepared["test"][:4]["pixel_values"]
    torch.testing.assert_close(test_images, prepared["test"][:4]["pixel_values"], rtol=0, atol=0)
    assert test_images.shape == (4, 3, 60, 60)
    train_draws = [prepared["train"][:8]["pixel_values"] for _ in range(2)]
    assert not torch.equal(*train_draws)  # a fresh place every time a training image is drawn


def write_fashion_mnist(folder, train=16, test=8):
    rng = np.random.default_rng(0)
    for prefix, count in (("train", train), ("t10k", test)):
        for stem, array in (
            ("images-idx3", rng.integers(0, 256, size=(count, 28, 28))),
            ("labels-idx1", np.arange(count) % 10),
        ):
            header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
            with gzip.open(folder / f"{prefix}-{stem}-ubyte.gz", "wb") as handle:
                handle.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.slow
def test_trainer_logs_the_mean_reward_next_to_the_loss(tmp_path):
    model = RecurrentAttentionForImageClassification(RecurrentAttentionConfig.tiny(num_channels=3, num_labels=10))
    write_fashion_mnist(tmp_path)
    dataset = prepare_glimpse_dataset(
        load_glimpse_dataset("fashion-mnist", str(tmp_path)), "fashion-mnist", make_image_processor(16)
    )
    arguments = TrainingArguments(
        str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4, logging_steps=2, report_to="none",
        remove_unused_columns=False, save_strategy="no", disable_tqdm=True, dataloader_pin_memory=False,
    )  # fmt: skip
    trainer = RewardLoggingTrainer(model=model, args=arguments, train_dataset=dataset["train"], data_collator=collate)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2 and all(0 <= entry["reward"] <= 1 and entry["reward"] * 8 % 1 == 0 for entry in logged)


@pytest.mark.slow
def test_train_glimpse_job_to_pipeline_and_picture(tmp_path, capsys):
    write_fashion_mnist(tmp_path)
    output_dir = tmp_path / "glimpse"
    argv = ["train", "glimpse", "--dataset", "translated-fashion-mnist", "--data-dir", str(tmp_path), "--epochs", "1",
            "--output-dir", str(output_dir), "--num-glimpses", "2", "--hidden-size", "16", "--glimpse-hidden-size", "8",
            "--location-hidden-size", "8", "--glimpse-embedding-size", "16", "--num-pictures", "3"]  # fmt: skip
    assert main(argv) == 0
    summary = capsys.readouterr().out
    assert "train / eval size 16 / 8" in summary and "glimpse_paths.png" in summary
    picture = Image.open(output_dir / "glimpse_paths.png")
    assert picture.width > 3 * 60 and len(set(picture.convert("RGB").getdata())) > 10
    classifier = pipeline("image-classification", model=str(output_dir))
    predictions = classifier(Image.fromarray(np.full((60, 60), 90, dtype=np.uint8)), top_k=2)
    assert len(predictions) == 2 and predictions[0]["score"] >= predictions[1]["score"]
    assert main([*argv, "--attn-implementation", "sdpa"]) == 2
    assert "no dot-product attention" in capsys.readouterr().err


def test_draw_glimpse_paths_marks_every_step():
    images = torch.zeros(2, 1, 20, 20)
    locations = torch.tensor([[[-0.5, -0.5], [0.5, 0.5]], [[0.0, 0.0], [0.9, -0.9]]])
    picture = draw_glimpse_paths(images, locations, patch_size=4, num_scales=2, captions=["a", "b"], zoom=2)
    pixels = np.asarray(picture)
    step_colours = {(49, 130, 189), (0, 170, 170)}
    assert step_colours <= {tuple(p) for p in pixels.reshape(-1, 3)}
    with pytest.raises(ValueError, match="2 images but 1 rows"):
        draw_glimpse_paths(images, locations[:1], patch_size=4)


def test_cluttered_canvases_hold_the_digit_where_they_say_and_four_pieces_of_clutter():
    digits = torch.randint(1, 256, (6, 28, 28))
    blank = torch.zeros(3, 28, 28, dtype=torch.long)
    canvases, offsets = draw_cluttered_canvases(digits, blank, torch.Generator().manual_seed(0))
    assert canvases.shape == (6, 1, 60, 60) and offsets.shape == (6, 2)
    for canvas, digit, (left, top) in zip(canvases[:, 0], digits, offsets.tolist(), strict=True):
        torch.testing.assert_close(canvas[top : top + 28, left : left + 28], digit / 255)  # black clutter: nothing
        assert torch.count_nonzero(canvas) == torch.count_nonzero(canvas[top : top + 28, left : left + 28])
    white = torch.full((3, 28, 28), 255)
    canvases, offsets = draw_cluttered_canvases(blank[:1].expand(500, 28, 28), white, torch.Generator())
    lit = (canvases[:, 0] > 0).sum((-1, -2))
    # four 8x8 squares: 256 lit pixels unless they overlap; always at least one square, each place equally likely
    assert lit.max() == 4 * 64 and lit.min() >= 64 and (lit == 256).float().mean() > 0.5
    assert canvases.max() == 1 and offsets.min() >= 0 and offsets.max() <= 32


@pytest.mark.slow
def test_cluttered_mnist_split_and_one_training_step(tmp_path, capsys):
    dataset, digits = load_cluttered_mnist()
    assert len(dataset["train"]) == 4000 and digits.shape == (4000, 28, 28) and len(dataset["test"]) == 1000
    assert torch.bincount(dataset["test"]["label"][:]).tolist() == [100] * 10  # stratified
    test = dataset["test"][:2]
    assert test["pixel_values"].shape == (2, 1, 60, 60) and test["pixel_values"].max() <= 1
    collator = ClutteredCanvasCollator(digits, seed=0)
    rows = [dataset["train"][index] for index in range(4)]
    first, second = collator(rows), collator(rows)
    assert torch.equal(first["labels"], second["labels"]) and not torch.equal(
        first["pixel_values"], second["pixel_values"]
    )
    output_dir = tmp_path / "cluttered"
    argv = ["train", "glimpse", "--dataset", "cluttered-mnist", "--max-steps", "1", "--train-size", "64",
            "--test-size", "16", "--batch-size", "8", "--hidden-size", "16", "--glimpse-hidden-size", "8",
            "--location-hidden-size", "8", "--glimpse-embedding-size", "16", "--location-policy-hidden-units", "8",
            "--output-dir", str(output_dir), "--num-pictures", "4"]  # fmt: skip
    assert main(argv) == 0
    assert "train / eval size 64 / 16" in capsys.readouterr().out
    model = RecurrentAttentionForImageClassification.from_pretrained(output_dir)
    assert model.config.num_channels == 1 and model.config.location_policy_hidden_units == 8
    assert Image.open(output_dir / "glimpse_paths.png").width > 4 * 60
    shown = load_image("cluttered-mnist:1")  # `hf-attention show`'s built-in: the experiment's own test canvas
    assert np.array_equal(np.asarray(shown), (dataset["test"][1]["pixel_values"][0] * 255).round().byte().numpy())
    assert main(["show", str(output_dir), "cluttered-mnist:1", "--output", str(tmp_path / "paths.png")]) == 0
    assert Image.open(tmp_path / "paths.png").width > 60
    classifier = pipeline("image-classification", model=str(output_dir))  # it opens every image as RGB
    assert type(classifier.image_processor).__name__ == "GreyImageProcessor"
    probabilities = model(pixel_values=dataset["test"][1:2]["pixel_values"]).logits.softmax(-1)[0]
    best = classifier(shown, top_k=1)[0]
    assert best["label"] == str(int(probabilities.argmax())) and math.isclose(
        best["score"], probabilities.max(), rel_tol=1e-5
    )
    assert main([*argv[:-4], "--full-image-mlp", "--output-dir", str(tmp_path / "mlp"), "--num-pictures", "0"]) == 0
    assert "parameters        58,058" in capsys.readouterr().out  # 3600 -> 16 -> 16 -> 10


def test_grey_processor_is_vits_on_pils_luminance():
    """An RGB image (what pipelines pass) gives exactly ViT's processing of PIL's "L" conversion of it."""
    from transformers import ViTImageProcessorPil

    from hf_attention import GreyImageProcessor

    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 70, 3), dtype=np.uint8))
    settings = dict(size={"height": 60, "width": 60}, image_mean=[0.5], image_std=[0.5])
    grey = GreyImageProcessor(**settings)(rgb, return_tensors="pt")["pixel_values"]
    assert grey.shape == (1, 1, 60, 60)
    torch.testing.assert_close(
        grey, ViTImageProcessorPil(**settings)(rgb.convert("L"), return_tensors="pt")["pixel_values"], atol=0, rtol=0
    )
    torch.testing.assert_close(
        GreyImageProcessor(**settings)(rgb.convert("L"), return_tensors="pt")["pixel_values"], grey, atol=0, rtol=0
    )
    with pytest.raises(ValueError, match="do_convert_rgb=True contradicts it"):
        GreyImageProcessor(**settings)(rgb, do_convert_rgb=True)
