"""Exact minimum-diameter averaging: choose the q of m vectors with the smallest diameter.

Kept apart from the agreement rules (`peer.engine.agreement`) because it is a search
algorithm of its own: a binary search over the pairwise distances, each step a
vertex-cover feasibility check on the graph of "too far" pairs, exponential only in
m - q <= f, never in K.  `mda_brute_force` is the enumeration it is tested against.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np

from peer.engine.vectors import diameter, mean_rows, pairwise_distances


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
        return tuple(range(m)), diameter(dist)
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
    return best, best_d, mean_rows(x, best)
