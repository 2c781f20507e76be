"""Progress output that suits where it goes: a live bar on a terminal, plain lines elsewhere.

In a container log, CI or a file, tqdm's carriage-return stream becomes hundreds of
partial lines; there a line is printed only when at least `every` seconds have passed
(and at the end), so `docker compose logs` reads like a story.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    """Trajectories-per-agent progress with a few named figures beside it."""

    def __init__(self, total: int, quiet: bool = False, stream: TextIO | None = None, every: float = 10.0,
                 label: str = "trajectories/agent") -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.every = every
        self.label = label
        self.done = 0
        self.fields: dict[str, Any] = {}
        self._last_line = -float("inf")
        self._bar = None
        if not quiet and self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="traj", desc=label, dynamic_ncols=True, file=self.stream)

    def update(self, done: int, **fields: Any) -> None:
        self.fields = fields
        if self._bar is not None:
            self._bar.update(max(0, done - self._bar.n))
            self._bar.set_postfix(**fields)
        elif not self.quiet and time.monotonic() - self._last_line >= self.every:
            self._line(done)
        self.done = done

    def _line(self, done: int) -> None:
        self._last_line = time.monotonic()
        figures = " ".join(f"{name}={value}" for name, value in self.fields.items())
        print(f"{self.label} {done}/{self.total} {figures}".rstrip(), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif not self.quiet and self.done:
            self._line(self.done)
