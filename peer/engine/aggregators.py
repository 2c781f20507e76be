"""Robust aggregation of the gradient vectors a peer received (the Aggregate step).

Every aggregator takes ``vectors`` of shape (n, d) -- one row per sender, rows ordered by
sender id, float32 or float64 -- and a ``numpy.random.Generator`` (consumed only by the
randomized ones, i.e. bucketing), and returns a float64 vector of shape (d,).

Why the choices below:

- Everything is computed in float64 from the float64 copy of the input, with explicit
  differences (never the ``|a|^2 + |b|^2 - 2ab`` Gram trick, which cancels catastrophically
  for nearby vectors) and with numpy reductions whose order depends only on the array
  shapes. The same inputs and the same generator state therefore give bit-identical outputs
  in every process, which peers of one run rely on.
- Non-finite values and malformed arrays raise ``ValueError``: the network layer filters
  them out, so reaching an aggregator with one is a bug that must fail loudly.
- Breakdown points (the fraction of arbitrary inputs an aggregator survives with a bounded
  output): mean 0; coordinate-wise median and geometric median (RFA) just under 1/2;
  trimmed mean f/n as long as n > 2f; Krum / multi-Krum need n > 2f + 2; centered
  clipping is bounded by construction (each input moves the estimate by at most tau/n per
  iteration). Bucketing (Karimireddy et al., 2022) averages random buckets of s inputs
  first, which lowers the variance among good inputs (making RFA and Krum (delta,c)-robust
  for heterogeneous inputs) at the price of multiplying the Byzantine fraction by up to s.
- Nearest-neighbour mixing (Allouah et al., 2023) replaces each input by the mean of its
  n - f nearest inputs first.  A rule's error under attack is of the order of the spread of
  its good inputs; after mixing, every good row is a mean over n - f inputs of which at
  most f are bad, so that spread shrinks, and with it what f consistent outliers can pull
  (RFA's pull towards far outliers does not fade with their distance; after mixing, the
  good rows nearly coincide and outvote them).
"""

from __future__ import annotations

import abc
from typing import Any, Callable

import numpy as np

__all__ = [
    "AGGREGATOR_NAMES",
    "Aggregator",
    "Bucketing",
    "CenteredClipping",
    "CoordinateWiseMedian",
    "Krum",
    "Mean",
    "MultiKrum",
    "NearestNeighborMixing",
    "RFA",
    "TrimmedMean",
    "make_aggregator",
    "pairwise_sq_distances",
]


# --------------------------------------------------------------------------- helpers


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    """Validate ``vectors`` and return a C-contiguous float64 copy of shape (n, d)."""
    arr = np.asarray(vectors)
    if arr.ndim != 2:
        raise ValueError(f"aggregator input must be a 2-D array (n, d), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("aggregator input is empty: need at least one vector (n >= 1)")
    if arr.shape[1] == 0:
        raise ValueError("aggregator input has dimension d = 0")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"aggregator input must be a real numeric array, got dtype {arr.dtype}")
    out = np.array(arr, dtype=np.float64, order="C", copy=True)
    if not np.isfinite(out).all():
        bad = sorted({int(i) for i in np.nonzero(~np.isfinite(out))[0]})
        raise ValueError(f"aggregator input has non-finite values in rows {bad}")
    return out


def pairwise_sq_distances(x: np.ndarray) -> np.ndarray:
    """Symmetric (n, n) matrix of squared L2 distances, computed from explicit differences.

    Row by row, so memory stays O(n d); entry (i, j) is computed once (i < j) and mirrored,
    so the matrix is exactly symmetric and each entry depends only on rows i and j.
    """
    n = x.shape[0]
    out = np.zeros((n, n), dtype=np.float64)
    for i in range(n - 1):
        diff = x[i + 1 :] - x[i]
        sq = np.sum(diff * diff, axis=1)
        out[i, i + 1 :] = sq
        out[i + 1 :, i] = sq
    return out


def _check_f(f: int) -> int:
    if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 0:
        raise ValueError(f"f (number of Byzantine inputs) must be an integer >= 0, got {f!r}")
    return int(f)


# --------------------------------------------------------------------------- base class


class Aggregator(abc.ABC):
    """An aggregation rule: ``agg(vectors (n, d), rng) -> (d,) float64``.

    Subclasses implement ``_aggregate`` on an already validated float64 C-contiguous copy.
    Any object with a ``name`` and this ``__call__`` signature can be used where an
    Aggregator is expected (e.g. as the inner rule of ``Bucketing``).
    """

    name: str = "aggregator"

    def __call__(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = _as_matrix(vectors)
        out = self._aggregate(x, rng)
        return np.asarray(out, dtype=np.float64).reshape(x.shape[1])

    @abc.abstractmethod
    def _aggregate(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Aggregate a validated (n, d) float64 array."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class Mean(Aggregator):
    """Plain average: optimal without Byzantines, breakdown point 0 (one input moves it anywhere)."""

    name = "mean"

    def _aggregate(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return x.mean(axis=0)


class CoordinateWiseMedian(Aggregator):
    """Median of each coordinate separately.

    Breakdown point just under 1/2 per coordinate; cheap, but in high dimension its error
    grows with sqrt(d) times the per-coordinate spread (not (delta, c)-robust on its own).
    """

    name = "median"

    def _aggregate(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.median(x, axis=0)


class TrimmedMean(Aggregator):
    """Per coordinate, drop the f largest and the f smallest values and average the rest.

    Tolerates f arbitrary inputs as long as n > 2f; with n <= 2f nothing would remain, so
    it falls back to the coordinate-wise median (its limit as the trim grows).
    """

    name = "trimmed_mean"

    def __init__(self, f: int) -> None:
        self.f = _check_f(f)

    def _aggregate(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = x.shape[0]
        if self.f == 0:
            return x.mean(axis=0)
        if n <= 2 * self.f:
            return np.median(x, axis=0)
        s = np.sort(x, axis=0)
        return s[self.f : n - self.f].mean(axis=0)


class RFA(Aggregator):
    """Geometric median (robust federated averaging, Pillutla et al.) by smoothed Weiszfeld.

    The geometric median has breakdown point 1/2 and is (delta, c)-robust for delta < 1/2.
    Iteration: ``z <- sum_i beta_i x_i / sum_i beta_i`` with
    ``beta_i = 1 / max(nu_abs, ||z - x_i||)``, started from the coordinate-wise median
    (already robust, so few iterations are needed; the authors' start at 0 with 8 steps was
    far from converged).

    Parameters are scale-free: with ``scale`` = median over i of ||z0 - x_i|| (a robust
    spread of the inputs, unaffected by fewer than n/2 outliers),
    ``nu_abs = nu * scale`` (default nu = 1e-6: the smoothing only matters within a
    millionth of the spread of an input point) and the loop stops once
    ``||z_new - z|| <= tol * scale`` (default tol = 1e-10) or after ``max_iter`` (default
    1000) iterations. If scale == 0, at least half of the inputs coincide with z0, which is
    then an exact geometric median and is returned as is (this covers "all inputs equal").
    Finally, if the input nearest to the result is within ``snap * scale`` (default
    snap = 1e-3) and satisfies the exact optimality condition, that input is returned (the
    smoothing would otherwise leave the result ~nu away from it).
    """

    name = "rfa"

    def __init__(self, nu: float = 1e-6, tol: float = 1e-10, max_iter: int = 1000, snap: float = 1e-3) -> None:
        if not (nu > 0 and np.isfinite(nu)):
            raise ValueError(f"rfa: nu must be a positive finite number, got {nu!r}")
        if not (tol > 0 and np.isfinite(tol)):
            raise ValueError(f"rfa: tol must be a positive finite number, got {tol!r}")
        if int(max_iter) < 0:
            raise ValueError(f"rfa: max_iter must be >= 0, got {max_iter!r}")
        self.nu = float(nu)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        if not (snap >= 0 and np.isfinite(snap)):
            raise ValueError(f"rfa: snap must be a finite number >= 0, got {snap!r}")
        self.snap = float(snap)

    def _aggregate(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        z = np.median(x, axis=0)
        dist = np.sqrt(np.sum((x - z) ** 2, axis=1))
        scale = float(np.median(dist))
        if scale == 0.0:
            return z
        nu_abs = self.nu * scale
        stop = self.tol * scale
        for _ in range(self.max_iter):
            beta = 1.0 / np.maximum(nu_abs, dist)
            # np.sum, not beta @ x: BLAS may reorder the sum depending on threads/alignment
            z_new = np.sum(beta[:, None] * x, axis=0) / beta.sum()
            step = float(np.sqrt(np.sum((z_new - z) ** 2)))
            z = z_new
            if step <= stop:
                break
            dist = np.sqrt(np.sum((x - z) ** 2, axis=1))
        return self._snap_to_input(x, z, self.snap * scale)

    @staticmethod
    def _snap_to_input(x: np.ndarray, z: np.ndarray, radius: float) -> np.ndarray:
        """Return the input nearest to z instead of z if it lies within ``radius`` of z and is
        an exact geometric median.

        When the geometric median is one of the inputs (e.g. 3 points with a wide angle), the
        smoothed iteration stalls within ~nu of it. Input x_j with multiplicity c_j is optimal
        iff || sum_{i: x_i != x_j} (x_j - x_i) / ||x_j - x_i|| || <= c_j (the subgradient
        condition), which is cheap to check exactly. The radius keeps degenerate cases with a
        whole segment of optima (n = 2, collinear inputs with n even) at the symmetric point
        the iteration found instead of jumping to an end chosen by row order.
        """
        d = np.sqrt(np.sum((x - z) ** 2, axis=1))
        j = int(np.argsort(d, kind="stable")[0])
        if d[j] > radius:
            return z
        diff = x[j] - x
        norms = np.sqrt(np.sum(diff * diff, axis=1))
        others = norms > 0
        mult = int(x.shape[0] - np.count_nonzero(others))
        pull = np.sum(diff[others] / norms[others, None], axis=0)
        if float(np.sqrt(np.sum(pull * pull))) <= mult:
            return x[j].copy()
        return z


def _krum_scores(x: np.ndarray, f: int) -> np.ndarray:
    """Score(i) = sum of the squared distances from x_i to its n - f - 2 nearest others.

    The neighbour count is clamped to [1, n - 1] (0 when n == 1) so small or overloaded
    inputs still give a defined choice. Distances are squared once (the authors' code
    squared an already squared distance, which changes the ranking).
    """
    n = x.shape[0]
    if n == 1:
        return np.zeros(1)
    k = min(max(1, n - f - 2), n - 1)
    sq = pairwise_sq_distances(x)
    scores = np.empty(n, dtype=np.float64)
    for i in range(n):
        others = np.delete(sq[i], i)
        others.sort()
        scores[i] = np.sum(others[:k])
    return scores


class Krum(Aggregator):
    """Krum (Blanchard et al.): output the input whose n - f - 2 nearest neighbours are closest.

    Robust when n > 2f + 2: a Byzantine input far from the honest cluster has a large score,
    one near it is harmless. Ties in the score go to the lowest sender index.
    """

    name = "krum"

    def __init__(self, f: int) -> None:
        self.f = _check_f(f)

    def _aggregate(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        scores = _krum_scores(x, self.f)
        best = int(np.argsort(scores, kind="stable")[0])
        return x[best].copy()


class MultiKrum(Aggregator):
    """Multi-Krum: the average of the m inputs with the lowest Krum scores.

    Interpolates between Krum (m = 1, most robust) and the mean (m = n). Default
    m = n - f (all the inputs that could be honest). Ties go to the lowest sender index and
    the chosen rows are averaged in sender order, so the result is reproducible.
    """

    name = "multi_krum"

    def __init__(self, f: int, m: int | None = None) -> None:
        self.f = _check_f(f)
        if m is not None and (isinstance(m, bool) or int(m) < 1):
            raise ValueError(f"multi_krum: m must be an integer >= 1 (or None for n - f), got {m!r}")
        self.m = None if m is None else int(m)

    def _aggregate(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = x.shape[0]
        m = n - self.f if self.m is None else self.m
        m = min(max(1, m), n)
        scores = _krum_scores(x, self.f)
        chosen = np.sort(np.argsort(scores, kind="stable")[:m])
        return x[chosen].mean(axis=0)


class CenteredClipping(Aggregator):
    """Centered clipping (Karimireddy et al., 2021).

    ``v <- v + mean_i clip(x_i - v, tau)`` with ``clip(u, tau) = u * min(1, tau / ||u||)``,
    repeated ``iterations`` times (default 3) from the coordinate-wise median (default
    ``start="median"``; ``"mean"`` and ``"zero"`` also accepted). Each input moves v by at
    most tau / n per iteration, so f Byzantine inputs shift it by at most f * tau / n each
    time. ``tau=None`` (default) picks tau per call as the median distance of the inputs
    to the start point: a robust, scale-free radius that keeps most honest inputs unclipped.
    """

    name = "centered_clipping"

    _STARTS = ("median", "mean", "zero")

    def __init__(self, tau: float | None = None, iterations: int = 3, start: str = "median") -> None:
        if tau is not None and not (tau > 0 and np.isfinite(tau)):
            raise ValueError(f"centered_clipping: tau must be a positive finite number or None, got {tau!r}")
        if int(iterations) < 0:
            raise ValueError(f"centered_clipping: iterations must be >= 0, got {iterations!r}")
        if start not in self._STARTS:
            raise ValueError(f"centered_clipping: start must be one of {', '.join(self._STARTS)}; got {start!r}")
        self.tau = None if tau is None else float(tau)
        self.iterations = int(iterations)
        self.start = start

    def _aggregate(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.start == "median":
            v = np.median(x, axis=0)
        elif self.start == "mean":
            v = x.mean(axis=0)
        else:
            v = np.zeros(x.shape[1], dtype=np.float64)
        if self.tau is None:
            tau = float(np.median(np.sqrt(np.sum((x - v) ** 2, axis=1))))
            if tau == 0.0:
                return v
        else:
            tau = self.tau
        for _ in range(self.iterations):
            u = x - v
            norms = np.sqrt(np.sum(u * u, axis=1))
            scale = np.ones_like(norms)
            big = norms > tau
            scale[big] = tau / norms[big]
            v = v + np.sum(u * scale[:, None], axis=0) / x.shape[0]
        return v


BUCKETING_PREFIX = "bucketing+"
DEFAULT_BUCKET_SIZE = 2


def uses_bucketing(name: str) -> bool:
    """Whether the rule `name` is a `bucketing+<rule>` (the only rules that read bucket_size)."""
    return name.strip().lower().startswith(BUCKETING_PREFIX)


class Bucketing(Aggregator):
    """Bucketing wrapper (Karimireddy, He & Jaggi, 2022).

    Draws a random permutation of the n inputs from ``rng`` (always exactly one
    ``rng.permutation(n)`` call, so the generator advances the same way every time), averages
    consecutive buckets of ``bucket_size`` inputs (the last bucket may be smaller) and
    applies ``inner`` to the ceil(n / s) bucket means. Averaging shrinks the spread of good
    inputs by ~sqrt(s), so RFA or Krum on bucket means becomes (delta, c)-robust even with
    heterogeneous honest inputs; each Byzantine input still spoils at most one bucket.

    The inner rule's own condition now applies to the ceil(n/s) bucket means with up to f
    of them bad. RFA needs f < ceil(n/s)/2; Krum needs ceil(n/s) > 2f + 2. Example: n = 13,
    f = 3, s = 2 gives 7 means, 3 possibly bad: fine for RFA (3 < 3.5), but not for Krum
    (7 <= 8), where colluding inputs spread one per bucket can capture the output.
    """

    def __init__(self, inner: Aggregator, bucket_size: int = DEFAULT_BUCKET_SIZE) -> None:
        if isinstance(bucket_size, bool) or int(bucket_size) < 1:
            raise ValueError(f"bucketing: bucket_size must be an integer >= 1, got {bucket_size!r}")
        self.inner = inner
        self.bucket_size = int(bucket_size)
        self.name = f"bucketing+{getattr(inner, 'name', type(inner).__name__)}"

    def _aggregate(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = x.shape[0]
        perm = rng.permutation(n)
        s = self.bucket_size
        xp = x[perm]
        means = np.stack([xp[i : i + s].mean(axis=0) for i in range(0, n, s)])
        return self.inner(means, rng)


NNM_PREFIX = "nnm+"


class NearestNeighborMixing(Aggregator):
    """Nearest-neighbour mixing (Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan, 2023).

    Each row i becomes the mean of the k = max(1, n - f) rows nearest to it (itself
    included; ties go to the lower sender id, and each mean sums its rows in sender order,
    so every process gets the same bits), then ``inner`` aggregates the mixed rows.  With
    n > 2f, at least n - 2f of the k rows mixed into any row are good, which is what bounds
    the mixed good rows' spread by a fraction of the original one (the paper's
    (f, kappa)-robustness with kappa of order f / n for RFA, Krum and the others).
    """

    def __init__(self, inner: Aggregator, f: int) -> None:
        self.inner = inner
        self.f = _check_f(f)
        self.name = f"{NNM_PREFIX}{getattr(inner, 'name', type(inner).__name__)}"

    def _aggregate(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = x.shape[0]
        k = max(1, n - self.f)
        distances = pairwise_sq_distances(x)
        mixed = np.empty_like(x)
        for i in range(n):
            nearest = np.sort(np.argsort(distances[i], kind="stable")[:k])
            mixed[i] = x[nearest].mean(axis=0)
        return self.inner(mixed, rng)


# --------------------------------------------------------------------------- factory

_BASE: dict[str, tuple[Callable[..., Aggregator], tuple[str, ...], bool]] = {
    # name: (constructor, accepted keyword params, takes f)
    "mean": (Mean, (), False),
    "median": (CoordinateWiseMedian, (), False),
    "trimmed_mean": (TrimmedMean, (), True),
    "rfa": (RFA, ("nu", "tol", "max_iter", "snap"), False),
    "krum": (Krum, (), True),
    "multi_krum": (MultiKrum, ("m",), True),
    "centered_clipping": (CenteredClipping, ("tau", "iterations", "start"), False),
}


AGGREGATOR_NAMES: tuple[str, ...] = (tuple(_BASE) + tuple(BUCKETING_PREFIX + b for b in _BASE)
                                     + tuple(NNM_PREFIX + b for b in _BASE if b != "mean"))


def make_aggregator(name: str, f: int, **params: Any) -> Aggregator:
    """Build the aggregator called ``name`` for up to ``f`` Byzantine inputs.

    ``name`` is one of ``AGGREGATOR_NAMES``: a base rule, ``"bucketing+<base>"`` which
    accepts ``bucket_size`` (default 2) on top of the base rule's own parameters, or
    ``"nnm+<base>"`` (nearest-neighbour mixing before the base rule, which mixes n - f
    rows each). The inner rule keeps the same f: each Byzantine input contaminates at most
    one bucket, and after mixing at most f rows lie beyond the good rows' mixed spread. Rules that
    do not use f (mean, median, rfa, centered_clipping) ignore it. Parameters with value
    None are treated as absent (their default applies). Unknown names or parameters raise
    ValueError.
    """
    f = _check_f(f)
    if not isinstance(name, str):
        raise ValueError(f"aggregator name must be a string, got {name!r}")
    key = name.strip().lower()
    params = {k: v for k, v in params.items() if v is not None}
    if key not in AGGREGATOR_NAMES:  # the one list: the factory builds exactly what configs accept
        raise ValueError(f"unknown aggregator {name!r}; valid names: {', '.join(AGGREGATOR_NAMES)}")
    bucket_size = params.pop("bucket_size", DEFAULT_BUCKET_SIZE) if uses_bucketing(key) else None
    mixing = key.startswith(NNM_PREFIX)
    ctor, accepted, takes_f = _BASE[key.rpartition("+")[2]]  # the base rule, after any prefix
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        ok = ", ".join(accepted + (("bucket_size",) if bucket_size is not None else ())) or "none"
        raise ValueError(f"aggregator {name!r}: unknown parameter(s) {', '.join(unknown)}; accepted: {ok}")
    inner = ctor(f, **params) if takes_f else ctor(**params)
    if mixing:
        return NearestNeighborMixing(inner, f)
    if bucket_size is None:
        return inner
    return Bucketing(inner, bucket_size=bucket_size)
