"""peer.engine.mda: the exact search equals brute-force enumeration, ties included."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.engine.agreement import MDA
from peer.engine.mda import mda_brute_force, mda_select
from peer.engine.vectors import pairwise_distances
from tests.support.mda_inputs import assert_same_as_brute_force, random_inputs


@pytest.mark.parametrize("kind", ["gauss", "lattice", "dups"])
def test_mda_equals_brute_force_seeded(kind: str) -> None:
    rng = np.random.default_rng({"gauss": 1, "lattice": 2, "dups": 3}[kind])
    for m in range(4, 14):
        qs = sorted({2, 3, m // 2, m - (m - 1) // 4, m - 1, m})
        for q in qs:
            for _ in range(2 if m >= 12 else 3):
                d = int(rng.choice([1, 2, 3, 5]))
                assert_same_as_brute_force(random_inputs(rng, m, d, kind), q)


@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 12), d=st.integers(1, 4),
       kind=st.sampled_from(["gauss", "lattice", "dups"]), data=st.data())
@settings(max_examples=60, deadline=None)
def test_mda_equals_brute_force_hypothesis(seed: int, m: int, d: int, kind: str, data: st.DataObject) -> None:
    q = data.draw(st.integers(1, m), label="q")
    assert_same_as_brute_force(random_inputs(np.random.default_rng(seed), m, d, kind), q)


def test_mda_equals_brute_force_larger_k_few_left_out() -> None:
    """Up to K = 24, with m - q <= 3 the enumeration is still cheap (C(24, 3) = 2024)."""
    rng = np.random.default_rng(7)
    for m in (16, 20, 24):
        for left_out in (1, 2, 3):
            for kind in ("gauss", "lattice", "dups"):
                assert_same_as_brute_force(random_inputs(rng, m, 3, kind), m - left_out)


def test_mda_all_equal_distances() -> None:
    # regular simplex: every pair at the same distance -> all subsets tie, the first one wins
    x = np.eye(7)
    idx, diam = mda_select(x, 5)
    assert idx == (0, 1, 2, 3, 4)
    assert diam == math.sqrt(2.0)
    assert_same_as_brute_force(x, 5)
    # all vectors identical
    y = np.ones((6, 3))
    assert mda_select(y, 4) == ((0, 1, 2, 3), 0.0)
    assert np.array_equal(MDA()(y[2], y, 4).vector, np.ones(3))


def test_mda_large_k_consistent_and_fast() -> None:
    """K = 64, f = 15: the chosen subset has the reported diameter and is at least as good
    as the honest set and as every "point plus its q - 1 nearest" subset."""
    rng = np.random.default_rng(11)
    k, f = 64, 15
    q = k - f
    honest = rng.standard_normal(50) + 0.1 * rng.standard_normal((q, 50))
    byz = honest.mean(axis=0) + 0.9 * rng.standard_normal((f, 50))
    x = np.concatenate([honest, byz])[rng.permutation(k)]
    dist = pairwise_distances(x)
    idx, diam = mda_select(x, q)
    assert len(idx) == q and list(idx) == sorted(set(idx))
    assert float(dist[np.ix_(idx, idx)].max()) == diam
    order = np.argsort(dist, axis=1, kind="stable")
    for i in range(k):
        nb = order[i, :q]
        assert diam <= dist[np.ix_(nb, nb)].max()


def test_brute_force_enumerates_in_lexicographic_order() -> None:
    # sanity of the reference itself: the tie rule is "first optimal combination"
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert mda_brute_force(x, 2)[0] == (0, 1)
    assert list(itertools.combinations(range(4), 2))[0] == (0, 1)
    assert mda_brute_force(x, 3)[:2] == ((0, 1, 2), 2.0)
