"""Files that must never be seen half-written: run files, keys' neighbours, checkpoints, metrics, results.

Every writer in the project goes through `atomic_write` (write a temporary file beside the
target, optionally fsync, rename), so a reader, a crash or Ctrl-C sees the old or the new
file, never a mix.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write(path: Path, data: bytes | str, durable: bool = True) -> None:
    """Replace `path` with `data` so readers see the old or the new file, never a mix.

    `durable` also fsyncs before the rename, so the new content survives a power loss;
    files rewritten every iteration skip it (a crash of the process cannot tear them
    either way, and an fsync per iteration per peer is a measurable cost).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def toml_safe(data: Any) -> Any:
    """TOML has no null: drop None values (they mean "the default")."""
    if isinstance(data, dict):
        return {k: toml_safe(v) for k, v in data.items() if v is not None}
    if isinstance(data, (list, tuple)):
        return [toml_safe(v) for v in data]
    return data
