"""PSI against values worked by hand, binning into quantile bins, and the reference's stored arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from regserve.server.models.drift import BINS, DRIFT_KEYS, PSI_FLOOR, DriftReference, bin_counts, psi


def test_psi_of_a_distribution_against_itself_is_zero():
    shares = np.array([0.1, 0.2, 0.3, 0.4])
    assert psi(shares, shares) == 0.0


def test_psi_of_known_shares():
    # (0.25 - 0.5)·ln(0.25/0.5) + (0.75 - 0.5)·ln(0.75/0.5) = 0.25·(ln 2 + ln 1.5) = 0.25·ln 3.
    assert psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(0.25 * math.log(3), rel=1e-12)


def test_psi_takes_counts_and_is_symmetric_in_its_two_terms():
    # Counts are normalised; the PSI sums (a - e)·ln(a / e), which swapping a and e leaves unchanged.
    assert psi(np.array([50, 50]), np.array([1, 3])) == pytest.approx(0.25 * math.log(3), rel=1e-12)
    assert psi(np.array([1, 3]), np.array([2, 2])) == pytest.approx(0.25 * math.log(3), rel=1e-12)


def test_psi_floors_empty_bins_so_it_stays_finite():
    value = psi(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    expected = 2 * (1 - PSI_FLOOR) * math.log(1 / PSI_FLOOR)
    assert value == pytest.approx(expected, rel=1e-12)


def test_psi_of_many_features_at_once():
    expected = np.array([[0.5, 0.5], [0.5, 0.5]])
    actual = np.array([[0.5, 0.5], [0.25, 0.75]])
    np.testing.assert_allclose(psi(expected, actual), [0.0, 0.25 * math.log(3)], rtol=1e-12)


def test_bin_counts_puts_each_value_left_closed_into_its_bin():
    edges = np.tile(np.arange(1.0, BINS), (2, 1))  # inner edges 1 .. 9: bin i holds [i, i + 1)
    X = np.array([[-5.0, 0.5], [1.0, 9.0], [1.5, 42.0], [9.0, 8.999]])
    counts = bin_counts(X, edges)
    assert counts.shape == (2, BINS)
    np.testing.assert_array_equal(np.nonzero(counts[0])[0], [0, 1, 9])
    assert counts[0, 1] == 2  # 1.0 and 1.5
    np.testing.assert_array_equal(np.nonzero(counts[1])[0], [0, 8, 9])
    assert counts[1, 9] == 2  # 9.0 and 42.0
    assert counts.sum() == X.size


def test_bin_counts_of_deciles_are_even():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(10_000, 3)) * [1, 10, 100]
    edges = np.quantile(X, np.arange(1, BINS) / BINS, axis=0).T
    counts = bin_counts(X, edges)
    np.testing.assert_array_equal(counts, np.full((3, BINS), 1000))


def test_repeated_edges_of_a_discrete_feature_leave_their_bins_empty():
    X = np.array([[0.0], [0.0], [0.0], [1.0]])
    edges = np.quantile(X, np.arange(1, BINS) / BINS, axis=0).T  # 0 up to 0.7, then 1
    counts = bin_counts(X, edges)[0]
    assert counts.sum() == 4
    assert counts[np.searchsorted(edges[0], 0.0, side="right")] == 3
    assert counts[BINS - 1] == 1


def test_bin_counts_of_a_large_block_match_searchsorted_per_feature():
    # Past 50,000 values the rows are compared side by side; ties on the edges, repeated edges, a
    # remainder of rows that does not fill a side-by-side row and a strided view must all count as one by one.
    rng = np.random.default_rng(8)
    block = np.round(rng.normal(size=(20_003, 7)), 1)
    X = block[:, :5]
    edges = np.quantile(X[:300], np.arange(1, BINS) / BINS, axis=0).T
    edges[4] = [0.0] * 4 + [0.5] * 5
    counts = bin_counts(X, edges)
    expected = [np.bincount(np.searchsorted(edges[j], X[:, j], side="right"), minlength=BINS) for j in range(5)]
    np.testing.assert_array_equal(counts, expected)
    assert counts.dtype == np.int64 and counts.flags.c_contiguous


def _reference(classes=None) -> DriftReference:
    edges = np.tile(np.arange(1.0, BINS), (2, 1))
    return DriftReference(edges, np.full((2, BINS), 1 / BINS), np.zeros(2), np.ones(2), classes)


def test_reference_arrays_round_trip_as_plain_floats():
    reference = _reference(np.array([0.25, 0.75]))
    arrays = reference.to_arrays()
    assert set(arrays) == set(DRIFT_KEYS)
    assert all(a.dtype == np.float64 for a in arrays.values())
    loaded = DriftReference.from_arrays(arrays, 2)
    assert loaded is not None
    np.testing.assert_array_equal(loaded.edges, reference.edges)
    np.testing.assert_array_equal(loaded.class_proportions, [0.25, 0.75])


def test_a_regression_reference_stores_no_classes():
    arrays = _reference().to_arrays()
    assert DRIFT_KEYS[4] not in arrays
    loaded = DriftReference.from_arrays(arrays, 2)
    assert loaded is not None and loaded.class_proportions is None


def test_versions_without_a_reference_or_with_one_that_does_not_fit_have_none():
    assert DriftReference.from_arrays({"coef": np.zeros((1, 2))}, 2) is None
    assert DriftReference.from_arrays(_reference().to_arrays(), 3) is None
