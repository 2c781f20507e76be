"""Inputs for agreement and MDA tests: vectors with and without distance ties, and the brute-force check."""

from __future__ import annotations

import numpy as np

from peer.engine.agreement import MDA
from peer.engine.mda import mda_brute_force, mda_select
from peer.engine.vectors import pairwise_distances


def random_inputs(rng: np.random.Generator, m: int, d: int, kind: str) -> np.ndarray:
    """Inputs with and without ties: Gaussian, small integer lattice (many equal distances),
    and Gaussian with duplicated rows."""
    if kind == "gauss":
        return rng.standard_normal((m, d))
    if kind == "lattice":
        return rng.integers(-1, 2, size=(m, d)).astype(np.float64)
    x = rng.standard_normal((m, d))
    dup = rng.integers(0, m, size=m // 2)
    x[rng.permutation(m)[: m // 2]] = x[dup]
    return x


def assert_same_as_brute_force(x: np.ndarray, q: int) -> None:
    idx, diam = mda_select(x, q)
    b_idx, b_diam, b_mean = mda_brute_force(x, q)
    assert idx == b_idx
    assert diam == b_diam
    own = x[0]
    res = MDA()(own, x, q)
    assert not res.fell_back
    if q == 1:  # documented: the own vector is kept (any single vector has diameter 0)
        assert np.array_equal(res.vector, own)
        return
    assert res.selected == b_idx
    assert np.array_equal(res.vector, b_mean)  # bit for bit
    assert res.diameter == float(pairwise_distances(x).max())
