"""The one per-iteration metrics record and the one `metrics.csv` schema.

An in-process run, a daemon and a merged cluster run all write this schema, so a consumer
reads any of them with the same code (`from_csv_row`).  What a column means depends only
on which peers the file covers: a daemon's file covers itself (its own return, its own
view of the agreement), an in-process or merged file covers every honest peer.  A value
that the writer cannot know is left empty (e.g. the honest diameter at a single daemon,
which never sees the other honest peers' parameters).

Pure data and string formatting: writing the file is `peer.net.files.MetricsFile`'s job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

FIXED_COLUMNS_BEFORE = ("iteration", "trajectories_per_agent", "x_t", "honest_mean_return")
FIXED_COLUMNS_AFTER = (
    "honest_diameter", "agreement_diameter", "agreement_fallbacks", "gradient_received", "env_steps",
    "rounds", "rounds_timed_out", "round_p50_ms", "round_max_ms", "round_ms", "rejected", "equivocators",
    "comm_seconds", "crypto_seconds", "compute_seconds", "seconds", "elapsed_seconds",
)


def columns(num_peers: int) -> list[str]:
    """The header of metrics.csv for a run of `num_peers` peers (one return column per peer)."""
    return [*FIXED_COLUMNS_BEFORE, *(f"return_{k}" for k in range(num_peers)), *FIXED_COLUMNS_AFTER]


@dataclass
class IterationMetrics:
    """One iteration as seen by the peers a metrics file covers.

    honest_mean_return: mean of `peer_returns` (the covered peers' batch returns).
    honest_diameter:    largest distance between honest parameter vectors after the iteration
                        (NaN where unknown: a single daemon).
    agreement_diameter: diameter of the vectors received in the last agreement round (the
                        largest over covered peers; Byzantine vectors included); NaN if none.
    agreement_fallbacks: agreement rounds in which fewer than q vectors arrived (summed).
    gradient_received:  vectors aggregated in the gradient round (the fewest over covered peers).
    env_steps:          environment steps of the covered peers since the run began.
    round_ms:           per-round latency, e.g. "g0:41.2 a0:1.9" (g gradient, a agreement, m model).
    seconds:            wall time of this iteration; elapsed_seconds: since the run (re)started.
    """

    iteration: int
    trajectories_per_agent: int
    x_t: int
    peer_returns: dict[int, float] = field(default_factory=dict)
    honest_diameter: float = math.nan
    agreement_diameter: float = math.nan
    agreement_fallbacks: int = 0
    gradient_received: int = 0
    env_steps: int = 0
    rounds: int = 0
    rounds_timed_out: int = 0
    round_p50_ms: float = math.nan
    round_max_ms: float = math.nan
    round_ms: str = ""
    rejected: int = 0
    equivocators: str = ""
    comm_seconds: float = 0.0
    crypto_seconds: float = 0.0
    compute_seconds: float = 0.0
    seconds: float = 0.0
    elapsed_seconds: float = 0.0

    @property
    def honest_mean_return(self) -> float:
        values = list(self.peer_returns.values())
        return math.fsum(values) / len(values) if values else math.nan


def _number(value: float, spec: str) -> str:
    return "" if value is None or not math.isfinite(value) else format(value, spec)


def _float(text: str | None) -> float:
    return float(text) if text not in (None, "") else math.nan


def to_csv_row(m: IterationMetrics, num_peers: int) -> list[str]:
    """The row of `m` under `columns(num_peers)`."""
    return [
        str(m.iteration), str(m.trajectories_per_agent), str(m.x_t), _number(m.honest_mean_return, ".4f"),
        *(_number(m.peer_returns[k], ".4f") if k in m.peer_returns else "" for k in range(num_peers)),
        _number(m.honest_diameter, ".6g"), _number(m.agreement_diameter, ".6g"), str(m.agreement_fallbacks),
        str(m.gradient_received), str(m.env_steps), str(m.rounds), str(m.rounds_timed_out),
        _number(m.round_p50_ms, ".3f"), _number(m.round_max_ms, ".3f"), m.round_ms, str(m.rejected),
        m.equivocators, f"{m.comm_seconds:.4f}", f"{m.crypto_seconds:.4f}", f"{m.compute_seconds:.4f}",
        f"{m.seconds:.4f}", f"{m.elapsed_seconds:.3f}",
    ]


def from_csv_row(row: Mapping[str, str]) -> IterationMetrics:
    """Parse one row of any metrics.csv (in-process, daemon or merged)."""
    returns = {int(name[len("return_"):]): float(value) for name, value in row.items()
               if name.startswith("return_") and value not in (None, "")}
    return IterationMetrics(
        iteration=int(row["iteration"]), trajectories_per_agent=int(row["trajectories_per_agent"]),
        x_t=int(row["x_t"]), peer_returns=returns, honest_diameter=_float(row["honest_diameter"]),
        agreement_diameter=_float(row["agreement_diameter"]), agreement_fallbacks=int(row["agreement_fallbacks"]),
        gradient_received=int(row["gradient_received"]), env_steps=int(row["env_steps"]),
        rounds=int(row["rounds"]), rounds_timed_out=int(row["rounds_timed_out"]),
        round_p50_ms=_float(row["round_p50_ms"]), round_max_ms=_float(row["round_max_ms"]),
        round_ms=row["round_ms"], rejected=int(row["rejected"]), equivocators=row["equivocators"],
        comm_seconds=float(row["comm_seconds"]), crypto_seconds=float(row["crypto_seconds"]),
        compute_seconds=float(row["compute_seconds"]), seconds=float(row["seconds"]),
        elapsed_seconds=float(row["elapsed_seconds"]),
    )
