"""Streamed moments: merged block by block, they equal the two-pass moments of all the rows."""

import numpy as np

from regserve.server.models.training.moments import Moments


def test_moments_added_in_uneven_blocks_match_the_two_pass_moments():
    rng = np.random.default_rng(21)
    V = rng.normal(size=(1000, 3)) * [1.0, 10.0, 0.1] + [5.0, -300.0, 0.0]
    moments = Moments(3)
    for block in np.split(V, [1, 2, 250, 250, 900]):  # includes an empty block
        moments.add(block)
    centred = V - V.mean(axis=0)
    assert moments.n == 1000
    np.testing.assert_allclose(moments.mean, V.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(moments.comoment, centred.T @ centred, rtol=1e-10)
    assert moments.min.tolist() == V.min(axis=0).tolist() and moments.max.tolist() == V.max(axis=0).tolist()


def test_combined_merges_the_parts_and_leaves_them_unchanged():
    rng = np.random.default_rng(22)
    V = rng.normal(size=(300, 2)) + [1.0, -1.0]
    parts = [Moments(2) for _ in range(3)]
    parts[0].add(V[:100])
    parts[2].add(V[100:])  # parts[1] stays empty
    total = Moments.combined(parts)
    centred = V - V.mean(axis=0)
    assert total.n == 300 and [part.n for part in parts] == [100, 0, 200]
    np.testing.assert_allclose(total.mean, V.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(total.comoment, centred.T @ centred, rtol=1e-10)
    np.testing.assert_allclose(parts[0].mean, V[:100].mean(axis=0), rtol=1e-12)


def test_moments_with_a_scratch_buffer_are_the_same_to_the_bit():
    rng = np.random.default_rng(21)
    plain, scratched = Moments(4), Moments(4)
    scratch = np.full(300 * 4, np.nan)
    for rows in (300, 7, 1, 250):
        V = rng.normal(size=(rows, 6))[:, :4]  # a strided view, as the trainer passes
        plain.add(V)
        scratched.add(V, scratch)
    for name in ("mean", "comoment", "min", "max"):
        assert np.array_equal(getattr(plain, name), getattr(scratched, name))
    assert plain.n == scratched.n == 558
