"""Roster-only reads, sans-IO: signing and checking Pull, Evidence and Status requests.

Everything a peer holds -- gradients, parameters, equivocation evidence, its progress --
is the run's business only, so a peer answers reads from roster members alone.  A read
request carries a `ReadAuth`: the reader's roster id, when it was issued, and an Ed25519
signature by the reader's pinned key.  Why it is built this way:

* **The same identities as the messages.**  Reads are authorized by the keys already
  pinned in the roster; there is no second credential to distribute or revoke.  Mutual
  TLS (`peer.net.tls`), when enabled, protects the link on top; it does not replace this.
* **An explicit byte layout, not a re-serialized protobuf.**  The signed bytes are a
  fixed concatenation of integers and names (`signed_bytes`), so a second implementation
  computes them without reproducing our protobuf encoder.
* **Bound to its purpose.**  The domain separates read signatures from round-message
  signatures; the run id and method name keep a Status authorization from being replayed
  as a Pull, or in another run; a Pull's round and sender list are signed too.
* **Fresh within a window, not one-shot.**  `issued_ms` must be within `max_skew` of the
  receiver's clock.  A captured request can be replayed within that window, which gives
  the replayer only what the original reader was shown; on a plaintext network it could
  read that traffic anyway, and with TLS it cannot capture the request.  A challenge
  round trip would close the window at the cost of a second call per read.
* **Cheap checks first.**  The roster id and the window are checked before the signature,
  so an outsider's unsigned flood costs a comparison each.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from decbyzpg.v1 import peer_pb2

from peer.net import crypto

__all__ = ["READ_DOMAIN", "READ_METHODS", "ReadGate", "authorize", "signed_bytes", "unix_ms"]

READ_DOMAIN = b"decbyzpg/v1/read-request\0"
"""Prefix of every read-request signature (domain separation from round messages)."""

READ_METHODS = ("Pull", "Evidence", "Status")


def unix_ms() -> int:
    return time.time_ns() // 1_000_000


def _request_fields(method: str, request: Any) -> bytes:
    """The request's own fields in the signed layout (only Pull has any)."""
    if method != "Pull":
        return b""
    senders = list(request.senders)
    return struct.pack(f">QIII{len(senders)}I", request.iteration, request.phase, request.round,
                       len(senders), *senders)


def signed_bytes(method: str, run_id: bytes, reader: int, issued_ms: int, request: Any) -> bytes:
    """What a reader signs (after `READ_DOMAIN`) for `request` sent to `method`."""
    if method not in READ_METHODS:
        raise ValueError(f"not a read method: {method!r}")
    return (run_id + method.encode("ascii") + b"\0" + struct.pack(">IQ", reader, issued_ms)
            + _request_fields(method, request))


def authorize(request: Any, method: str, run_id: bytes, reader: int, signing_key: Ed25519PrivateKey,
              issued_ms: int | None = None) -> Any:
    """Sign `request` (a PullRequest, EvidenceRequest or StatusRequest) in place as `reader`'s; returns it."""
    issued = unix_ms() if issued_ms is None else issued_ms
    signature = crypto.sign(signing_key, READ_DOMAIN, signed_bytes(method, run_id, reader, issued, request))
    request.auth.CopyFrom(peer_pb2.ReadAuth(reader=reader, issued_ms=issued, signature=signature))
    return request


class ReadGate:
    """Decides whether a read request may be answered: `refusal` is None, or why not (one line)."""

    def __init__(self, run_id: bytes, public_keys: Mapping[int, Ed25519PublicKey], max_skew: float,
                 open_status: bool = False, clock_ms: Callable[[], int] = unix_ms) -> None:
        self.run_id = run_id
        self.public_keys = dict(public_keys)
        self.max_skew_ms = int(max_skew * 1000)
        self.open_status = open_status
        self.clock_ms = clock_ms

    def refusal(self, method: str, request: Any) -> str | None:
        if method == "Status" and self.open_status:
            return None
        if method == "Pull" and not 0 <= request.phase <= 0xFFFF_FFFF:  # an open enum: any int32 parses
            return "Pull: phase out of range"
        if not request.HasField("auth"):
            return f"{method} answers roster members only: the request carries no ReadAuth"
        auth = request.auth
        public_key = self.public_keys.get(auth.reader)
        if public_key is None:
            return f"{method}: reader {auth.reader} is not in the roster"
        skew = abs(self.clock_ms() - auth.issued_ms)
        if skew > self.max_skew_ms:
            return (f"{method}: ReadAuth issued {skew / 1000:.0f} s away from this peer's clock "
                    f"(at most {self.max_skew_ms / 1000:.0f} s; are the clocks synchronized?)")
        message = signed_bytes(method, self.run_id, auth.reader, auth.issued_ms, request)
        if not crypto.verify(public_key, READ_DOMAIN, message, auth.signature):
            return f"{method}: ReadAuth signature does not verify under reader {auth.reader}'s pinned key"
        return None
