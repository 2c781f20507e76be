"""Common and per-peer randomness, all derived from the run's genesis hash.

The common coin must be identical at every honest peer without any message exchange, and
a restarted peer must be able to recompute x_t for any t.  A counter-based construction
gives both: x_t is a pure function of (genesis hash, t).  SHA-256 is used rather than a
numpy bit generator so the coin is specified by bytes alone and any implementation (in any
language) can reproduce it.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

_DOMAIN = b"decbyzpg-rand-v1\0"


def _digest(genesis_hash: bytes, *parts: bytes | str | int) -> bytes:
    h = hashlib.sha256(_DOMAIN + genesis_hash)
    for part in parts:
        if isinstance(part, int):
            part = struct.pack("<q", part)
        elif isinstance(part, str):
            part = part.encode()
        h.update(struct.pack("<I", len(part)) + part)
    return h.digest()


def uniform(genesis_hash: bytes, *parts: bytes | str | int) -> float:
    """A uniform number in [0, 1) that is a pure function of its arguments (53 bits)."""
    word = int.from_bytes(_digest(genesis_hash, *parts)[:8], "little")
    return (word >> 11) * (1.0 / (1 << 53))


def common_coin(genesis_hash: bytes, t: int, p: float) -> bool:
    """x_t of the paper: True means a large-batch (aggregation) iteration.  x_0 = 1 always."""
    if t < 0:
        raise ValueError(f"iteration must be >= 0 (got {t})")
    if t == 0:
        return True
    return uniform(genesis_hash, "coin", t) < p


def stream(genesis_hash: bytes, *parts: bytes | str | int) -> np.random.Generator:
    """An independent numpy generator for one purpose, e.g. ("env", peer_id, t)."""
    seed = int.from_bytes(_digest(genesis_hash, "stream", *parts)[:16], "little")
    return np.random.Generator(np.random.Philox(key=seed))


def torch_seed(genesis_hash: bytes, *parts: bytes | str | int) -> int:
    """A 63-bit seed for torch.Generator, derived like `stream`."""
    return int.from_bytes(_digest(genesis_hash, "torch", *parts)[:8], "little") >> 1
