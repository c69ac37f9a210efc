"""The three-garment relations data ("coat left of bag left of sandal") and the metrics of the relations benchmark:
captions and their twins, what the canvases hold, the batches of distinct captions, the train/test image split, and
the swap accuracy's definition on hand-made rankings."""

import pytest
import torch

from hf_attention.apps.data import FASHION_MNIST_DIR
from hf_attention.apps.data_image_text import (
    GARMENTS,
    Garments,
    distinct_caption_batch,
    draw_relation_canvases,
    relation_captions,
)


def constant_garments() -> Garments:
    """Garment class c is one 28x28 image of the constant value c + 1, so each cell of a canvas says its class."""
    images = (torch.arange(10, dtype=torch.uint8) + 1)[:, None, None].expand(10, 28, 28)
    return Garments(images=images, starts=torch.arange(10), counts=torch.ones(10, dtype=torch.long))


def test_three_garment_captions_name_distinct_garments_and_their_twins_are_the_other_orders():
    captions = relation_captions(3)
    assert len(captions) == 720 == 10 * 9 * 8 and len(set(captions.texts)) == 720
    assert captions.image_size == (28, 84) and captions.twins.shape == (720, 5)
    assert captions.texts[0] == "t-shirt left of trouser left of pullover"
    for caption in (0, 1, 357, 719):
        order = captions.garments[caption].tolist()
        assert len(set(order)) == 3
        assert captions.texts[caption] == " left of ".join(GARMENTS[garment] for garment in order)
        twin_orders = {tuple(captions.garments[twin].tolist()) for twin in captions.twins[caption].tolist()}
        # the five other permutations of the same three garments, none of them the caption itself
        assert len(twin_orders) == 5 and tuple(order) not in twin_orders
        assert all(sorted(twin) == sorted(order) for twin in twin_orders)
    # twins are mutual: a caption's group (itself and its twins) is the same seen from any member
    groups = torch.cat((torch.arange(720)[:, None], captions.twins), dim=1).sort(dim=1).values
    assert torch.equal(groups[captions.twins[:, 2]], groups)
    assert len({tuple(group) for group in groups.tolist()}) == 120  # 10 choose 3 sets of garments
    two = relation_captions(2)  # the two-garment task is unchanged: one twin, the swapped caption
    assert (
        len(two) == 180 and two.twins.shape == (180, 1) and two.texts[int(two.swapped[0])] == "trouser left of t-shirt"
    )
    with pytest.raises(ValueError, match=r"`objects` must be 2 .* or 3 .*, got 4"):
        relation_captions(4)


def test_three_garment_canvases_hold_the_named_garments_left_to_right():
    captions = relation_captions(3)
    indices = torch.arange(720)
    pixels = draw_relation_canvases(captions, indices, constant_garments(), torch.Generator().manual_seed(0))
    assert pixels.shape == (720, 1, 28, 84) and pixels.min() >= -1 and pixels.max() <= 1
    values = torch.round((pixels[:, 0] + 1) * 127.5).long()
    cells = values.reshape(720, 28, 3, 28)
    # every pixel of a cell is its garment's value: cell k holds the k-th garment the caption names
    assert torch.equal(cells.amin(dim=(1, 3)), cells.amax(dim=(1, 3)))
    assert torch.equal(cells[:, 0, :, 0], captions.garments + 1)


def test_three_garment_batches_hold_distinct_captions_and_twin_pairs():
    captions = relation_captions(3)
    generator = torch.Generator().manual_seed(0)
    group_of = torch.cat((torch.arange(720)[:, None], captions.twins), dim=1).amin(dim=1)  # smallest member's index
    for _ in range(20):
        chosen = distinct_caption_batch(captions, 16, 0.5, generator)
        assert len(set(chosen.tolist())) == 16  # distinct: every other caption is a negative of the contrastive loss
        groups = torch.bincount(group_of[chosen], minlength=720)
        # four twin pairs (two orders of the same garments), the other eight without any of their twins
        assert (groups == 2).sum() == 4 and (groups == 1).sum() == 8 and groups.max() == 2
    with pytest.raises(ValueError, match=r"needs more caption groups than the 120"):
        distinct_caption_batch(captions, 200, 0.0, generator)


def test_ranking_metrics_count_the_target_above_all_or_each_of_its_twins():
    from hf_attention.apps.training_image_text import ranking_metrics

    # 3 queries over 8 candidates; query q's target is q, its twins the candidates 5, 6, 7
    indices = torch.tensor([[0, 5, 6, 7, 1, 2, 3, 4], [5, 6, 1, 7, 0, 2, 3, 4], [5, 6, 7, 0, 1, 2, 3, 4]])
    targets, twins = torch.tensor([0, 1, 2]), torch.tensor([[5, 6, 7]] * 3)
    metrics = ranking_metrics(indices, targets, twins)
    assert metrics["R@1"] == pytest.approx(1 / 3)  # only query 0 has its target first
    assert metrics["R@5"] == pytest.approx(2 / 3)  # query 2's target is 6th
    assert metrics["swap_accuracy"] == pytest.approx(1 / 3)  # above all three twins: query 0 only
    assert metrics["pairwise_swap_accuracy"] == pytest.approx((3 + 1 + 0) / 9)  # query 1 beats twin 7 alone


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="needs `apt-get install -y dataset-fashion-mnist`")
def test_relation_canvases_are_drawn_from_the_training_images_for_training_and_the_test_images_for_test():
    from hf_attention.apps.data_image_text import RelationCanvasStream, load_garments
    from hf_attention.apps.training_image_text import relation_data

    data = relation_data(per_caption=1, objects=3)
    captions, train, test = data["captions"], data["train"], data["test"]
    assert len(test) == 720 and torch.equal(test.captions, torch.arange(720))

    def image_classes(garments: Garments) -> dict[bytes, set[int]]:
        classes = {}
        for garment, (start, count) in enumerate(zip(garments.starts.tolist(), garments.counts.tolist(), strict=True)):
            for image in garments.images[start : start + count]:
                classes.setdefault(image.numpy().tobytes(), set()).add(garment)
        return classes

    def cells(pixels: torch.Tensor) -> list[bytes]:
        values = torch.round((pixels[:, 0] + 1) * 127.5).to(torch.uint8)
        return [values[item, :, 28 * slot : 28 * (slot + 1)].numpy().tobytes()
                for item in range(len(values)) for slot in range(3)]  # fmt: skip

    test_images = image_classes(load_garments("test"))
    named = captions.garments[test.captions].reshape(-1).tolist()
    assert all(
        garment in test_images.get(cell, ()) for cell, garment in zip(cells(test.pixel_values), named, strict=True)
    )
    stream = iter(RelationCanvasStream(captions, train, batch_size=16, seed=0))
    examples = [next(stream) for _ in range(32)]
    train_images = image_classes(train)
    named = captions.garments[torch.tensor([example["caption"] for example in examples])].reshape(-1).tolist()
    pixels = torch.stack([example["pixel_values"] for example in examples])
    assert all(garment in train_images.get(cell, ()) for cell, garment in zip(cells(pixels), named, strict=True))
