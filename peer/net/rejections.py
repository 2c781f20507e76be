"""Counting and rate-limited logging of rejected messages (a flood must not flood the log)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from decbyzpg.v1 import peer_pb2

from peer.net.wire import ACCEPTED, Verdict, reason_name

log = logging.getLogger(__name__)

class RejectionLog:
    """Counts rejections by reason and logs them without letting floods flood the log.

    Every outcome is counted (`counts`, `accepted`; these feed the Status RPC).  Logging
    happens at most once per (sender, reason) per `interval` seconds; the next line for
    that pair reports how many were suppressed meanwhile (`flush` reports the rest).
    The sender is keyed only where it is bounded: UNKNOWN_SENDER claims an arbitrary id,
    so those share one entry, and at most `max_keys` pairs are tracked (beyond that all
    share an overflow entry) -- an attacker cannot grow this table or the log.
    DUPLICATE is logged at DEBUG (retries and Pull make it harmless); everything else at
    WARNING.  Thread-safe.
    """

    def __init__(
        self,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
        max_keys: int = 1024,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._log = logger or log
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._accepted = 0
        # (sender, reason) -> [time last logged, suppressed since]
        self._limits: dict[tuple[int | None, int], list[float]] = {}

    @property
    def tracked_slots(self) -> int:
        """(sender, reason) pairs with a rate-limit slot; bounded by max_keys + 1 (the overflow slot)."""
        with self._lock:
            return len(self._limits)

    def record(self, reason: int, sender: int | None = None, origin: str | None = None) -> None:
        """Count one outcome (UNSPECIFIED counts as accepted) and maybe log it.

        `origin` (e.g. the gRPC peer address) only decorates the log line.
        """
        if reason == ACCEPTED:
            with self._lock:
                self._accepted += 1
            return
        name = reason_name(reason)
        if reason in (peer_pb2.REJECT_REASON_UNKNOWN_SENDER, peer_pb2.REJECT_REASON_MALFORMED, peer_pb2.REJECT_REASON_TOO_LARGE):
            sender = None
        now = self._clock()
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1
            slot = (sender, reason)
            state = self._limits.get(slot)
            if state is None and len(self._limits) >= self._max_keys:
                slot = (None, -1)
                state = self._limits.get(slot)
            if state is not None and now - state[0] < self.interval:
                state[1] += 1
                return
            suppressed = int(state[1]) if state is not None else 0
            self._limits[slot] = [now, 0]
        self._emit(reason, name, sender, origin, suppressed)

    def record_verdict(self, verdict: Verdict, origin: str | None = None) -> None:
        """`record` for a Validator verdict."""
        self.record(verdict.reason, verdict.sender, origin)

    def _emit(self, reason: int, name: str, sender: int | None, origin: str | None, suppressed: int) -> None:
        level = logging.DEBUG if reason == peer_pb2.REJECT_REASON_DUPLICATE else logging.WARNING
        who = "unattributed sender" if sender is None else f"sender {sender}"
        where = f" via {origin}" if origin else ""
        extra = f" ({suppressed} more like it suppressed in the last {self.interval:g}s)" if suppressed else ""
        self._log.log(level, "rejected message from %s%s: %s%s", who, where, name, extra)

    def flush(self) -> None:
        """Log a summary line for every (sender, reason) with suppressed messages."""
        with self._lock:
            pending = [(slot, int(st[1])) for slot, st in self._limits.items() if st[1]]
            for slot, _ in pending:
                self._limits[slot][1] = 0
        for (sender, reason), n in pending:
            who = "unattributed sender" if sender is None else f"sender {sender}"
            name = "various" if reason == -1 else reason_name(reason)
            level = logging.DEBUG if reason == peer_pb2.REJECT_REASON_DUPLICATE else logging.WARNING
            self._log.log(level, "rejected %d more message(s) from %s: %s", n, who, name)

    def counts(self) -> dict[str, int]:
        """Rejections so far by reason name (e.g. {'BAD_SIGNATURE': 3})."""
        with self._lock:
            return dict(self._counts)

    def accepted(self) -> int:
        """Accepted messages recorded so far."""
        with self._lock:
            return self._accepted
