"""Protocol-level misbehaviour: messages that honest peers must reject without harm.

These are not learning attacks (those are in `adversary.attacks`) but attacks on the
protocol itself: bad signatures, replays, another run's messages, impersonation, garbage,
oversized or non-finite vectors, wrong lengths, floods of far-future rounds, and
equivocation.  Each kind builds raw envelope bytes for one round; the Byzantine daemon
sends them on a schedule, after its real message of the round, and every honest peer
must answer each with its reason code, count it, and carry on unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from decbyzpg.v1 import peer_pb2

from peer.engine.errors import ConfigError
from peer.engine.schedule import RoundKey
from peer.net import wire

KINDS = ("invalid_signature", "replay", "wrong_run", "impersonation", "garbage", "oversized", "non_finite",
         "wrong_length", "flood_future", "equivocation", "padded")

# What an honest receiver answers to each kind (tests check this; docs/ATTACKS.md lists it).
EXPECTED_REASON = {
    "invalid_signature": "BAD_SIGNATURE",
    "replay": "DUPLICATE",
    "wrong_run": "WRONG_RUN",
    "impersonation": "BAD_SIGNATURE",
    "garbage": "MALFORMED",
    "oversized": "TOO_LARGE",
    "non_finite": "NON_FINITE",
    "wrong_length": "BAD_LENGTH",
    "flood_future": "TOO_FAR_AHEAD",
    "equivocation": "EQUIVOCATION",
    "padded": "NON_CANONICAL",
}

PADDING_BYTES = 100_000  # inside a validly signed body: an unknown protobuf field of zeros


@dataclass
class Misbehaviour:
    """Which kinds to send, and how often (every `every`-th round the daemon plays)."""

    kinds: Sequence[str] = ()
    every: int = 1
    flood: int = 10  # far-future messages per flood
    _rounds: int = 0
    _sent: dict[RoundKey, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise ConfigError(f"config error: adversary.misbehaviour: unknown kind {unknown[0]!r} (valid: {', '.join(KINDS)})")
        if self.every < 1:
            raise ConfigError(f"config error: adversary.misbehaviour_every must be >= 1 (got {self.every})")

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> "Misbehaviour":
        kinds = table.get("misbehaviour", [])
        if kinds == "all" or kinds == ["all"]:
            kinds = list(KINDS)
        if not isinstance(kinds, list):
            raise ConfigError(f"config error: adversary.misbehaviour must be a list of kinds or \"all\" (got {kinds!r})")
        return cls(kinds=kinds, every=int(table.get("misbehaviour_every", 1)), flood=int(table.get("flood", 10)))

    def remember(self, round_key: RoundKey, envelope: peer_pb2.SignedMessage) -> None:
        """Keep one real message to replay later (bounded: the last few rounds)."""
        self._sent[round_key] = envelope.SerializeToString()
        while len(self._sent) > 8:
            self._sent.pop(min(self._sent))

    def due(self) -> bool:
        self._rounds += 1
        return bool(self.kinds) and self._rounds % self.every == 0

    def messages(self, signing_key: Any, run_id: bytes, round_key: RoundKey, sender: int, dim: int,
                 victim: int, max_message_bytes: int, rng: np.random.Generator) -> list[tuple[str, bytes]]:
        """(kind, raw envelope bytes) for every configured kind, aimed at `victim`."""
        out = []
        for kind in self.kinds:
            for raw in craft(kind, signing_key, run_id, round_key, sender, dim, victim, max_message_bytes, rng,
                             self._sent, self.flood):
                out.append((kind, raw))
        return out


def _body(run_id: bytes, round_key: RoundKey, sender: int, vector: np.ndarray, length: int | None = None,
          iteration: int | None = None) -> bytes:
    data = wire.encode_vector(vector)
    return peer_pb2.RoundMessage(run_id=run_id, iteration=round_key.iteration if iteration is None else iteration,
                                 phase=int(round_key.phase), round=round_key.round, sender=sender,
                                 length=len(vector) if length is None else length, vector=data).SerializeToString()


def craft(kind: str, signing_key: Any, run_id: bytes, round_key: RoundKey, sender: int, dim: int, victim: int,
          max_message_bytes: int, rng: np.random.Generator, sent: Mapping[RoundKey, bytes] | None = None,
          flood: int = 10) -> list[bytes]:
    """Raw envelopes of one misbehaviour kind for round `round_key`."""
    vector = rng.normal(0.0, 1.0, dim).astype(np.float32)
    if kind == "invalid_signature":
        envelope = wire.sign_body(signing_key, sender, _body(run_id, round_key, sender, vector))
        envelope.signature = bytes(rng.integers(0, 256, 64, dtype=np.uint8))
        return [envelope.SerializeToString()]
    if kind == "replay":
        return [raw for k, raw in (sent or {}).items() if k != round_key][-1:]
    if kind == "wrong_run":
        other = hashlib.sha256(b"another run" + run_id).digest()
        return [wire.sign_body(signing_key, sender, _body(other, round_key, sender, vector)).SerializeToString()]
    if kind == "impersonation":  # the victim's own neighbour's id, under our signing key
        target = 0 if victim != 0 else 1
        return [wire.sign_body(signing_key, target, _body(run_id, round_key, target, vector)).SerializeToString()]
    if kind == "garbage":
        return [bytes(rng.integers(0, 256, int(rng.integers(1, 512)), dtype=np.uint8))]
    if kind == "oversized":
        big = np.zeros(max_message_bytes // 4 + 16, np.float32)
        return [wire.sign_body(signing_key, sender, _body(run_id, round_key, sender, big)).SerializeToString()]
    if kind == "non_finite":
        bad = vector.copy()
        bad[int(rng.integers(0, dim))] = np.nan if rng.random() < 0.5 else np.inf
        return [wire.sign_body(signing_key, sender, _body(run_id, round_key, sender, bad)).SerializeToString()]
    if kind == "wrong_length":
        return [wire.sign_body(signing_key, sender, _body(run_id, round_key, sender, vector[:-1])).SerializeToString()]
    if kind == "flood_future":
        return [wire.sign_body(signing_key, sender, _body(run_id, round_key, sender, vector,
                                                          iteration=round_key.iteration + 1000 + i)).SerializeToString()
                for i in range(flood)]
    if kind == "equivocation":
        # A second, different, validly signed message for the previous round, whose real
        # message the victim already holds: sent for the current round it could race the
        # real one and arrive first.
        earlier = [k for k in (sent or {}) if k < round_key]
        if not earlier:
            return []
        previous = max(earlier)
        return [wire.sign_body(signing_key, sender, _body(run_id, previous, sender, vector)).SerializeToString()]
    if kind == "padded":  # correct vector, validly signed, plus an unknown field: bloats stores and relays
        body = _body(run_id, round_key, sender, vector) + unknown_field(PADDING_BYTES)
        return [wire.sign_body(signing_key, sender, body).SerializeToString()]
    raise ValueError(f"unknown misbehaviour {kind!r}")


def unknown_field(size: int, number: int = 99) -> bytes:
    """A length-delimited protobuf field no RoundMessage declares, carrying `size` zero bytes."""
    header = bytearray()
    for value in ((number << 3) | 2, size):
        while value >= 0x80:
            header.append((value & 0x7F) | 0x80)
            value >>= 7
        header.append(value)
    return bytes(header) + bytes(size)
