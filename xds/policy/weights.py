"""Turning relative backend weights into integer shares that sum to a fixed total.

Users write relative weights (90/10, 3/1, 1/1/1); every weighted-cluster route we send sums to the same
TOTAL_WEIGHT so that snapshots are comparable and a test can assert the sum (docs/protocol.md case B2).
Rounding uses the largest-remainder method: each share is within 1 of its exact value, a zero weight stays
zero, and ties go to the earlier backend so equal inputs always give equal outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

TOTAL_WEIGHT = 100


def normalize_weights(weights: Sequence[int], *, total: int = TOTAL_WEIGHT) -> tuple[int, ...]:
    """Scale `weights` to non-negative integers summing to exactly `total`, in the same order.

    Raises ValueError when a weight is negative or all weights are zero (there is nothing to scale).
    """
    if total <= 0:
        raise ValueError(f"total must be positive, got {total}")
    if any(w < 0 for w in weights):
        raise ValueError(f"weights must be >= 0, got {list(weights)}")
    weight_sum = sum(weights)
    if weight_sum == 0:
        raise ValueError("weights sum to 0; at least one must be positive")
    # Integer arithmetic throughout: floats would make ties depend on rounding noise.
    floors = [w * total // weight_sum for w in weights]
    remainders = [w * total % weight_sum for w in weights]
    leftover = total - sum(floors)
    # The fractional parts sum to exactly `leftover` and each is < 1, so more than `leftover` entries have a
    # non-zero remainder: the +1s below never land on a zero weight.
    by_remainder = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    shares = list(floors)
    for i in by_remainder[:leftover]:
        shares[i] += 1
    return tuple(shares)
