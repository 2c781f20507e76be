"""Averaging agreement rules: one round of AvgAgree at one peer.

``rule(own (d,), received (m, d), q) -> AgreementResult``. ``received`` holds one vector per
sender that delivered in time this round, the peer's own vector included (the caller puts it
there); ``q = K - f``. Rules:

- ``mda``: minimum-diameter averaging (El-Mhamdi et al.). Among the received vectors choose
  S, |S| = q, minimising diam(S) = max_{a, b in S} ||a - b||, and return mean(S). At most
  f received vectors are Byzantine, so S holds at least q - f honest ones; when all K - f
  honest vectors arrived, the honest set is itself a candidate, so diam(S) <= the honest
  diameter and every Byzantine vector in S lies that close to the honest ones in S. This is
  what makes the honest diameter contract each round when K >= 4f + 1. Computed exactly
  without enumerating the C(m, q) subsets (see ``mda_select``).
- ``gda``: greedy: the q received vectors closest to the peer's own vector. O(m d + m log m)
  for the choice; needs K >= 5f + 1.
- ``none``: keep the own vector (baselines without agreement).

Deterministic tie-breaking. MDA: among all q-subsets achieving the minimum diameter, the
lexicographically smallest sorted tuple of row indices (as ``itertools.combinations``
enumerates them, the first optimal one); ``mda_brute_force`` uses the same rule, so both
return the same subset and the bit-identical mean. GDA: stable sort of the distances to own
(equal distances go to the lower row index). The chosen rows are always averaged in
increasing row order. Ties depend on the row order, so callers should order rows the same
way everywhere (e.g. by sender id) for peers to reproduce each other. All distances are computed in float64 from explicit differences (no
Gram-matrix trick), each pairwise entry once and mirrored, so comparisons between
distances are exact and reproducible.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "AGREEMENT_NAMES",
    "AgreementResult",
    "AgreementRule",
    "GDA",
    "MDA",
    "MDATimeout",
    "NoAgreement",
    "benchmark_mda",
    "make_agreement",
    "mda_brute_force",
    "mda_select",
    "pairwise_distances",
]


@dataclass(frozen=True, eq=False)
class AgreementResult:
    """Outcome of one agreement round at one peer.

    vector:   the peer's new vector (float64, shape (d,)).
    diameter: max pairwise L2 distance among ALL received vectors (0.0 for fewer than two),
              for logging the spread the round started from.
    kept:     False when fewer than q vectors arrived, in which case the peer kept its own
              vector for this round (to be recorded); True otherwise.
    selected: row indices of ``received`` that were averaged (sorted); () when the own
              vector was returned without averaging.
    """

    vector: np.ndarray
    diameter: float
    kept: bool
    selected: tuple[int, ...] = ()


# --------------------------------------------------------------------------- helpers


def _as_inputs(own: np.ndarray, received: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray, int]:
    own_arr = np.asarray(own)
    if own_arr.ndim != 1:
        raise ValueError(f"own vector must be 1-D, got shape {own_arr.shape}")
    rec = np.asarray(received)
    if rec.ndim == 2 and rec.shape[0] == 0:
        rec = rec.reshape(0, own_arr.shape[0])
    if rec.ndim != 2 or rec.shape[1] != own_arr.shape[0]:
        raise ValueError(f"received must be a 2-D array (m, {own_arr.shape[0]}), got shape {rec.shape}")
    if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or q < 1:
        raise ValueError(f"q (= K - f, the number of vectors to average) must be an integer >= 1, got {q!r}")
    own64 = np.array(own_arr, dtype=np.float64, order="C", copy=True)
    rec64 = np.array(rec, dtype=np.float64, order="C", copy=True)
    if not np.isfinite(own64).all():
        raise ValueError("own vector has non-finite values")
    if not np.isfinite(rec64).all():
        bad = sorted({int(i) for i in np.nonzero(~np.isfinite(rec64))[0]})
        raise ValueError(f"received vectors have non-finite values in rows {bad}")
    return own64, rec64, int(q)


def pairwise_distances(x: np.ndarray) -> np.ndarray:
    """Symmetric (m, m) float64 matrix of L2 distances from explicit differences.

    Entry (i, j), i < j, is computed once from rows i and j and mirrored, so the matrix is
    exactly symmetric with an exact zero diagonal.
    """
    x = np.asarray(x, dtype=np.float64)
    m = x.shape[0]
    out = np.zeros((m, m), dtype=np.float64)
    for i in range(m - 1):
        diff = x[i + 1 :] - x[i]
        dist = np.sqrt(np.sum(diff * diff, axis=1))
        out[i, i + 1 :] = dist
        out[i + 1 :, i] = dist
    return out


def _diameter(dist: np.ndarray) -> float:
    return float(dist.max()) if dist.size else 0.0


def _mean_rows(x: np.ndarray, idx: tuple[int, ...]) -> np.ndarray:
    """Mean of rows ``idx`` (sorted) in row order: the one averaging routine every rule uses."""
    return x[np.asarray(sorted(idx), dtype=np.intp)].mean(axis=0)


def _fallback(own: np.ndarray, dist: np.ndarray) -> AgreementResult:
    return AgreementResult(vector=own, diameter=_diameter(dist), kept=False, selected=())


# --------------------------------------------------------------------------- exact MDA search


class MDATimeout(RuntimeError):
    """Raised by ``mda_select`` when its optional ``deadline`` passes (benchmarks only)."""


class _Clock:
    __slots__ = ("deadline", "nodes")

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.nodes = 0

    def tick(self) -> None:
        self.nodes += 1
        if self.deadline is not None and (self.nodes & 255) == 0 and time.perf_counter() > self.deadline:
            raise MDATimeout("MDA search exceeded its deadline")


def _bitsets(mask: np.ndarray) -> list[int]:
    """Rows of a boolean (m, m) matrix as Python-int bitsets (bit j of row i = mask[i, j])."""
    m = mask.shape[0]
    packed = np.packbits(mask, axis=1, bitorder="little")
    return [int.from_bytes(packed[i].tobytes(), "little") for i in range(m)]


def _has_vertex_cover(s: int, budget: int, nadj: list[int], clock: _Clock) -> bool:
    """Does the graph ``nadj`` restricted to the vertex set ``s`` have a cover of <= budget?

    Fixed-parameter branching (exponential in ``budget`` only) with the classic safe
    reductions: isolated vertices are dropped; a vertex of degree > budget must be in the
    cover; for a degree-1 vertex, its neighbour can be put in the cover; a graph with more
    edges than budget * max degree has no such cover. Branch on a maximum-degree vertex v:
    either v is in the cover, or all its neighbours are.
    """
    while True:
        clock.tick()
        changed = False
        edges2 = 0
        maxdeg = 0
        maxv = -1
        t = s
        while t:
            low = t & -t
            t ^= low
            if not s & low:
                continue
            v = low.bit_length() - 1
            nb = nadj[v] & s
            if not nb:
                s ^= low
                continue
            deg = nb.bit_count()
            if deg > budget:
                s ^= low
                budget -= 1
                if budget < 0:
                    return False
                changed = True
                continue
            if deg == 1:
                s &= ~(nb | low)
                budget -= 1
                if budget < 0:
                    return False
                changed = True
                continue
            edges2 += deg
            if deg > maxdeg:
                maxdeg = deg
                maxv = v
        if changed:
            continue
        if edges2 == 0:
            return True
        if budget == 0 or edges2 // 2 > budget * maxdeg:
            return False
        if maxdeg <= 2:
            return _paths_cycles_cover(s, nadj) <= budget
        break
    comps = _components(s, nadj)
    if len(comps) > 1:
        # Independent parts: exact minimum covers of the smaller ones, then a decision on
        # the largest with what is left (avoids multiplying the branching of the parts).
        comps.sort(key=lambda c: c.bit_count())
        for comp in comps[:-1]:
            budget -= _min_cover(comp, budget, nadj, clock)
            if budget < 0:
                return False
        return _has_vertex_cover(comps[-1], budget, nadj, clock)
    nb = nadj[maxv] & s
    if _has_vertex_cover(s & ~(1 << maxv), budget - 1, nadj, clock):
        return True
    d = nb.bit_count()
    return d <= budget and _has_vertex_cover(s & ~(nb | (1 << maxv)), budget - d, nadj, clock)


def _components(s: int, nadj: list[int]) -> list[int]:
    """Connected components (as bitsets) of the graph ``nadj`` restricted to ``s``."""
    comps: list[int] = []
    rest = s
    while rest:
        comp = rest & -rest
        frontier = comp
        while frontier:
            nxt = 0
            f = frontier
            while f:
                b = f & -f
                f ^= b
                nxt |= nadj[b.bit_length() - 1]
            nxt &= s
            frontier = nxt & ~comp
            comp |= nxt
        comps.append(comp)
        rest &= ~comp
    return comps


def _min_cover(s: int, limit: int, nadj: list[int], clock: _Clock) -> int:
    """Minimum vertex cover size of ``nadj`` within ``s`` if <= limit, else limit + 1."""
    for b in range(limit + 1):
        if _has_vertex_cover(s, b, nadj, clock):
            return b
    return limit + 1


def _paths_cycles_cover(s: int, nadj: list[int]) -> int:
    """Minimum vertex cover size of a graph of maximum degree 2 (disjoint paths and cycles).

    A path on n vertices needs floor(n/2), a cycle on n vertices ceil(n/2).
    """
    total = 0
    for comp in _components(s, nadj):
        n = comp.bit_count()
        edges2 = 0
        c = comp
        while c:
            b = c & -c
            c ^= b
            edges2 += (nadj[b.bit_length() - 1] & s).bit_count()
        edges = edges2 // 2
        total += (n + 1) // 2 if edges == n else n // 2  # cycle iff edges == vertices
    return total


def _has_clique(s: int, k: int, nadj: list[int], clock: _Clock) -> bool:
    """Is there a clique of k vertices within ``s`` in the graph whose NON-edges are ``nadj``?

    A set is a clique iff its complement (within s) covers every non-edge, so this is a
    vertex cover of size <= |s| - k in the non-edge graph: exponential only in |s| - k, which
    for MDA is m - q <= f, the small number of vectors left out.
    """
    if k <= 0:
        return True
    budget = s.bit_count() - k
    if budget < 0:
        return False
    return _has_vertex_cover(s, budget, nadj, clock)


def mda_select(
    received: np.ndarray,
    q: int,
    *,
    dist: np.ndarray | None = None,
    deadline: float | None = None,
) -> tuple[tuple[int, ...], float]:
    """Exact minimum-diameter q-subset of the rows of ``received``; returns (indices, diameter).

    Tie rule: the lexicographically smallest sorted index tuple among the optimal subsets.

    Algorithm. The optimal diameter D* is one of the pairwise distances. For a threshold t,
    a q-subset of diameter <= t is a q-clique of the graph "dist <= t", i.e. its complement
    is a vertex cover of size m - q of the graph "dist > t" (a fixed-parameter problem in
    m - q <= f, see ``_has_clique``). Binary search for D* over the sorted distinct
    distances between a lower bound (the q-th smallest (q-1)-nearest-neighbour distance:
    every member of a q-subset has q - 1 others within its diameter) and an upper bound
    (the best "one point plus its q - 1 nearest" subset, which is feasible). Then the
    lexicographically smallest optimal subset is built greedily: scan rows in index order
    and keep row v iff the rows kept so far plus v can still be completed to a q-clique
    with rows > v -- at most m more feasibility checks. Cost: about (log2 m^2 + m) checks,
    each exponential in m - q only in the worst case and usually near-linear thanks to the
    reductions. ``deadline`` (a ``time.perf_counter()`` value) aborts with MDATimeout.
    """
    x = np.asarray(received, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"received must be 2-D, got shape {x.shape}")
    m = x.shape[0]
    if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or not 1 <= q <= m:
        raise ValueError(f"q must be an integer in [1, m = {m}], got {q!r}")
    q = int(q)
    if dist is None:
        dist = pairwise_distances(x)
    if q == 1:
        return (0,), 0.0
    if q == m:
        return tuple(range(m)), _diameter(dist)
    clock = _Clock(deadline)

    # Bounds on D*: both are entries of dist, hence candidate thresholds.
    srt = np.sort(dist, axis=1)  # column 0 is the zero self-distance
    radius = srt[:, q - 1]  # distance to the (q-1)-th nearest other row
    lower = float(np.sort(radius)[q - 1])
    order = np.argsort(dist, axis=1, kind="stable")
    upper = math.inf
    for i in range(m):
        nbrs = order[i, :q]
        upper = min(upper, float(dist[np.ix_(nbrs, nbrs)].max()))

    iu = np.triu_indices(m, 1)
    cand = np.unique(dist[iu])
    cand = cand[(cand >= lower) & (cand <= upper)]
    full = (1 << m) - 1
    diag = np.eye(m, dtype=bool)

    def nonedges(t: float) -> list[int]:
        return _bitsets((dist > t) & ~diag)

    lo, hi = 0, len(cand) - 1  # cand[hi] (= upper) is feasible
    while lo < hi:
        mid = (lo + hi) // 2
        if _has_clique(full, q, nonedges(float(cand[mid])), clock):
            hi = mid
        else:
            lo = mid + 1
    best = float(cand[lo])
    nadj = nonedges(best)

    chosen: list[int] = []
    pool = full  # rows still compatible with every chosen row
    for v in range(m):
        if len(chosen) == q:
            break
        if not (pool >> v) & 1:
            continue
        above = full & ~((1 << (v + 1)) - 1)
        rest = pool & ~nadj[v] & above
        if _has_clique(rest, q - len(chosen) - 1, nadj, clock):
            chosen.append(v)
            pool = rest
    if len(chosen) != q:  # cannot happen: best is feasible by construction
        raise AssertionError("MDA search failed to rebuild an optimal subset")
    return tuple(chosen), best


def mda_brute_force(received: np.ndarray, q: int) -> tuple[tuple[int, ...], float, np.ndarray]:
    """Reference MDA by enumerating all C(m, q) subsets (tests and benchmarks only).

    Returns (indices, diameter, mean vector) with the same tie rule as ``mda_select`` (the
    first optimal subset in ``itertools.combinations`` order = lexicographically smallest)
    and the same distance matrix and averaging routine, so results are bit-identical.
    """
    x = np.asarray(received, dtype=np.float64)
    m = x.shape[0]
    if not 1 <= q <= m:
        raise ValueError(f"q must be in [1, m = {m}], got {q!r}")
    dist = pairwise_distances(x)
    best: tuple[int, ...] | None = None
    best_d = math.inf
    for s in itertools.combinations(range(m), q):
        d = float(dist[np.ix_(s, s)].max())
        if d < best_d:
            best_d = d
            best = s
    assert best is not None
    return best, best_d, _mean_rows(x, best)


# --------------------------------------------------------------------------- rules


class AgreementRule:
    """One agreement round: ``rule(own (d,), received (m, d), q) -> AgreementResult``.

    ``received`` includes the own vector as one of its rows. Fewer than q rows: the own
    vector is returned with kept=False.
    """

    name: str = "agreement"

    def __call__(self, own: np.ndarray, received: np.ndarray, q: int) -> AgreementResult:
        own64, rec64, q = _as_inputs(own, received, q)
        dist = pairwise_distances(rec64)
        if rec64.shape[0] < q:
            return _fallback(own64, dist)
        return self._round(own64, rec64, q, dist)

    def _round(self, own: np.ndarray, received: np.ndarray, q: int, dist: np.ndarray) -> AgreementResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MDA(AgreementRule):
    """Minimum-diameter averaging, exact (see ``mda_select``).

    q == 1: every single vector has diameter 0, so the sensible choice is the own vector,
    which is returned (kept=True, selected=()).
    """

    name = "mda"

    def _round(self, own: np.ndarray, received: np.ndarray, q: int, dist: np.ndarray) -> AgreementResult:
        if q == 1:
            return AgreementResult(vector=own, diameter=_diameter(dist), kept=True, selected=())
        idx, _ = mda_select(received, q, dist=dist)
        return AgreementResult(vector=_mean_rows(received, idx), diameter=_diameter(dist), kept=True, selected=idx)


class GDA(AgreementRule):
    """Greedy agreement: average the q received vectors closest to the own vector.

    Distance ties go to the lower row index (stable sort). The own vector is at distance 0,
    so it is always among the chosen (or an identical copy of it is).
    """

    name = "gda"

    def _round(self, own: np.ndarray, received: np.ndarray, q: int, dist: np.ndarray) -> AgreementResult:
        diff = received - own
        to_own = np.sqrt(np.sum(diff * diff, axis=1))
        idx = tuple(sorted(int(i) for i in np.argsort(to_own, kind="stable")[:q]))
        return AgreementResult(vector=_mean_rows(received, idx), diameter=_diameter(dist), kept=True, selected=idx)


class NoAgreement(AgreementRule):
    """No agreement: the own vector unchanged (kept is False only if fewer than q arrived)."""

    name = "none"

    def _round(self, own: np.ndarray, received: np.ndarray, q: int, dist: np.ndarray) -> AgreementResult:
        return AgreementResult(vector=own, diameter=_diameter(dist), kept=True, selected=())


_RULES: dict[str, type[AgreementRule]] = {"mda": MDA, "gda": GDA, "none": NoAgreement}
AGREEMENT_NAMES: tuple[str, ...] = tuple(_RULES)


def make_agreement(name: str) -> AgreementRule:
    """The agreement rule called ``name`` (one of ``AGREEMENT_NAMES``); ValueError otherwise."""
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in _RULES:
        raise ValueError(f"unknown agreement rule {name!r}; valid names: {', '.join(AGREEMENT_NAMES)}")
    return _RULES[key]()


# --------------------------------------------------------------------------- benchmark


def _bench_inputs(case: str, k: int, f: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Benchmark inputs: K rows, the honest ones clustered, the f Byzantine ones adversarial."""
    if case == "iid":
        return rng.standard_normal((k, d))
    honest = rng.standard_normal(d) + 0.1 * rng.standard_normal((k - f, d))
    centre = honest.mean(axis=0)
    h_diam = _diameter(pairwise_distances(honest))
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    # Place the Byzantine cluster on the ray centre + r u so that its farthest honest vector
    # is at 0.99 of the honest diameter: every Byzantine vector is then compatible with the
    # whole honest set at the optimal threshold and with many mixed subsets slightly above it.
    target = 0.99 * h_diam
    lo, hi = 0.0, 2.0 * h_diam
    for _ in range(60):
        r = 0.5 * (lo + hi)
        far = float(np.sqrt(np.sum((honest - (centre + r * u)) ** 2, axis=1)).max())
        lo, hi = (r, hi) if far < target else (lo, r)
    byz = centre + lo * u + 1e-3 * h_diam * rng.standard_normal((f, d)) / math.sqrt(d)
    x = np.concatenate([honest, byz])
    return x[rng.permutation(k)]


def benchmark_mda(
    ks: tuple[int, ...] = (13, 25, 31, 64),
    d: int = 386,
    repeats: int = 5,
    seed: int = 0,
    time_limit_s: float = 20.0,
    cases: tuple[str, ...] = ("adversarial", "iid"),
    verbose: bool = True,
) -> list[dict[str, Any]]:
    """Wall time of one exact MDA round (``MDA()(own, received, q)``) for K inputs.

    f = (K - 1) // 4, q = K - f. Cases: "adversarial" -- K - f honest vectors N(0, 1) centre
    plus N(0, 0.1^2) noise, f Byzantine vectors in a tight cluster just inside the honest
    diameter in a fixed random direction (the MDA-fooling placement); "iid" -- all K vectors
    i.i.d. N(0, I), no structure, so the threshold graph near the optimum is random.
    Each (K, case) gets ``repeats`` fresh inputs; a call that would end after the per-(K,
    case) budget ``time_limit_s`` is aborted and the row reports ``over_cap=True`` (timings
    then cover the completed calls only). Rows: K, f, q, case, d, runs, median_s, max_s,
    over_cap, subsets (= C(K, q), what enumeration would visit).

    Measured on the 2-core development machine, d = 386, median of 3-5 calls (both cases
    alike, distance matrix included): K = 13: 0.2 ms; K = 25: 0.5 ms; K = 31: 0.7 ms;
    K = 64: 2 ms (C(64, 49) = 1.6e14 subsets); K = 128: 12-16 ms; K = 256: 40-45 ms;
    K = 512: 0.26 s; K = 1024: 2.7-2.8 s (there the polynomial part, O(K^2) Python-level
    bit operations per feasibility check, dominates). So on such inputs the practical limit
    is several hundred peers (K ~ 500 for a sub-second round).

    Worst case: the search is exponential in m - q <= f (vertex cover branching), not in K.
    Crafted distance matrices whose "far pairs" graph is a random 4-regular graph on ~2f
    vertices with minimum cover just above f (not produced by the cases above) cost one
    feasibility check about 0.2 ms at K = 64 (f = 15), 13 ms at K = 128 (f = 31) and
    0.4 s at K = 200 (f = 49); a round makes up to ~K + log2(K^2) checks. Exactness is
    therefore guaranteed fast for K <= 128; beyond that an adversary who could shape the
    honest geometry might slow a round down to seconds.
    """
    rows: list[dict[str, Any]] = []
    for k in ks:
        f = (k - 1) // 4
        q = k - f
        for case in cases:
            rng = np.random.default_rng([seed, k, len(case)])
            times: list[float] = []
            over = False
            start = time.perf_counter()
            for _ in range(repeats):
                if time.perf_counter() > start + time_limit_s:
                    over = True
                    break
                x = _bench_inputs(case, k, f, d, rng)
                t0 = time.perf_counter()
                try:
                    # the same steps as MDA()(own, received, q), with a deadline
                    own64, rec64, qq = _as_inputs(x[0], x, q)
                    dist = pairwise_distances(rec64)
                    idx, _ = mda_select(rec64, qq, dist=dist, deadline=start + time_limit_s)
                    AgreementResult(vector=_mean_rows(rec64, idx), diameter=_diameter(dist), kept=True, selected=idx)
                except MDATimeout:
                    over = True
                    break
                times.append(time.perf_counter() - t0)
            row = {
                "K": k,
                "f": f,
                "q": q,
                "case": case,
                "d": d,
                "runs": len(times),
                "median_s": statistics.median(times) if times else None,
                "max_s": max(times) if times else None,
                "over_cap": over,
                "subsets": math.comb(k, q),
            }
            rows.append(row)
            if verbose:
                med = "-" if row["median_s"] is None else f"{row['median_s']:.4f}"
                mx = "-" if row["max_s"] is None else f"{row['max_s']:.4f}"
                print(
                    f"K={k:4d} f={f:3d} q={q:4d} {case:12s} runs={row['runs']} median_s={med} "
                    f"max_s={mx} over_cap={over} C(K,q)={row['subsets']:.3e}"
                )
    return rows
