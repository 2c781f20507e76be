"""peer.net.wire: codec, signing, the validator's every rejection, fuzzing."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
from decbyzpg.v1 import peer_pb2
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from peer.engine.schedule import Phase, RoundKey, RoundShape
from peer.net import wire
from peer.net.store import RoundStore
from peer.net.wire import DOMAIN
from tests.support.wire_fixtures import (
    A1,
    ALL_REASONS,
    DIM,
    FUZZ,
    G0,
    KEYS,
    NOW,
    OTHER_RUN,
    ROSTER,
    ROUNDS,
    RR,
    RUN,
    SELF,
    STRANGER,
    VEC,
    accepted,
    bits,
    body,
    make_validator,
    signed,
    unknown_field,
)

# --------------------------------------------------------------------------- codec


def test_encode_is_little_endian_float32() -> None:
    assert wire.encode_vector(np.array([1.0], dtype=np.float64)) == b"\x00\x00\x80\x3f"
    big_endian = np.array([1.0, -2.0], dtype=">f4")
    assert wire.encode_vector(big_endian) == wire.encode_vector(np.array([1.0, -2.0], dtype=np.float32))


def test_decode_copies_and_checks_length() -> None:
    data = bytearray(wire.encode_vector(VEC))
    out = wire.decode_vector(bytes(data), DIM)
    assert out.dtype == np.float32 and out.dtype.isnative and out.flags.writeable and out.flags.owndata
    assert bits(out) == bits(VEC)
    with pytest.raises(ValueError):
        wire.decode_vector(bytes(data), DIM + 1)
    with pytest.raises(ValueError):
        wire.decode_vector(bytes(data[:-1]), DIM)


SPECIAL = np.array(
    [
        -0.0,
        np.uint32(1).view(np.float32),  # smallest subnormal
        np.uint32(0x807FFFFF).view(np.float32),  # largest negative subnormal
        np.finfo(np.float32).tiny,
        np.finfo(np.float32).max,
        -np.finfo(np.float32).max,
        1.0 / 3.0,
        0.0,
    ],
    dtype=np.float32,
)


@pytest.mark.parametrize("as_bytes", [False, True])
def test_round_trip_bit_exact_special_values(as_bytes: bool) -> None:
    validator = make_validator(dim=len(SPECIAL))
    env = wire.sign_message(KEYS[2], RUN, A1, 2, SPECIAL)
    verdict = validator.check(env.SerializeToString() if as_bytes else env, NOW)
    assert verdict.accepted
    assert verdict.sender == 2 and verdict.round_key == A1
    assert verdict.vector is not None and verdict.vector.dtype == np.float32
    assert bits(verdict.vector) == bits(SPECIAL)
    assert np.signbit(verdict.vector[0])  # negative zero survived
    assert verdict.envelope is not None and verdict.envelope.body == env.body


@FUZZ
@given(hnp.arrays(np.float32, DIM, elements=st.floats(width=32, allow_nan=False, allow_infinity=False)))
def test_round_trip_bit_exact_any_finite(vec: np.ndarray) -> None:
    verdict = make_validator().check(wire.sign_message(KEYS[3], RUN, G0, 3, vec).SerializeToString(), NOW)
    assert verdict.accepted
    assert bits(verdict.vector) == bits(vec)  # type: ignore[arg-type]


def test_sign_message_body_is_signed_bytes() -> None:
    env = wire.sign_message(KEYS[1], RUN, A1, 1, VEC)
    assert env.sender == 1
    assert ROSTER[1].verify(env.signature, DOMAIN + env.body) is None
    msg = peer_pb2.RoundMessage.FromString(env.body)
    assert (msg.run_id, msg.iteration, msg.phase, msg.round, msg.sender, msg.length) == (RUN, NOW, 2, 1, 1, DIM)
    with pytest.raises(ValueError, match="one-dimensional"):
        wire.sign_message(KEYS[1], RUN, A1, 1, np.zeros((2, 2), dtype=np.float32))


def test_verdict_accepted_vector_is_read_only() -> None:
    verdict = accepted()
    assert verdict.vector is not None
    with pytest.raises(ValueError):
        verdict.vector[0] = 5.0


# --------------------------------------------------------------------------- every rejection


def _garbage_body_signed() -> peer_pb2.SignedMessage:
    return signed(b"\xff\xff\xff\xff")


def _tampered() -> peer_pb2.SignedMessage:
    env = wire.sign_message(KEYS[1], RUN, G0, 1, VEC)
    b = bytearray(env.body)
    b[-1] ^= 0x01  # flip one bit of the vector
    return peer_pb2.SignedMessage(sender=1, body=bytes(b), signature=env.signature)


def _undomained() -> peer_pb2.SignedMessage:
    b = body()
    return peer_pb2.SignedMessage(sender=1, body=b, signature=KEYS[1].sign(b))  # no domain prefix


def _oversize_parsed() -> peer_pb2.SignedMessage:
    return signed(body() + unknown_field(1 << 20))


CASES: dict[str, tuple[Callable[[], Any], int]] = {
    "ok": (lambda: wire.sign_message(KEYS[1], RUN, G0, 1, VEC), RR.REJECT_REASON_UNSPECIFIED),
    "ok agreement last round": (lambda: signed(body(phase=2, round=ROUNDS - 1)), RR.REJECT_REASON_UNSPECIFIED),
    "ok oldest kept": (lambda: signed(body(iteration=NOW - 2)), RR.REJECT_REASON_UNSPECIFIED),
    "ok furthest ahead": (lambda: signed(body(iteration=NOW + 2)), RR.REJECT_REASON_UNSPECIFIED),
    "oversize raw": (lambda: b"\0" * ((1 << 20) + 1), RR.REJECT_REASON_TOO_LARGE),
    "oversize parsed": (_oversize_parsed, RR.REJECT_REASON_TOO_LARGE),
    "garbage bytes": (lambda: b"\xff\xff\xff\xff\xff", RR.REJECT_REASON_MALFORMED),
    "truncated envelope": (
        lambda: wire.sign_message(KEYS[1], RUN, G0, 1, VEC).SerializeToString()[:-3],
        RR.REJECT_REASON_MALFORMED,
    ),
    "not bytes": (lambda: "a str", RR.REJECT_REASON_MALFORMED),
    "none": (lambda: None, RR.REJECT_REASON_MALFORMED),
    "signed garbage body": (_garbage_body_signed, RR.REJECT_REASON_MALFORMED),
    "unknown sender": (lambda: signed(body(sender=99), sender=99, signer=STRANGER), RR.REJECT_REASON_UNKNOWN_SENDER),
    "empty envelope": (lambda: b"", RR.REJECT_REASON_MALFORMED),
    "empty envelope object": (lambda: peer_pb2.SignedMessage(), RR.REJECT_REASON_MALFORMED),
    "no body": (lambda: peer_pb2.SignedMessage(sender=1, signature=b"\0" * 64), RR.REJECT_REASON_MALFORMED),
    "short signature": (lambda: peer_pb2.SignedMessage(sender=1, body=body(), signature=b"\0" * 63),
                        RR.REJECT_REASON_MALFORMED),
    "padding inside the signed body": (lambda: signed(body() + unknown_field(1000)), RR.REJECT_REASON_NON_CANONICAL),
    "explicit default field": (lambda: signed(body() + b"\x20\x00"), RR.REJECT_REASON_NON_CANONICAL),
    "own id": (lambda: signed(body(sender=SELF), sender=SELF), RR.REJECT_REASON_SELF),
    "tampered body": (_tampered, RR.REJECT_REASON_BAD_SIGNATURE),
    "impersonation": (lambda: signed(body(sender=2), sender=2, signer=KEYS[3]), RR.REJECT_REASON_BAD_SIGNATURE),
    "stranger's key": (lambda: signed(body(), sender=1, signer=STRANGER), RR.REJECT_REASON_BAD_SIGNATURE),
    "signature without domain": (_undomained, RR.REJECT_REASON_BAD_SIGNATURE),
    "empty signature": (lambda: peer_pb2.SignedMessage(sender=1, body=body()), RR.REJECT_REASON_MALFORMED),
    "zero signature": (lambda: peer_pb2.SignedMessage(sender=1, body=body(), signature=b"\0" * 64),
                       RR.REJECT_REASON_BAD_SIGNATURE),
    "relabelled sender": (lambda: signed(body(sender=2), sender=3), RR.REJECT_REASON_SENDER_MISMATCH),
    "wrong run": (lambda: signed(body(run_id=OTHER_RUN)), RR.REJECT_REASON_WRONG_RUN),
    "no run id": (lambda: signed(body(run_id=b"")), RR.REJECT_REASON_WRONG_RUN),
    "stale": (lambda: signed(body(iteration=NOW - 3)), RR.REJECT_REASON_STALE),
    "too far ahead": (lambda: signed(body(iteration=NOW + 3)), RR.REJECT_REASON_TOO_FAR_AHEAD),
    "max iteration": (lambda: signed(body(iteration=2**64 - 1)), RR.REJECT_REASON_TOO_FAR_AHEAD),
    "phase 0": (lambda: signed(body(phase=0)), RR.REJECT_REASON_BAD_PHASE),
    "phase MODEL not used": (lambda: signed(body(phase=3)), RR.REJECT_REASON_BAD_PHASE),
    "unknown phase": (lambda: signed(body(phase=77)), RR.REJECT_REASON_BAD_PHASE),
    "agreement round = R": (lambda: signed(body(phase=2, round=ROUNDS)), RR.REJECT_REASON_BAD_ROUND),
    "agreement round huge": (lambda: signed(body(phase=2, round=2**32 - 1)), RR.REJECT_REASON_BAD_ROUND),
    "gradient round 1": (lambda: signed(body(round=1)), RR.REJECT_REASON_BAD_ROUND),
    "short vector": (lambda: signed(body(vec=VEC[:3])), RR.REJECT_REASON_BAD_LENGTH),
    "long vector": (lambda: signed(body(vec=np.zeros(DIM + 1, np.float32))), RR.REJECT_REASON_BAD_LENGTH),
    "length > bytes": (lambda: signed(body(vector=wire.encode_vector(VEC[:3]))), RR.REJECT_REASON_BAD_LENGTH),
    "length < bytes": (lambda: signed(body(vector=wire.encode_vector(VEC) + b"\0")), RR.REJECT_REASON_BAD_LENGTH),
    "no vector": (lambda: signed(body(length=0, vector=b"")), RR.REJECT_REASON_BAD_LENGTH),
    "nan": (lambda: signed(body(vec=np.array([0, np.nan, 0, 0], np.float32))), RR.REJECT_REASON_NON_FINITE),
    "+inf": (lambda: signed(body(vec=np.array([np.inf, 0, 0, 0], np.float32))), RR.REJECT_REASON_NON_FINITE),
    "-inf": (lambda: signed(body(vec=np.array([0, 0, 0, -np.inf], np.float32))), RR.REJECT_REASON_NON_FINITE),
    "nan payload": (
        lambda: signed(body(vector=wire.encode_vector(VEC[:3]) + b"\x01\x00\xc0\xff")),
        RR.REJECT_REASON_NON_FINITE,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_rejection_reason(name: str) -> None:
    make, expected = CASES[name]
    envelope = make()
    verdict = make_validator().check(envelope, NOW)
    assert verdict.reason == expected, f"{name}: got {verdict.reason_name}"
    assert verdict.accepted == (expected == RR.REJECT_REASON_UNSPECIFIED)
    if not verdict.accepted:
        assert verdict.vector is None and verdict.envelope is None
    if isinstance(envelope, peer_pb2.SignedMessage):  # the raw-bytes path agrees
        assert make_validator().check(envelope.SerializeToString(), NOW).reason == expected


def test_every_reason_is_produced() -> None:
    """The table above plus the store (DUPLICATE, EQUIVOCATION) covers the whole enum."""
    produced = {expected for _, expected in CASES.values()}
    store = RoundStore()
    produced.add(store.add(accepted()))
    produced.add(store.add(accepted()))  # same body again: Ed25519 is deterministic
    produced.add(store.add(accepted(vec=VEC + 1)))
    assert produced == ALL_REASONS


def test_sender_of_verdicts() -> None:
    v = make_validator()
    assert v.check(b"\xff", NOW).sender is None
    assert v.check(signed(body(sender=2), sender=3), NOW).sender == 3
    assert v.check(signed(body(round=1)), NOW).round_key == RoundKey(NOW, Phase.GRADIENT, 1)


def test_phase_model_when_allowed() -> None:
    v = make_validator(shape=RoundShape(frozenset({Phase.GRADIENT, Phase.AGREEMENT, Phase.MODEL}), ROUNDS))
    assert v.check(signed(body(phase=3)), NOW).round_key == RoundKey(NOW, Phase.MODEL, 0)
    assert v.check(signed(body(phase=3, round=1)), NOW).reason == RR.REJECT_REASON_BAD_ROUND


def test_window_follows_current_iteration() -> None:
    v = make_validator(window_ahead=0, keep_behind=0)
    env = signed(body(iteration=5))
    assert v.check(env, 4).reason == RR.REJECT_REASON_TOO_FAR_AHEAD
    assert v.check(env, 5).accepted
    assert v.check(env, 6).reason == RR.REJECT_REASON_STALE
    assert make_validator().check(signed(body(iteration=0)), 0).accepted


def test_size_limit_boundary() -> None:
    limit = wire.max_envelope_bytes(DIM)
    v = make_validator(max_message_bytes=limit)
    honest_max = wire.sign_message(KEYS[4], RUN, RoundKey(NOW, Phase.AGREEMENT, ROUNDS - 1), 4, VEC)
    assert honest_max.ByteSize() <= limit
    assert v.check(honest_max, NOW).accepted
    padded = signed(body() + unknown_field(limit))
    assert v.check(padded, NOW).reason == RR.REJECT_REASON_TOO_LARGE
    assert v.check(padded.SerializeToString(), NOW).reason == RR.REJECT_REASON_TOO_LARGE


def test_unknown_fields_are_refused_even_when_signed() -> None:
    """A validly signed body with extra fields is not canonical: it could carry padding."""
    extra = body() + b"\xf8\x06\x2a"  # field 111 (varint) = 42, unknown to us
    env = signed(extra)
    assert make_validator().check(env, NOW).reason == RR.REJECT_REASON_NON_CANONICAL
    # Stripping the extra bytes (what a re-serializing relay might do) breaks the signature.
    stripped = peer_pb2.SignedMessage(sender=1, body=body(), signature=env.signature)
    assert make_validator().check(stripped, NOW).reason == RR.REJECT_REASON_BAD_SIGNATURE


def test_a_megabyte_of_signed_padding_is_neither_stored_nor_relayed() -> None:
    """Finding 3 of the security review: 1 MB inside a validly signed body used to be accepted."""
    padded = signed(body() + unknown_field(1_000_000))
    verdict = make_validator(max_message_bytes=2 << 20).check(padded, NOW)
    assert verdict.reason == RR.REJECT_REASON_NON_CANONICAL and verdict.envelope is None


def test_non_canonical_field_order_is_refused() -> None:
    """Fields in reverse order: validly signed, but not the canonical encoding of the message."""
    parts = peer_pb2.RoundMessage.FromString(body())
    reversed_body = b"".join(
        peer_pb2.RoundMessage(**{name: getattr(parts, name)}).SerializeToString()
        for name in ["vector", "length", "sender", "round", "phase", "iteration", "run_id"]
    )
    assert reversed_body != body()
    assert make_validator().check(signed(reversed_body), NOW).reason == RR.REJECT_REASON_NON_CANONICAL


def test_envelope_is_cleaned_of_unsigned_extras() -> None:
    env = wire.sign_message(KEYS[1], RUN, G0, 1, VEC)
    raw = env.SerializeToString() + b"\xf8\x06\x01"  # unsigned junk in the envelope
    verdict = make_validator().check(raw, NOW)
    assert verdict.accepted and verdict.envelope is not None
    assert verdict.envelope.SerializeToString() == env.SerializeToString()


def test_validator_constructor_checks() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        make_validator(run_id=b"short")
    with pytest.raises(ValueError, match="too small"):
        make_validator(max_message_bytes=100)
    with pytest.raises(TypeError, match="Ed25519PublicKey"):
        make_validator(roster={1: "ed25519:..."})
    make_validator(shape=RoundShape(frozenset({Phase.GRADIENT}), 0))  # no agreement phase: fine


# --------------------------------------------------------------------------- fuzzing

RANDOM_REASONS = {
    RR.REJECT_REASON_MALFORMED,
    RR.REJECT_REASON_TOO_LARGE,
    RR.REJECT_REASON_UNKNOWN_SENDER,
    RR.REJECT_REASON_SELF,
    RR.REJECT_REASON_BAD_SIGNATURE,
}
FUZZ_VALIDATOR = make_validator(max_message_bytes=wire.max_envelope_bytes(DIM))


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data: bytes) -> None:
    assert FUZZ_VALIDATOR.check(data, NOW).reason in RANDOM_REASONS


@FUZZ
@given(st.integers(0, 2**32 - 1) | st.sampled_from(list(KEYS)), st.binary(max_size=200), st.binary(max_size=80))
def test_fuzz_parsed_envelopes(sender: int, body_bytes: bytes, signature: bytes) -> None:
    env = peer_pb2.SignedMessage(sender=sender, body=body_bytes, signature=signature)
    assert FUZZ_VALIDATOR.check(env, NOW).reason in RANDOM_REASONS


@FUZZ
@given(
    st.sampled_from([1, 2, 3, 4]),
    st.sampled_from([RUN, OTHER_RUN, b""]) | st.binary(max_size=40),
    st.integers(0, 2**64 - 1) | st.integers(NOW - 4, NOW + 4),
    st.integers(0, 2**31 - 1) | st.integers(0, 4),
    st.integers(0, 2**32 - 1) | st.integers(0, 4),
    st.integers(0, 2**32 - 1) | st.integers(0, 4),
    st.integers(0, 2**32 - 1) | st.integers(0, DIM + 1),
    st.binary(max_size=24),
)
def test_fuzz_signed_bodies(
    sender: int, run_id: bytes, iteration: int, phase: int, rnd: int, body_sender: int, length: int, vec: bytes
) -> None:
    """Validly signed but arbitrary bodies: never raise; whatever is accepted is sane."""
    b = peer_pb2.RoundMessage(
        run_id=run_id, iteration=iteration, phase=phase, round=rnd, sender=body_sender, length=length, vector=vec
    ).SerializeToString()
    verdict = FUZZ_VALIDATOR.check(signed(b, sender=sender), NOW)
    assert verdict.reason in ALL_REASONS
    if verdict.accepted:
        assert verdict.vector is not None and verdict.vector.shape == (DIM,)
        assert np.isfinite(verdict.vector).all()
        assert body_sender == sender and run_id == RUN and NOW - 2 <= iteration <= NOW + 2


VALID_RAW = wire.sign_message(KEYS[1], RUN, G0, 1, VEC).SerializeToString()


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID_RAW) - 1), st.integers(1, 255)), min_size=1, max_size=4))
def test_fuzz_mutated_valid_message(flips: list[tuple[int, int]]) -> None:
    """Corrupting a valid message never yields an accepted message with other content."""
    data = bytearray(VALID_RAW)
    for pos, mask in flips:
        data[pos] ^= mask
    verdict = FUZZ_VALIDATOR.check(bytes(data), NOW)
    if verdict.accepted:
        original = peer_pb2.SignedMessage.FromString(VALID_RAW)
        assert verdict.envelope is not None
        assert (verdict.envelope.sender, verdict.envelope.body) == (original.sender, original.body)



def test_reason_names() -> None:
    assert wire.reason_name(RR.REJECT_REASON_UNSPECIFIED) == "ACCEPTED"
    assert wire.reason_name(RR.REJECT_REASON_SELF) == "SELF"
    assert wire.reason_name(999) == "UNKNOWN_999"
