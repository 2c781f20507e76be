"""How far an attack moves a peer's aggregate, iteration by iteration (`decbyzpg trace`).

A run that collapses under attack raises one question the returns cannot answer: was the
robust aggregate pulled off the honest direction, or did the honest signal itself fade?
This runs the configuration in one process (bit-identical to the network run of the
same configuration) and records, at one honest peer, the quantities that separate the
two: the norm of the honest mean, the honest spread around it, how far the aggregate
landed from the honest mean, and the cosine between them.

Rows of the aggregator's input are ordered by sender id, and Byzantine peers have the
highest ids, so the first `num_honest` rows are the honest vectors.  Iterations that
aggregate nothing (DecByzPG's small-batch steps) leave the measured columns empty.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from peer.engine.config import RunConfig
from peer.engine.errors import ConfigError
from peer.lab.inprocess import InProcessRun
from peer.net.files import atomic_write

COLUMNS = ("iteration", "trajectories_per_agent", "honest_mean_return", "x_t", "honest_mean_norm",
           "honest_spread", "aggregate_error", "error_over_norm", "cosine")


class _Recorder:
    """Stands in for a peer's aggregator: calls it, and measures its output against the honest vectors."""

    def __init__(self, inner: Callable[..., np.ndarray], num_honest: int) -> None:
        self.inner = inner
        self.num_honest = num_honest
        self.last: dict[str, float] = {}

    def __call__(self, vectors: np.ndarray, rng: Any) -> np.ndarray:
        out = self.inner(vectors, rng)
        honest = np.asarray(vectors[: self.num_honest], dtype=np.float64)
        mean = honest.mean(0)
        norm = float(np.linalg.norm(mean))
        error = float(np.linalg.norm(np.asarray(out, dtype=np.float64) - mean))
        denominator = norm * float(np.linalg.norm(out))
        self.last = {
            "honest_mean_norm": norm,
            "honest_spread": float(np.linalg.norm(honest - mean, axis=1).mean()),
            "aggregate_error": error,
            "error_over_norm": error / norm if norm > 0 else math.inf,
            "cosine": float(np.dot(mean, out) / denominator) if denominator > 0 else math.nan,
        }
        return out


def trace(cfg: RunConfig, peer_id: int = 0) -> list[dict[str, Any]]:
    """Run `cfg` in process and return one row per iteration, measured at honest peer `peer_id`."""
    run = InProcessRun(cfg)
    if peer_id not in run.peers:
        raise ConfigError(f"config error: trace: peer {peer_id} is not honest (honest ids: 0-{cfg.num_honest - 1})")
    recorder = _Recorder(run.peers[peer_id].aggregator, cfg.num_honest)
    run.peers[peer_id].aggregator = recorder
    rows = []
    try:
        for row in run.iterate(cfg.trajectories_per_agent):
            rows.append({"iteration": row.iteration, "trajectories_per_agent": row.trajectories_per_agent,
                         "honest_mean_return": row.honest_mean_return, "x_t": row.x_t, **recorder.last})
            recorder.last = {}  # an iteration that aggregates nothing leaves its columns empty
    finally:
        run.close()
    return rows


def write_trace(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write(path, buffer.getvalue())
