"""What one peer process has cost so far: CPU by part, traffic, memory, threads.

Written into network.json by the daemon; `decbyzpg bench --network` adds the peers' figures
up.  CPU comes from the kernel (getrusage), the parts from timers around the work itself:
learning (the state machine's sampling and estimating), crypto (signing and verifying) and
serialization (encoding vectors and envelopes) are measured; the rest of the process's CPU
is gRPC, the event loop and Python's own overhead.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from peer.net.transport import PeerTransport


@dataclass
class Traffic:
    """Messages and envelope bytes through one transport (pushes and pull replies alike)."""

    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    serialization_seconds: float = 0.0


def thread_cpu_seconds(native_id: int) -> float | None:
    """CPU seconds (user + system) of one thread of this process, from /proc (Linux); None elsewhere."""
    try:
        with open(f"/proc/self/task/{native_id}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def thread_count() -> int:
    """Every thread of this process, gRPC's own included (Linux), else Python's."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU of this process (RUSAGE_SELF) or of its waited-for children (RUSAGE_CHILDREN)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


@dataclass
class ProcessUsage:
    """The daemon's running totals; `snapshot` adds what the kernel and the transport know."""

    rounds: int = 0
    learning_seconds: float = 0.0
    waiting_seconds: float = 0.0
    startup_cpu_seconds: float = 0.0  # imports and setup, before the first round
    serving_since: float = 0.0  # Unix time the peer started serving
    peak_threads: int = 0

    def mark_started(self) -> None:
        """Called when the peer starts serving: CPU spent before is startup, not protocol."""
        self.startup_cpu_seconds = cpu_seconds()
        self.serving_since = time.time()

    def snapshot(self, transport: PeerTransport) -> dict[str, float | int]:
        """The figures so far, the transport's traffic and crypto time included."""
        self.peak_threads = max(self.peak_threads, thread_count())
        usage = resource.getrusage(resource.RUSAGE_SELF)
        since_start = usage.ru_utime + usage.ru_stime - self.startup_cpu_seconds
        traffic = transport.traffic
        figures: dict[str, float | int] = {
            "rounds": self.rounds, "learning_seconds": self.learning_seconds,
            "waiting_seconds": self.waiting_seconds, "crypto_seconds": transport.crypto_seconds,
            "startup_cpu_seconds": self.startup_cpu_seconds, "serving_since": self.serving_since,
            "cpu_seconds": since_start,  # since serving began
            "peak_rss_mb": usage.ru_maxrss / 1024.0,  # Linux reports KiB
            "threads": self.peak_threads,
            "messages_sent": traffic.messages_sent, "bytes_sent": traffic.bytes_sent,
            "messages_received": traffic.messages_received, "bytes_received": traffic.bytes_received,
            "serialization_seconds": traffic.serialization_seconds,
        }
        # where the CPU went, by thread: the driver (learning, signing, waiting), the event loop
        # (receiving, validating, sending) and the rest (gRPC's C-core threads and its poller)
        main = thread_cpu_seconds(threading.main_thread().native_id or os.getpid())
        loop_id = transport.loop_thread_id
        loop = thread_cpu_seconds(loop_id) if loop_id is not None else None
        if main is not None and loop is not None:
            figures.update(main_thread_cpu_seconds=main - self.startup_cpu_seconds,
                           loop_thread_cpu_seconds=loop,
                           other_threads_cpu_seconds=since_start - (main - self.startup_cpu_seconds) - loop)
        return figures
