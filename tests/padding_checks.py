"""What every padding mask check must refuse, shared by the token-sequence family tests."""

import torch

NOT_ZERO_ONE = r"only 0 \(padding\) and 1 \(keep\)"
WRONG_SHAPE = r"must have shape \(batch_size, length\)"


def keep_first(lengths: list[int], length: int) -> torch.Tensor:
    """1 for the first `n` positions of each row, 0 after; a length of 0 is a row that is all padding."""
    return (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()


def bad_masks(batch_size: int, length: int) -> list[tuple[str, torch.Tensor, str]]:
    """(what it is, mask, message the refusal must match): masks that would otherwise give a silent wrong answer."""
    ones = torch.ones(batch_size, length)
    additive = torch.zeros(batch_size, length)
    additive[:, -1] = float("-inf")  # transformers' additive convention: 0 keeps, -inf masks
    return [
        ("additive 0/-inf", additive, NOT_ZERO_ONE),
        ("fractions", ones * 0.5, NOT_ZERO_ONE),
        ("twos", ones * 2, NOT_ZERO_ONE),
        ("1-D", ones[0], WRONG_SHAPE),
        ("batch of 1", ones[:1], WRONG_SHAPE),
    ]


MASK_IDS = [kind for kind, _, _ in bad_masks(2, 2)]
