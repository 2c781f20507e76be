"""Tests for peer.engine.agreement: exact MDA against brute force, GDA, fallbacks, validation."""


from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.engine.agreement import (
    AGREEMENT_NAMES,
    GDA,
    MDA,
    AgreementResult,
    AgreementRule,
    NoAgreement,
    make_agreement,
)
from peer.engine.mda import mda_select
from peer.engine.vectors import pairwise_distances
from tests.support.mda_inputs import random_inputs


@given(seed=st.integers(0, 2**31 - 1), far=st.booleans())
@settings(max_examples=20, deadline=None)
def test_mda_diameter_within_honest_diameter(seed: int, far: bool) -> None:
    """K = 13, f = 3: the chosen set's diameter never exceeds the honest diameter (the honest
    set is a candidate), and far Byzantine vectors are never chosen."""
    rng = np.random.default_rng(seed)
    k, f, d = 13, 3, 8
    q = k - f
    honest = rng.standard_normal(d) + 0.1 * rng.standard_normal((q, d))
    if far:
        byz = 1e3 * rng.standard_normal((f, d))
    else:  # just inside the honest ball, all in one direction (MDA-fooling placement)
        u = rng.standard_normal(d)
        byz = honest.mean(axis=0) + 0.25 * u / np.linalg.norm(u) + 1e-3 * rng.standard_normal((f, d))
    perm = rng.permutation(k)
    x = np.concatenate([honest, byz])[perm]
    is_byz = perm >= q
    h_diam = float(pairwise_distances(honest).max())
    own = x[int(np.nonzero(~is_byz)[0][0])]
    res = MDA()(own, x, q)
    sel = np.array(res.selected)
    assert float(pairwise_distances(x[sel]).max()) <= h_diam
    assert np.linalg.norm(res.vector - honest.mean(axis=0)) <= h_diam
    if far:
        assert not is_byz[sel].any()
        np.testing.assert_allclose(res.vector, honest.mean(axis=0), rtol=1e-12, atol=1e-12)


@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 14), d=st.integers(1, 4),
       kind=st.sampled_from(["gauss", "lattice", "dups"]), data=st.data())
@settings(max_examples=40, deadline=None)
def test_gda_picks_the_closest_q(seed: int, m: int, d: int, kind: str, data: st.DataObject) -> None:
    x = random_inputs(np.random.default_rng(seed), m, d, kind)
    q = data.draw(st.integers(1, m), label="q")
    own_row = data.draw(st.integers(0, m - 1), label="own_row")
    own = x[own_row]
    res = GDA()(own, x, q)
    to_own = [float(np.sqrt(np.sum((x[i] - own) ** 2))) for i in range(m)]
    expected = tuple(sorted(sorted(range(m), key=lambda i: (to_own[i], i))[:q]))  # ties: lower index
    assert not res.fell_back and res.selected == expected
    assert np.array_equal(res.vector, x[list(expected)].mean(axis=0))
    # every chosen vector is at least as close as every vector left out
    if q < m:
        assert max(to_own[i] for i in expected) <= min(to_own[i] for i in range(m) if i not in expected)


def test_gda_known_example() -> None:
    own = np.array([0.0, 0.0])
    x = np.array([[5.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 2.0]])
    res = GDA()(own, x, 3)
    assert res.selected == (1, 2, 3)  # distances 0, 1, 1; row 4 (2) and row 0 (5) left out
    np.testing.assert_allclose(res.vector, [1 / 3, -1 / 3])


@pytest.mark.parametrize("name", AGREEMENT_NAMES)
def test_fewer_than_q_keeps_own(name: str) -> None:
    rule = make_agreement(name)
    own = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    x = np.array([[1.0, 2.0, 3.0], [4.0, 6.0, 3.0]])
    res = rule(own, x, 3)
    assert isinstance(res, AgreementResult)
    assert res.fell_back is True and res.selected == ()
    assert res.vector.dtype == np.float64 and np.array_equal(res.vector, own.astype(np.float64))
    assert res.diameter == 5.0
    empty = rule(own, np.zeros((0, 3)), 2)
    assert empty.fell_back is True and empty.diameter == 0.0 and np.array_equal(empty.vector, own)


def test_none_returns_own() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 4))
    own = x[3].copy()
    res = NoAgreement()(own, x, 5)
    assert res.fell_back is False and np.array_equal(res.vector, own)
    assert res.diameter == float(pairwise_distances(x).max())
    res.vector[0] = 99.0  # the result is a copy: the caller's vector is untouched
    assert own[0] == x[3, 0]


def test_mda_q_one_and_q_all() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3))
    res = MDA()(x[2], x, 1)
    assert not res.fell_back and np.array_equal(res.vector, x[2])
    res = MDA()(x[2], x, 5)
    assert res.selected == (0, 1, 2, 3, 4) and np.array_equal(res.vector, x.mean(axis=0))


def test_float32_inputs_same_as_their_float64_copy() -> None:
    rng = np.random.default_rng(2)
    x32 = rng.standard_normal((9, 6)).astype(np.float32)
    for name in AGREEMENT_NAMES:
        a = make_agreement(name)(x32[0], x32, 7)
        b = make_agreement(name)(x32[0].astype(np.float64), x32.astype(np.float64), 7)
        assert np.array_equal(a.vector, b.vector) and a.selected == b.selected and a.diameter == b.diameter


def test_names_and_factory() -> None:
    assert AGREEMENT_NAMES == ("mda", "gda", "none")
    assert isinstance(make_agreement("mda"), MDA)
    assert isinstance(make_agreement("gda"), GDA)
    assert isinstance(make_agreement("none"), NoAgreement)
    assert all(isinstance(make_agreement(n), AgreementRule) for n in AGREEMENT_NAMES)
    with pytest.raises(ValueError, match="unknown agreement rule 'avg'.*mda, gda, none") as info:
        make_agreement("avg")
    assert "\n" not in str(info.value)


def test_result_is_frozen() -> None:
    res = MDA()(np.zeros(2), np.zeros((3, 2)), 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.fell_back = True  # type: ignore[misc]


@pytest.mark.parametrize("name", AGREEMENT_NAMES)
def test_invalid_inputs_raise(name: str) -> None:
    rule = make_agreement(name)
    ok = np.zeros((4, 3))
    with pytest.raises(ValueError):
        rule(np.zeros((1, 3)), ok, 2)  # own not 1-D
    with pytest.raises(ValueError):
        rule(np.zeros(3), np.zeros((4, 2)), 2)  # dimension mismatch
    with pytest.raises(ValueError):
        rule(np.zeros(3), np.zeros(3), 2)  # received not 2-D
    with pytest.raises(ValueError):
        rule(np.zeros(3), ok, 0)  # q < 1
    bad = ok.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"non-finite.*\[1\]"):
        rule(np.zeros(3), bad, 2)
    with pytest.raises(ValueError, match="own"):
        rule(np.array([0.0, np.inf, 0.0]), ok, 2)
    with pytest.raises(ValueError):
        mda_select(ok, 5)
