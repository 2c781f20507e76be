"""The daemon's run file: the learning configuration plus roster and network settings.

One TOML file defines a networked run.  Besides the sections `peer.engine.config` understands,
it has a `[[peers]]` roster (id, address, pinned Ed25519 public key; nothing says who is
Byzantine), a `[network]` table of timeouts and limits, optionally a `[tls]` table (mutual
TLS, `peer.net.tls`) and an `[adversary]` table that only Byzantine daemons read.

The run id is the SHA-256 of the genesis configuration (the learning configuration's
genesis hash, the bound f, and the roster with its keys), so peers given different run
files reject each other's messages instead of silently mixing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from peer.engine.config import RunConfig, build_config, load_toml
from peer.engine.errors import ConfigError
from peer.engine.fields import as_float, as_int, check_keys, invalid
from peer.net.crypto import public_key_from_text
from peer.net.tls import TlsConfig, parse_tls


@dataclass(frozen=True)
class NetworkConfig:
    """Timeouts (seconds) and limits; defaults suit loopback and a LAN (docs/PROTOCOL.md)."""

    round_timeout: float = 20.0  # a round's deadline once this peer enters it
    startup_timeout: float = 180.0  # the first round after (re)start waits this long for peers
    grace: float = 0.25  # with K - f messages in hand, wait only this long for the rest
    push_timeout: float = 2.0  # one Push RPC
    retry_interval: float = 0.2  # between push retries and pull attempts
    max_message_bytes: int = 1 << 20  # larger messages are refused (TOO_LARGE)
    window_ahead: int = 2  # accept messages at most this many iterations ahead
    retain_iterations: int = 64  # keep received messages this long for late peers' Pull
    linger: float = 60.0  # after the last iteration, serve late peers until all are done, at most this long
    read_max_skew: float = 300.0  # a signed read request (Pull, Evidence, Status) is fresh this long either way
    open_status: bool = False  # answer Status to anyone (monitoring); Pull and Evidence stay roster-only
    # after each round, pull the whole round from one other peer (in turn) and compare: a sender
    # that signed different vectors for different peers is then caught (docs/PROTOCOL.md 12a)
    cross_check: bool = True
    # Test only: hold every outgoing Push and Pull this long (plus up to `inject_jitter`, uniform)
    # before sending, to emulate one-way link delay where the kernel has no netem.
    inject_delay: float = 0.0
    inject_jitter: float = 0.0


@dataclass(frozen=True)
class PeerEntry:
    id: int
    address: str
    public_key: str


@dataclass(frozen=True)
class RunFile:
    config: RunConfig
    network: NetworkConfig
    peers: tuple[PeerEntry, ...]
    adversary: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None
    tls: TlsConfig | None = None  # mutual TLS between peers ([tls]); not part of the run id

    @property
    def run_id(self) -> bytes:
        # f is not in the genesis hash (in-process runs that differ only in f share the coin
        # and theta_0, for paired comparisons) but peers must agree on it: it sets the quorum
        # K - f and the aggregators' trimming, so it is part of the run id.
        roster = [[p.id, p.address, p.public_key] for p in self.peers]
        blob = json.dumps({"num_byzantine": self.config.num_byzantine, "roster": roster},
                          sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(b"decbyzpg-run-v1\0" + self.config.genesis_hash() + blob).digest()

    def peer(self, peer_id: int) -> PeerEntry:
        for entry in self.peers:
            if entry.id == peer_id:
                return entry
        raise ConfigError(f"config error: --id {peer_id} is not in the roster (ids 0..{len(self.peers) - 1})")

    def public_keys(self) -> dict[int, Any]:
        return {p.id: public_key_from_text(p.public_key) for p in self.peers}


ZERO_ALLOWED = {"linger", "grace", "inject_delay", "inject_jitter"}  # the other durations must be > 0


def parse_network(data: Any) -> NetworkConfig:
    """Validate a run file's [network] table (missing keys take the defaults)."""
    if not isinstance(data, Mapping):
        raise invalid("network", "a table", data)
    check_keys("network", data, {f.name for f in fields(NetworkConfig)})
    d = NetworkConfig()
    values: dict[str, Any] = {}
    for f in fields(NetworkConfig):
        raw = data.get(f.name, getattr(d, f.name))
        if f.type in ("bool", bool):
            if not isinstance(raw, bool):
                raise invalid(f"network.{f.name}", "true or false", raw)
            values[f.name] = raw
        elif f.type in ("int", int):
            values[f.name] = as_int(f"network.{f.name}", raw, 1)
        else:
            values[f.name] = as_float(f"network.{f.name}", raw, 0, low_open=f.name not in ZERO_ALLOWED)
    if values["grace"] > values["round_timeout"]:
        raise invalid("network.grace", f"at most network.round_timeout ({values['round_timeout']})", values["grace"])
    return NetworkConfig(**values)


def _roster(raw: Any, num_peers: int) -> tuple[PeerEntry, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("config error: the run file needs a [[peers]] roster (id, address, public_key)")
    entries = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise invalid(f"peers[{i}]", "a table", item)
        check_keys(f"peers[{i}]", item, {"id", "address", "public_key"})
        peer_id = as_int(f"peers[{i}].id", item.get("id"), 0)
        address = item.get("address")
        if not isinstance(address, str) or ":" not in address:
            raise invalid(f"peers[{i}].address", "a host:port string", address)
        public_key = item.get("public_key")
        try:
            public_key_from_text(public_key)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"config error: peers[{i}].public_key: {err}") from None
        entries.append(PeerEntry(peer_id, address, public_key))
    ids = sorted(e.id for e in entries)
    if ids != list(range(num_peers)):
        raise ConfigError(f"config error: peers must have ids 0..{num_peers - 1} exactly once each (got {ids})")
    public_keys = [e.public_key for e in entries]
    if len(set(public_keys)) != len(public_keys):
        raise ConfigError("config error: two peers in the roster share a public key")
    return tuple(sorted(entries, key=lambda e: e.id))


def parse_run_file(data: Mapping[str, Any], path: Path | None = None) -> RunFile:
    data = dict(data)
    roster = data.pop("peers", None)
    network = data.pop("network", {})
    adversary = data.pop("adversary", {})
    tls = parse_tls(data.pop("tls", None), None if path is None else path.parent)
    if not isinstance(network, Mapping):
        raise invalid("network", "a table", network)
    if not isinstance(adversary, Mapping):
        raise invalid("adversary", "a table", adversary)
    # Honest peers never act on the attack section, and a run file says nothing about who
    # lies: num_byzantine is the bound f every honest peer assumes.
    data.pop("attack", None)
    cfg = build_config(data, in_process=False)
    return RunFile(cfg, parse_network(network), _roster(roster, cfg.num_peers), dict(adversary), path, tls)


def load_run_file(path: str | Path) -> RunFile:
    return parse_run_file(load_toml(path), Path(path))
