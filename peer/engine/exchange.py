"""The only way a peer's learning core reaches other peers.

The state machine is sans-IO (in the manner of h11): at each communication point it
*yields* a `Broadcast` naming the round and the vector to send, and is resumed with the
vectors received from the other peers for that round, keyed by sender id.  Whoever drives
it decides how messages travel: `peer.lab.inprocess` hands them over in memory, the daemon
sends them as signed gRPC messages.  The learning code is identical in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generator, Mapping

import numpy as np

from peer.engine.schedule import RoundKey


@dataclass(frozen=True)
class Broadcast:
    """Send `vector` (float32) to every peer in round `round_key`; None means listen only."""

    round_key: RoundKey
    vector: np.ndarray | None


Received = Mapping[int, np.ndarray]
"""Vectors from the *other* peers for one round, by sender id (own vector excluded)."""

PeerProgram = Generator[Broadcast, Received, "object"]
