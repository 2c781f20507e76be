"""Files that must never be seen half-written: run files, keys' neighbours, checkpoints, metrics, results.

Every writer in the project goes through `atomic_write` (write a temporary file beside the
target, optionally fsync, rename), so a reader, a crash or Ctrl-C sees the old or the new
file, never a mix.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from peer.engine.errors import RunStateError
from peer.engine.metrics import IterationMetrics, columns, from_csv_row, to_csv_row


def atomic_write(path: Path, data: bytes | str, durable: bool = True, mode: int | None = None) -> None:
    """Replace `path` with `data` so readers see the old or the new file, never a mix.

    `durable` also fsyncs before the rename, so the new content survives a power loss;
    files rewritten every iteration skip it (a crash of the process cannot tear them
    either way, and an fsync per iteration per peer is a measurable cost).  The file is
    created private (0600) unless `mode` says otherwise (a run file is public: 0644).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save, durably and atomically: a restart depends on it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())  # durable: a restart depends on it


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None when there is none; an unreadable one is a RunStateError."""
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=False)
    except Exception as err:  # a torn file cannot exist (atomic replace), a foreign one can
        raise RunStateError(f"checkpoint {path} is unreadable: {err}") from None


def toml_safe(data: Any) -> Any:
    """TOML has no null: drop None values (they mean "the default")."""
    if isinstance(data, dict):
        return {k: toml_safe(v) for k, v in data.items() if v is not None}
    if isinstance(data, (list, tuple)):
        return [toml_safe(v) for v in data]
    return data


class MetricsFile:
    """A metrics.csv (schema: `peer.engine.metrics`), rewritten atomically after every iteration.

    Rewriting the whole file keeps it valid CSV at every instant; a daemon that restarts
    reopens it and drops the rows its checkpoint does not cover (`truncate`).
    """

    def __init__(self, path: Path, num_peers: int) -> None:
        self.path = Path(path)
        self.num_peers = num_peers
        self.rows: list[IterationMetrics] = []
        if self.path.exists():
            with self.path.open(newline="") as handle:
                self.rows = [from_csv_row(row) for row in csv.DictReader(handle)]

    def truncate(self, iteration: int) -> None:
        """Forget rows of iterations >= `iteration`."""
        self.rows = [r for r in self.rows if r.iteration < iteration]

    def add(self, row: IterationMetrics) -> None:
        self.rows.append(row)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns(self.num_peers))
        writer.writerows(to_csv_row(r, self.num_peers) for r in self.rows)
        atomic_write(self.path, buffer.getvalue(), durable=False)


def read_metrics(path: Path) -> list[IterationMetrics]:
    """Every row of a metrics.csv written by any of the project's runners."""
    with Path(path).open(newline="") as handle:
        return [from_csv_row(row) for row in csv.DictReader(handle)]
