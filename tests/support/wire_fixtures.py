"""Shared fixtures of the wire, store and rejection-log tests: keys, a validator, message builders."""

from __future__ import annotations

from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from decbyzpg.v1 import peer_pb2
from hypothesis import HealthCheck, settings

from adversary.misbehaviour import unknown_field  # noqa: F401  (re-exported for the wire tests)
from peer.engine.schedule import Phase, RoundKey, RoundShape
from peer.net import crypto, wire
from peer.net.wire import DOMAIN, Validator, Verdict

RUN = bytes(range(32))
OTHER_RUN = bytes(range(1, 33))
SELF = 0
DIM = 4
ROUNDS = 3
NOW = 10  # the validator's current iteration in most tests
KEYS = {i: Ed25519PrivateKey.generate() for i in range(5)}
ROSTER = {i: k.public_key() for i, k in KEYS.items()}
STRANGER = Ed25519PrivateKey.generate()
VEC = np.array([1.0, -2.5, 0.0, 3.25], dtype=np.float32)
G0 = RoundKey(NOW, Phase.GRADIENT)
A1 = RoundKey(NOW, Phase.AGREEMENT, 1)

RR = peer_pb2
ALL_REASONS = set(peer_pb2.RejectReason.values())

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_validator(**overrides: Any) -> Validator:
    kwargs: dict[str, Any] = dict(
        run_id=RUN,
        roster=ROSTER,
        self_id=SELF,
        dim=DIM,
        shape=RoundShape(frozenset({Phase.GRADIENT, Phase.AGREEMENT}), ROUNDS),
    )
    kwargs.update(overrides)
    return Validator(**kwargs)


def body(**fields: Any) -> bytes:
    """A serialized RoundMessage from peer 1 for G0 carrying VEC, with `fields` overridden."""
    vector = fields.pop("vec", VEC)
    msg = dict(
        run_id=RUN,
        iteration=G0.iteration,
        phase=int(G0.phase),
        round=0,
        sender=1,
        length=len(vector),
        vector=wire.encode_vector(vector),
    )
    msg.update(fields)
    return peer_pb2.RoundMessage(**msg).SerializeToString()


def signed(body_bytes: bytes, sender: int = 1, signer: Ed25519PrivateKey | None = None) -> peer_pb2.SignedMessage:
    key = signer if signer is not None else KEYS[sender]
    return peer_pb2.SignedMessage(sender=sender, body=body_bytes, signature=crypto.sign(key, DOMAIN, body_bytes))


def accepted(sender: int = 1, key: RoundKey = G0, vec: np.ndarray = VEC, validator: Validator | None = None) -> Verdict:
    env = wire.sign_message(KEYS[sender], RUN, key, sender, vec)
    verdict = (validator or make_validator()).check(env, NOW)
    assert verdict.accepted, verdict.reason_name
    return verdict


def bits(a: np.ndarray) -> list[int]:
    return np.asarray(a, dtype=np.float32).view(np.uint32).tolist()
