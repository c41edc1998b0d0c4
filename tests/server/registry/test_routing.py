"""Tests of A/B arm choice."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from regserve.server.errors import InvalidInput
from regserve.server.registry.routing import SplitTable, choose_arm, key_point

KEYS = [f"user-{i}" for i in range(10_000)]


def test_ninety_ten_split_shares():
    table = SplitTable({"v3": 90.0, "v4": 10.0})
    counts = Counter(table.choose(key) for key in KEYS)
    assert set(counts) == {"v3", "v4"}
    assert 0.085 <= counts["v4"] / len(KEYS) <= 0.115


def test_same_key_same_arm():
    table = SplitTable({"v3": 90.0, "v4": 10.0})
    first = [table.choose(key) for key in KEYS[:2000]]
    again = [SplitTable({"v4": 10.0, "v3": 90.0}).choose(key) for key in KEYS[:2000]]
    assert first == again
    assert first == [choose_arm({"v3": 0.9, "v4": 0.1}, key) for key in KEYS[:2000]]


def test_weights_are_normalised():
    assert SplitTable({"v1": 3, "v2": 1}).weights == pytest.approx((0.75, 0.25))
    # Scaling every weight changes nothing.
    for key in KEYS[:500]:
        assert choose_arm({"v1": 3, "v2": 1}, key) == choose_arm({"v1": 300, "v2": 100}, key)
    counts = Counter(choose_arm({"v1": 3, "v2": 1}, key) for key in KEYS)
    assert 0.72 <= counts["v1"] / len(KEYS) <= 0.78


def test_arms_in_version_order():
    table = SplitTable({"v10": 1, "v9": 1, "v2": 1})
    assert table.arms == ("v2", "v9", "v10")
    assert table.bounds[-1] == 1.0


def test_zero_weight_arm_never_chosen():
    table = SplitTable({"v1": 0.0, "v2": 1.0, "v3": 0.0, "v4": 1.0, "v5": 0})
    counts = Counter(table.choose(key) for key in KEYS)
    assert set(counts) == {"v2", "v4"}
    assert table.arms == ("v2", "v4")


def test_single_arm():
    assert {choose_arm({"v7": 5}, key) for key in KEYS[:100]} == {"v7"}


def test_key_point_range_and_determinism():
    points = [key_point(key) for key in KEYS]
    assert all(0.0 <= p < 1.0 for p in points)
    assert key_point("abc") == key_point("abc") != key_point("abd")
    assert 0.45 < sum(points) / len(points) < 0.55


def test_empty_key_draws_at_random():
    random.seed(1234)
    table = SplitTable({"v1": 1, "v2": 1})
    counts = Counter(table.choose("") for _ in range(4000))
    assert 0.45 <= counts["v1"] / 4000 <= 0.55


@pytest.mark.parametrize("split", [{}, {"v1": 0}, {"v1": -1, "v2": 2}, {"v1": float("nan")}, {"v1": float("inf")}])
def test_invalid_splits(split):
    with pytest.raises(InvalidInput) as info:
        SplitTable(split)
    assert info.value.reason == "INVALID_SPLIT"
