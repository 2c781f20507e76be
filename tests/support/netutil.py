"""Helpers for tests that run real daemons on loopback, in threads of the test process."""

from __future__ import annotations

import socket
import threading
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from peer.engine.config import build_config
from peer.lab.cluster import init_run
from peer.net.crypto import load_private_key
from peer.net.runfile import load_run_file


def free_port_block(count: int) -> int:
    """A base port with `count` consecutive free ports (checked by binding each)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count >= 65535:
            continue
        sockets = []
        try:
            for k in range(count):
                s = socket.socket()
                s.bind(("127.0.0.1", base + k))
                sockets.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no block of free ports")


def make_run(tmp: Path, data: dict[str, Any], byzantine_ids=(), attack: str = "avg_zero",
             network: dict[str, Any] | None = None, tls: bool = False):
    cfg = build_config(data, in_process=False)
    base = free_port_block(cfg.num_peers)
    path = init_run(tmp / "run", cfg, list(byzantine_ids), attack, base_port=base, network=network or {}, tls=tls)
    return load_run_file(path)


def key_of(run, k: int):
    return load_private_key(run.path.parent / "keys" / f"{k}.key")


def identity_of(run, k: int):
    """Roster member `k` as a reader (peers answer Status, Pull and Evidence to roster members only)."""
    from peer.net.client import ReaderIdentity

    return ReaderIdentity(run.run_id, k, key_of(run, k))


@contextmanager
def started_transports(run, dim: int) -> Iterator[list]:
    """Every roster member's PeerTransport, started (no learning: tests make up the vectors), stopped after."""
    from peer.net.transport import PeerTransport

    started = []
    try:
        for k in range(len(run.peers)):
            transport = PeerTransport(run, k, key_of(run, k), dim)
            transport.start()
            started.append(transport)
        yield started
    finally:
        for transport in started:
            transport.stop(grace=0.1)


class Threads:
    """Start daemons' serve() in threads and collect their exit codes."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.codes: dict[int, Any] = {}

    def start(self, peer_id: int, daemon, **kwargs: Any) -> None:
        def target() -> None:
            try:
                self.codes[peer_id] = daemon.serve(**kwargs)
            except BaseException as err:  # surfaced by join()
                err.add_note("".join(traceback.format_exception(err)))
                self.codes[peer_id] = err

        thread = threading.Thread(target=target, name=f"peer-{peer_id}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self, timeout: float) -> dict[int, Any]:
        for thread in self.threads:
            thread.join(timeout)
            assert not thread.is_alive(), f"{thread.name} did not finish in {timeout} s"
        return self.codes
