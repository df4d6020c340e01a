from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xds.policy.weights import TOTAL_WEIGHT, normalize_weights

# At least one positive weight; zeros mixed in.
weight_lists = st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=40).filter(
    lambda ws: sum(ws) > 0
)


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ([1], (100,)),
        ([90, 10], (90, 10)),
        ([9, 1], (90, 10)),
        ([1, 1, 1], (34, 33, 33)),  # ties: the earlier backend gets the leftover
        ([1, 1, 1, 1, 1, 1], (17, 17, 17, 17, 16, 16)),
        ([0, 5], (0, 100)),
        ([2, 0, 1], (67, 0, 33)),
        ([1, 1000], (0, 100)),  # a share below half a percent rounds to nothing
    ],
)
def test_examples(weights: list[int], expected: tuple[int, ...]) -> None:
    assert normalize_weights(weights) == expected


@pytest.mark.parametrize("weights", [[], [0], [0, 0, 0]])
def test_sum_zero_is_refused(weights: list[int]) -> None:
    with pytest.raises(ValueError, match="sum to 0"):
        normalize_weights(weights)


def test_negative_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        normalize_weights([5, -1])


@given(weight_lists)
def test_sum_is_exact(weights: list[int]) -> None:
    assert sum(normalize_weights(weights)) == TOTAL_WEIGHT


@given(weight_lists)
def test_each_share_within_one_of_exact(weights: list[int]) -> None:
    total = sum(weights)
    for weight, share in zip(weights, normalize_weights(weights), strict=True):
        assert abs(share - Fraction(weight * TOTAL_WEIGHT, total)) < 1


@given(weight_lists)
def test_zero_stays_zero(weights: list[int]) -> None:
    for weight, share in zip(weights, normalize_weights(weights), strict=True):
        if weight == 0:
            assert share == 0


@given(weight_lists)
def test_monotonic(weights: list[int]) -> None:
    shares = normalize_weights(weights)
    for i, (wi, si) in enumerate(zip(weights, shares, strict=True)):
        for j, (wj, sj) in enumerate(zip(weights, shares, strict=True)):
            if wi > wj:
                assert si >= sj
            if wi == wj and i < j:
                assert sj <= si <= sj + 1  # equal weights: the earlier one may get one more


@given(weight_lists)
def test_deterministic_and_scale_invariant(weights: list[int]) -> None:
    assert normalize_weights(weights) == normalize_weights(list(weights))
    assert normalize_weights(weights) == normalize_weights([w * 7 for w in weights])


@given(weight_lists, st.integers(min_value=1, max_value=10_000))
def test_other_totals(weights: list[int], total: int) -> None:
    assert sum(normalize_weights(weights, total=total)) == total
