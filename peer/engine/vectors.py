"""Distances and means of stacked vectors, computed one way everywhere.

Agreement, the exact MDA search, the attacks and the honest-diameter metric all measure
with these, so comparisons between distances are exact and reproducible across them
(float64, explicit differences, each pair once and mirrored).
"""

from __future__ import annotations

import numpy as np


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


def diameter(dist: np.ndarray) -> float:
    """Largest entry of a distance matrix (0.0 for fewer than two vectors)."""
    return float(dist.max()) if dist.size else 0.0


def mean_rows(x: np.ndarray, idx: tuple[int, ...]) -> np.ndarray:
    """Mean of rows ``idx`` (sorted) in row order: the one averaging routine every rule uses."""
    return x[np.asarray(sorted(idx), dtype=np.intp)].mean(axis=0)
