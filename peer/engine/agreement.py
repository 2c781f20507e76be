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

from dataclasses import dataclass

import numpy as np

from peer.engine.mda import mda_select
from peer.engine.vectors import diameter, mean_rows, pairwise_distances

__all__ = [
    "AGREEMENT_NAMES",
    "AgreementResult",
    "AgreementRule",
    "GDA",
    "MDA",
    "NoAgreement",
    "make_agreement",
]


@dataclass(frozen=True, eq=False)
class AgreementResult:
    """Outcome of one agreement round at one peer.

    vector:   the peer's new vector (float64, shape (d,)).
    diameter: max pairwise L2 distance among ALL received vectors (0.0 for fewer than two),
              for logging the spread the round started from.
    fell_back: True when fewer than q vectors arrived, so the rule could not run and the
              peer's own vector was returned unchanged (recorded per round); else False.
    selected: row indices of ``received`` that were averaged (sorted); () when the own
              vector was returned without averaging.
    """

    vector: np.ndarray
    diameter: float
    fell_back: bool
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








def _fallback(own: np.ndarray, dist: np.ndarray) -> AgreementResult:
    return AgreementResult(vector=own, diameter=diameter(dist), fell_back=True, selected=())


# --------------------------------------------------------------------------- rules


class AgreementRule:
    """One agreement round: ``rule(own (d,), received (m, d), q) -> AgreementResult``.

    ``received`` includes the own vector as one of its rows. Fewer than q rows: the own
    vector is returned with fell_back=True.
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
    which is returned (fell_back=False, selected=()).
    """

    name = "mda"

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline  # perf_counter time after which the search raises MDATimeout (benchmarks)

    def _round(self, own: np.ndarray, received: np.ndarray, q: int, dist: np.ndarray) -> AgreementResult:
        if q == 1:
            return AgreementResult(vector=own, diameter=diameter(dist), fell_back=False, selected=())
        idx, _ = mda_select(received, q, dist=dist, deadline=self.deadline)
        return AgreementResult(vector=mean_rows(received, idx), diameter=diameter(dist), fell_back=False, selected=idx)


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
        return AgreementResult(vector=mean_rows(received, idx), diameter=diameter(dist), fell_back=False, selected=idx)


class NoAgreement(AgreementRule):
    """No agreement: the own vector unchanged (fell_back only if fewer than q arrived)."""

    name = "none"

    def _round(self, own: np.ndarray, received: np.ndarray, q: int, dist: np.ndarray) -> AgreementResult:
        return AgreementResult(vector=own, diameter=diameter(dist), fell_back=False, selected=())


_RULES: dict[str, type[AgreementRule]] = {"mda": MDA, "gda": GDA, "none": NoAgreement}
AGREEMENT_NAMES: tuple[str, ...] = tuple(_RULES)


def make_agreement(name: str) -> AgreementRule:
    """The agreement rule called ``name`` (one of ``AGREEMENT_NAMES``); ValueError otherwise."""
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in _RULES:
        raise ValueError(f"unknown agreement rule {name!r}; valid names: {', '.join(AGREEMENT_NAMES)}")
    return _RULES[key]()
