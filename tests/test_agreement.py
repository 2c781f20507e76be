"""Tests for peer.engine.agreement: exact MDA against brute force, GDA, fallbacks, validation."""

from __future__ import annotations

import dataclasses
import itertools
import math

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
    benchmark_mda,
    make_agreement,
    mda_brute_force,
    mda_select,
    pairwise_distances,
)


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
    assert res.kept
    if q == 1:  # documented: the own vector is kept (any single vector has diameter 0)
        assert np.array_equal(res.vector, own)
        return
    assert res.selected == b_idx
    assert np.array_equal(res.vector, b_mean)  # bit for bit
    assert res.diameter == float(pairwise_distances(x).max())


# --------------------------------------------------------------------------- MDA exactness


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


# --------------------------------------------------------------------------- MDA robustness


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


# --------------------------------------------------------------------------- GDA


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
    assert res.kept and res.selected == expected
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


# --------------------------------------------------------------------------- fallbacks, none


@pytest.mark.parametrize("name", AGREEMENT_NAMES)
def test_fewer_than_q_keeps_own(name: str) -> None:
    rule = make_agreement(name)
    own = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    x = np.array([[1.0, 2.0, 3.0], [4.0, 6.0, 3.0]])
    res = rule(own, x, 3)
    assert isinstance(res, AgreementResult)
    assert res.kept is False and res.selected == ()
    assert res.vector.dtype == np.float64 and np.array_equal(res.vector, own.astype(np.float64))
    assert res.diameter == 5.0
    empty = rule(own, np.zeros((0, 3)), 2)
    assert empty.kept is False and empty.diameter == 0.0 and np.array_equal(empty.vector, own)


def test_none_returns_own() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 4))
    own = x[3].copy()
    res = NoAgreement()(own, x, 5)
    assert res.kept is True and np.array_equal(res.vector, own)
    assert res.diameter == float(pairwise_distances(x).max())
    res.vector[0] = 99.0  # the result is a copy: the caller's vector is untouched
    assert own[0] == x[3, 0]


def test_mda_q_one_and_q_all() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3))
    res = MDA()(x[2], x, 1)
    assert res.kept and np.array_equal(res.vector, x[2])
    res = MDA()(x[2], x, 5)
    assert res.selected == (0, 1, 2, 3, 4) and np.array_equal(res.vector, x.mean(axis=0))


def test_float32_inputs_same_as_their_float64_copy() -> None:
    rng = np.random.default_rng(2)
    x32 = rng.standard_normal((9, 6)).astype(np.float32)
    for name in AGREEMENT_NAMES:
        a = make_agreement(name)(x32[0], x32, 7)
        b = make_agreement(name)(x32[0].astype(np.float64), x32.astype(np.float64), 7)
        assert np.array_equal(a.vector, b.vector) and a.selected == b.selected and a.diameter == b.diameter


# --------------------------------------------------------------------------- API and validation


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
        res.kept = False  # type: ignore[misc]


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


def test_brute_force_enumerates_in_lexicographic_order() -> None:
    # sanity of the reference itself: the tie rule is "first optimal combination"
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert mda_brute_force(x, 2)[0] == (0, 1)
    assert list(itertools.combinations(range(4), 2))[0] == (0, 1)
    assert mda_brute_force(x, 3)[:2] == ((0, 1, 2), 2.0)


def test_benchmark_smoke() -> None:
    rows = benchmark_mda(ks=(9,), d=16, repeats=2, time_limit_s=5.0, verbose=False)
    assert [r["case"] for r in rows] == ["adversarial", "iid"]
    for r in rows:
        assert (r["K"], r["f"], r["q"], r["subsets"]) == (9, 2, 7, 36)
        assert r["runs"] == 2 and not r["over_cap"] and r["median_s"] <= r["max_s"]
    capped = benchmark_mda(ks=(9,), d=16, repeats=2, time_limit_s=0.0, cases=("iid",), verbose=False)
    assert capped[0]["over_cap"] and capped[0]["runs"] <= 1
