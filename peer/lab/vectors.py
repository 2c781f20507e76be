"""Language-neutral test vectors of decbyzpg.v1 (tests/vectors/*.json), made by this implementation.

A second implementation of the protocol, in any language, can only interoperate if it
computes the same bytes (signed messages, run ids, read signatures), the same common coin
and random streams, and the same aggregates, agreements and estimates.  These JSON files
pin all of that by example, with the exact input bytes of everything that is hashed or
signed, so that the encoding is documented and checkable rather than described.

Why it is built this way:

* **Computed, never hand-written.**  Every output is produced here by the project's own
  functions (`Validator`, `RunFile.run_id`, `randomness`, the aggregators, ...): the
  vectors record what the reference implementation does.  Where a case is meant to show
  one particular behaviour (a rejection reason, a tie), `generate` asserts that the code
  really shows it, so a behaviour change fails loudly here instead of silently rewriting
  the expectation.
* **Deterministic and pure.**  Keys come from fixed 32-byte Ed25519 seeds (written in
  keys.json; Ed25519 signatures are deterministic), times are fixed numbers, and nothing
  reads a clock, the file system or a global random generator.  `generate()` therefore
  gives the same documents on every run, and `stale` can compare them with the committed
  files byte for byte (tests/lab/test_vectors.py does, in the default suite) -- except the
  torch estimates, whose last bits depend on the CPU's vector kernels and which are
  therefore compared with the tolerance their format note states (`APPROXIMATE`).
* **Exact numbers.**  float32 values are given as the hex of their little-endian bytes
  (exact) and as a decimal (the shortest float64 repr of the float32 value, which parses
  back to the same value); float64 values are JSON numbers in Python's shortest
  round-trip repr.  Non-finite values appear only in hex and as the strings "nan",
  "inf", "-inf", so the files stay strict JSON.
* **Fast.**  Inputs are tiny; the currency test runs this in the default suite.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from decbyzpg.v1 import peer_pb2

from peer.engine import randomness
from peer.engine.aggregators import make_aggregator
from peer.engine.agreement import make_agreement
from peer.engine.config import RunConfig, build_config
from peer.engine.schedule import Phase, RoundKey, Schedule
from peer.net import crypto, reads, wire
from peer.net.files import atomic_write
from peer.net.runfile import RunFile, parse_run_file
from peer.net.store import RoundStore

__all__ = ["APPROXIMATE", "INDEX", "KEY_SEEDS", "generate", "render", "stale", "write"]

INDEX = "index.json"
"""The entry point of the vector directory: which files exist and what each holds."""

FORMAT_VERSION = 1

# Fixed Ed25519 seeds of the test keys (test keys only: never use them for a real run).
KEY_SEEDS: tuple[bytes, ...] = tuple(hashlib.sha256(b"decbyzpg test vector key %d" % i).digest() for i in range(5))
STRANGER = 4  # key 4 is in no roster

FLOAT_NOTE = (
    "float32 values: 'f32le' is the hex of the little-endian IEEE-754 bytes (exact; a vector is "
    "the concatenation of its values, exactly as on the wire) and 'decimal' lists the values in "
    "Python's shortest float64 repr of each float32 value (parse as float64, then convert to "
    "float32: exact), with 'nan', 'inf', '-inf' as strings. A matrix is a list of rows, each "
    "such an object. float64 values are plain JSON numbers in shortest round-trip form (parse "
    "with a correctly rounding parser). Byte strings are lowercase hex."
)


# --------------------------------------------------------------------------- encoding helpers


def _hex(data: bytes) -> str:
    return bytes(data).hex()


def _decimal(value: float) -> float | str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(value)


def f32(values: Any) -> dict[str, Any]:
    """A float32 vector as exact little-endian hex plus readable decimals."""
    arr = np.asarray(values, dtype="<f4").reshape(-1)
    return {"f32le": _hex(arr.tobytes()), "decimal": [_decimal(float(v)) for v in arr]}


def f32_matrix(values: Any) -> list[dict[str, Any]]:
    return [f32(row) for row in np.asarray(values, dtype=np.float32)]


def f64(values: Any) -> list[float]:
    """A float64 vector as JSON numbers (repr round-trips exactly)."""
    out = [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]
    if not all(math.isfinite(v) for v in out):
        raise ValueError("a float64 vector output is not finite")
    return out


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _pb_varint(number: int, value: int) -> bytes:
    """One protobuf varint field, written even if it is the default (for non-canonical bodies)."""
    return _varint(number << 3) + _varint(value)


def _pb_bytes(number: int, data: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(data)) + data


def render(document: dict[str, Any]) -> str:
    """The exact text of a vector file: sorted keys, indent 1, ASCII, strict JSON, newline at the end."""
    return json.dumps(document, sort_keys=True, indent=1, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- keys


def _key(i: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(KEY_SEEDS[i])


def _public_raw(i: int) -> bytes:
    return _key(i).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _public_text(i: int) -> str:
    return crypto.public_key_text(_key(i))


def _keys_document() -> dict[str, Any]:
    keys = []
    for i in range(len(KEY_SEEDS)):
        pem = _key(i).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode("ascii")
        keys.append({
            "index": i,
            "seed": _hex(KEY_SEEDS[i]),
            "public_key_raw": _hex(_public_raw(i)),
            "public_key_text": _public_text(i),
            "private_key_pem": pem,
        })
    raw0 = _public_raw(0)
    good = _public_text(0)
    texts: list[tuple[str, str, str]] = [
        ("canonical", good, "the one text of key 0"),
        ("no prefix", base64.b64encode(raw0).decode(), "the 'ed25519:' prefix is required"),
        ("upper-case prefix", "ED25519:" + good.removeprefix("ed25519:"), "the prefix is case-sensitive"),
        ("surrounding space", good + " ", "no whitespace anywhere"),
        ("no padding", good.rstrip("="), "standard base64 with its '=' padding"),
        ("url-safe alphabet", "ed25519:" + base64.urlsafe_b64encode(raw0).decode(),
         "only the standard alphabet ('+' and '/', not '-' and '_')"),
        ("31 bytes", "ed25519:" + base64.b64encode(raw0[:31]).decode(), "exactly 32 bytes"),
        ("33 bytes", "ed25519:" + base64.b64encode(raw0 + b"\0").decode(), "exactly 32 bytes"),
    ]
    # non-canonical base64: same 32 bytes, but non-zero unused bits in the last character
    encoded = base64.b64encode(raw0).decode()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = encoded[-2]  # 32 bytes -> 43 characters + '=': the 43rd carries 2 unused bits
    sloppy = encoded[:-2] + alphabet[alphabet.index(last) ^ 1] + "="
    texts.append(("non-canonical base64", "ed25519:" + sloppy, ("decodes to the same bytes with non-zero unused bits: "
                  "refused so that one key has one text")))
    cases = []
    for name, text, why in texts:
        try:
            parsed = crypto.public_key_from_text(text)
            raw = parsed.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            cases.append({"name": name, "text": text, "valid": True, "public_key_raw": _hex(raw), "why": why})
        except ValueError:
            cases.append({"name": name, "text": text, "valid": False, "why": why})
    if [c["valid"] for c in cases] != [True] + [False] * (len(cases) - 1):
        raise AssertionError("public key text parsing changed: regenerate the cases deliberately")
    return {
        "description": "The test keys every other vector file uses, and how a public key is written in a run "
                       "file's roster. Test keys only: their private halves are public.",
        "format": "keys[i].seed is the 32-byte Ed25519 private seed (RFC 8032); public_key_raw the 32-byte "
                  "public key; public_key_text the roster form: 'ed25519:' + standard base64 (RFC 4648 "
                  "section 4, with padding) of the raw public key; private_key_pem the key file a daemon "
                  "reads (unencrypted PKCS#8 PEM). public_key_texts: strings a run file might contain, "
                  "'valid' says whether a peer accepts it as a roster key (parsing is strict so that each key "
                  "has exactly one text: the run id hashes the text).",
        "keys": keys,
        "public_key_texts": cases,
    }


# --------------------------------------------------------------------------- run files

_ADDRESSES = ("127.0.0.1:50100", "127.0.0.1:50101", "127.0.0.1:50102", "127.0.0.1:50103")


def _roster_toml(entries: Sequence[tuple[int, str, int]]) -> str:
    return "".join(f'\n[[peers]]\nid = {pid}\naddress = "{address}"\npublic_key = "{_public_text(key)}"\n'
                   for pid, address, key in entries)


def _run_files() -> list[tuple[str, str, str]]:
    """(name, what it shows, TOML text) of the run files the genesis and run-id vectors use."""
    four = [(i, _ADDRESSES[i], i) for i in range(4)]
    return [
        ("four-peer-decbyzpg",
         ("the smallest run file: everything else takes the CartPole-v1 and 'tuned' defaults; the "
          "envelopes.json and reads.json vectors use this run's run id"),
         'env = "CartPole-v1"\nnum_peers = 4\nseed = 0\n' + _roster_toml(four)),
        ("four-peer-decbyzpg-f1",
         ("the same run file with num_byzantine = 1, allow_beyond_tolerance and an [attack] table: none of "
          "them is in the genesis hash, which equals four-peer-decbyzpg's; the bound f is in the run id "
          "(it sets the quorum K - f), which differs"),
         ('env = "CartPole-v1"\nnum_peers = 4\nseed = 0\nnum_byzantine = 1\nallow_beyond_tolerance = true\n\n'
          '[attack]\nname = "avg_zero"\n') + _roster_toml(four)),
        ("floats-and-order",
         ("numbers as the hash sees them: integers written for float fields become floats ('1.0'), small "
          "floats use Python's exponent form ('1e-06'), keys are sorted; the roster is listed out of id "
          "order in the file but hashed by id; an address with a non-ASCII character is hashed as a JSON "
          "\\u escape"),
         ('env = "CartPole-v1"\nalgorithm = "dec-page-pg"\npreset = "paper"\nnum_peers = 3\nseed = 42\n'
          'trajectories_per_agent = 600\n\n[policy]\nhidden = [8]\nactivation = "tanh"\n\n'
          '[optimizer]\nstep_size = 1e-6\nmax_grad_norm = 10\n\n[estimator]\ngamma = 1\nswitch_prob = 0.25\n')
         + _roster_toml([(2, "[::1]:7002", 2), (0, "peer-0.example:7000", 0), (1, "b\u00fccher.example:7001", 1)])),
        ("byzpg",
         ("ByzPG (peer 0 is the trusted server) with a bucketing aggregator; randomness.json's second coin "
          "sequence uses this genesis hash"),
         ('env = "CartPole-v1"\nalgorithm = "byzpg"\nnum_peers = 3\nseed = 7\n\n[aggregation]\n'
          'rule = "bucketing+krum"\nbucket_size = 3\n') + _roster_toml([(i, _ADDRESSES[i], i) for i in range(3)])),
    ]


def _parse(text: str) -> RunFile:
    return parse_run_file(tomllib.loads(text))


def _genesis_blob(cfg: RunConfig) -> bytes:
    """The JSON text `RunConfig.genesis_hash` hashes, re-derived here so the vector can show it.

    Asserted equal to the project's hash below, so it cannot drift from the real encoding.
    """
    data = cfg.to_dict()
    for name in ("attack", "num_byzantine", "allow_beyond_tolerance"):
        data.pop(name)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    if hashlib.sha256(b"decbyzpg-genesis-v1\0" + blob).digest() != cfg.genesis_hash():
        raise AssertionError("RunConfig.genesis_hash no longer hashes the documented blob")
    return blob


def _roster_blob(run: RunFile) -> bytes:
    roster = [[p.id, p.address, p.public_key] for p in run.peers]
    blob = json.dumps({"num_byzantine": run.config.num_byzantine, "roster": roster},
                      sort_keys=True, separators=(",", ":")).encode()
    if hashlib.sha256(b"decbyzpg-run-v1\0" + run.config.genesis_hash() + blob).digest() != run.run_id:
        raise AssertionError("RunFile.run_id no longer hashes the documented components")
    return blob


def _genesis_document() -> dict[str, Any]:
    runs = []
    for name, shows, text in _run_files():
        run = _parse(text)
        blob = _genesis_blob(run.config)
        roster = _roster_blob(run)
        genesis = run.config.genesis_hash()
        runs.append({
            "name": name,
            "shows": shows,
            "run_file_toml": text,
            "genesis": {
                "domain_hex": _hex(b"decbyzpg-genesis-v1\0"),
                "config_json": blob.decode("ascii"),
                "config_json_hex": _hex(blob),
                "sha256_input_hex": _hex(b"decbyzpg-genesis-v1\0" + blob),
                "genesis_hash": _hex(genesis),
            },
            "run_id": {
                "domain_hex": _hex(b"decbyzpg-run-v1\0"),
                "num_byzantine": run.config.num_byzantine,
                "bound_and_roster_json": roster.decode("ascii"),
                "bound_and_roster_json_hex": _hex(roster),
                "sha256_input_hex": _hex(b"decbyzpg-run-v1\0" + genesis + roster),
                "run_id": _hex(run.run_id),
            },
        })
    if runs[0]["run_id"]["run_id"] == runs[1]["run_id"]["run_id"]:
        raise AssertionError("num_byzantine is no longer part of the run id: update the vector's description")
    return {
        "description": "Genesis hash and run id of given run files. The genesis hash keys the common coin, "
                       "the initial parameters and every random stream; the run id is in every signed "
                       "message and read request, so peers given different run files cannot mix.",
        "format": "genesis_hash = SHA-256(genesis.domain || config_json), where config_json is the run's "
                  "fully resolved learning configuration (every default applied) minus the keys attack, "
                  "num_byzantine and allow_beyond_tolerance, as compact JSON (separators ',' and ':', no "
                  "spaces), keys sorted at every level, ASCII with \\uXXXX escapes, integers as integers "
                  "and floats in Python repr ('0.005', '1e-06', '1.0'). run_id = SHA-256(run_id.domain || "
                  "genesis_hash (32 raw bytes) || bound_and_roster_json), where bound_and_roster_json is the "
                  "compact JSON object {\"num_byzantine\": f, \"roster\": [[id, address, public_key_text], ...]} "
                  "with sorted keys and the roster sorted by id. sha256_input_hex is the whole "
                  "hashed byte string. The [network], [tls] and [adversary] tables are in neither hash.",
        "runs": runs,
    }


# --------------------------------------------------------------------------- signed envelopes

_ENV_RUN = 0  # index of the run file whose run id the envelope vectors use
_SELF = 3
_DIM = 3
_NOW = 10
_AHEAD = 2
_BEHIND = 2
_MAX_BYTES = 256
_VEC = np.array([1.0, -2.5, 0.5], dtype=np.float32)


def _body(run_id: bytes, iteration: int = _NOW, phase: int = 1, round_index: int = 0, sender: int = 1,
          vector: Any = _VEC, length: int | None = None) -> bytes:
    """The canonical serialized RoundMessage (the project's schema, proto3 encoding)."""
    data = np.asarray(vector, dtype="<f4").tobytes()
    msg = peer_pb2.RoundMessage(run_id=run_id, iteration=iteration, phase=phase, round=round_index, sender=sender,
                                length=len(data) // 4 if length is None else length, vector=data)
    return msg.SerializeToString(deterministic=True)


def _envelope(body: bytes, sender: int = 1, signer: int | None = None) -> bytes:
    key = _key(sender if signer is None else signer)
    return peer_pb2.SignedMessage(sender=sender, body=body,
                                  signature=crypto.sign(key, wire.DOMAIN, body)).SerializeToString()


def _context(run: RunFile) -> dict[str, Any]:
    shape = Schedule.of(run.config).shape()
    return {
        "run_id": _hex(run.run_id),
        "roster": {str(i): _hex(_public_raw(i)) for i in range(4)},
        "self_id": _SELF,
        "dim": _DIM,
        "current_iteration": _NOW,
        "window_ahead": _AHEAD,
        "keep_behind": _BEHIND,
        "max_message_bytes": _MAX_BYTES,
        "phases": sorted(int(p) for p in shape.phases),
        "agreement_rounds": shape.agreement_rounds,
    }


def _validator(run: RunFile, store: RoundStore) -> wire.Validator:
    return wire.Validator(run.run_id, {i: _key(i).public_key() for i in range(4)}, _SELF, _DIM,
                          Schedule.of(run.config).shape(), max_message_bytes=_MAX_BYTES, window_ahead=_AHEAD,
                          keep_behind=_BEHIND, already_held=store.holds)


def _receive(run: RunFile, held: Sequence[bytes], envelope: bytes) -> tuple[str, wire.Verdict]:
    """What a receiver answers to `envelope` after accepting `held`, as `PeerTransport.receive` decides:
    the validator first, then the round store (first wins, DUPLICATE, EQUIVOCATION)."""
    store = RoundStore()
    validator = _validator(run, store)
    for raw in held:
        earlier = validator.check(raw, _NOW)
        if not earlier.accepted or store.add(earlier) != wire.ACCEPTED:
            raise AssertionError("a 'held' envelope of a vector was not accepted")
    verdict = validator.check(envelope, _NOW)
    reason = store.add(verdict) if verdict.accepted else verdict.reason
    return wire.reason_name(reason), verdict


def _decoded(envelope: bytes) -> dict[str, Any]:
    """The envelope's fields, and the body's where it parses (for readers; the hex is authoritative)."""
    try:
        env = peer_pb2.SignedMessage.FromString(envelope)
    except Exception:  # noqa: BLE001 - garbage is a legitimate vector input
        return {}
    out: dict[str, Any] = {"sender": env.sender, "body_hex": _hex(env.body), "signature_hex": _hex(env.signature)}
    try:
        body = peer_pb2.RoundMessage.FromString(env.body)
    except Exception:  # noqa: BLE001
        return out
    out["body_fields"] = {"run_id": _hex(body.run_id), "iteration": body.iteration, "phase": body.phase,
                          "round": body.round, "sender": body.sender, "length": body.length,
                          "vector_hex": _hex(body.vector)}
    return out


def _envelope_cases(run: RunFile) -> list[tuple[str, str, str, list[bytes], bytes]]:
    """(name, expected reason name, why, held envelopes, envelope) for every vector."""
    rid = run.run_id
    other_run = _parse(_run_files()[2][2]).run_id
    good = _envelope(_body(rid))
    body = _body(rid)
    sig = crypto.sign(_key(1), wire.DOMAIN, body)
    flipped = bytes([sig[0] ^ 0x01]) + sig[1:]
    specials = np.array([-0.0, np.float32(1.4e-45), np.finfo(np.float32).max], dtype=np.float32)

    def signed_raw(body_bytes: bytes, sender: int = 1) -> bytes:
        return _envelope(body_bytes, sender)

    # hand-built bodies: the same content as `body`, encoded non-canonically
    vec_bytes = _VEC.astype("<f4").tobytes()
    head = _pb_bytes(1, rid) + _pb_varint(2, _NOW) + _pb_varint(3, 1)
    tail = _pb_varint(5, 1) + _pb_varint(6, 3) + _pb_bytes(7, vec_bytes)
    canonical = head + tail
    if canonical != body:
        raise AssertionError("the canonical RoundMessage encoding changed")
    explicit_default = head + _pb_varint(4, 0) + tail
    reordered = _pb_varint(2, _NOW) + _pb_bytes(1, rid) + _pb_varint(3, 1) + tail
    overlong = _pb_bytes(1, rid) + _varint(2 << 3) + bytes([0x8A, 0x00]) + _pb_varint(3, 1) + tail
    repeated = head + _pb_varint(2, _NOW) + tail
    unknown = canonical + _pb_bytes(99, b"\0" * 8)
    uint32_overflow = head + _pb_varint(5, (1 << 32) + 1) + _pb_varint(6, 3) + _pb_bytes(7, vec_bytes)
    negative_phase = _pb_bytes(1, rid) + _pb_varint(2, _NOW) + _pb_varint(3, (1 << 64) - 1) + tail
    wrong_wire_type = _pb_bytes(1, rid) + _pb_bytes(2, b"\x0a") + _pb_varint(3, 1) + tail
    # envelope spellings that are not canonical protobuf: the envelope itself is not checked for that
    env_reordered = (_pb_bytes(3, sig) + _pb_bytes(2, body) + _pb_varint(1, 1))
    env_unknown = good + _pb_bytes(15, b"extra")

    cases: list[tuple[str, str, str, list[bytes], bytes]] = [
        ("gradient round", "ACCEPTED", "peer 1's GRADIENT message for the current iteration", [], good),
        ("agreement last round", "ACCEPTED", "AGREEMENT round R-1 = 2",
         [], signed_raw(_body(rid, phase=2, round_index=2))),
        ("sender 0 agreement round 0", "ACCEPTED",
         "sender 0 and round 0 are proto3 defaults: both fields are absent from the body",
         [], signed_raw(_body(rid, phase=2, round_index=0, sender=0), sender=0)),
        ("oldest iteration kept", "ACCEPTED", "iteration = current - keep_behind", [],
         signed_raw(_body(rid, iteration=_NOW - _BEHIND))),
        ("newest iteration accepted", "ACCEPTED", "iteration = current + window_ahead", [],
         signed_raw(_body(rid, iteration=_NOW + _AHEAD))),
        ("special float values", "ACCEPTED", ("-0.0, the smallest subnormal and the largest float32 are finite: "
                                                 "accepted with their bits preserved"), [], signed_raw(_body(rid, vector=specials))),
        ("envelope fields reordered", "ACCEPTED", ("the envelope (unlike the body) need not be canonical: "
                                                      "signature, body, sender in reverse field order"), [], env_reordered),
        ("envelope unknown field", "ACCEPTED", ("an unknown field in the envelope is ignored (the stored copy "
                                                   "drops it); only the body must be canonical"), [], env_unknown),
        ("too large", "TOO_LARGE", "a validly signed message over max_message_bytes; refused before parsing",
         [], signed_raw(_body(rid, vector=np.zeros(60, np.float32)))),
        ("too large garbage", "TOO_LARGE", "size is checked first, even for bytes that would not parse",
         [], b"\xff" * (_MAX_BYTES + 1)),
        ("empty", "MALFORMED", "zero bytes parse as an empty envelope, which is malformed (not a claim by peer 0)",
         [], b""),
        ("garbage", "MALFORMED", "not a protobuf message", [], b"\xff\xff\xff\xff"),
        ("short signature", "MALFORMED", "a signature must be exactly 64 bytes",
         [], peer_pb2.SignedMessage(sender=1, body=body, signature=sig[:63]).SerializeToString()),
        ("no body", "MALFORMED", "an envelope without body",
         [], peer_pb2.SignedMessage(sender=1, signature=sig).SerializeToString()),
        ("signed garbage body", "MALFORMED", ("a validly signed body that does not parse as a RoundMessage "
                                                  "(a length-delimited field running past the end)"), [], signed_raw(b"\x0a\x05abc")),
        ("unknown sender", "UNKNOWN_SENDER", "sender 7 is not in the roster (signed by a stranger's key)",
         [], _envelope(_body(rid, sender=7), sender=7, signer=STRANGER)),
        ("self", "SELF", "claims to come from the receiver itself (checked before the signature)",
         [], signed_raw(_body(rid, sender=_SELF), sender=_SELF)),
        ("other key", "BAD_SIGNATURE", "envelope sender 1, signed with peer 2's key",
         [], _envelope(body, sender=1, signer=2)),
        ("no domain", "BAD_SIGNATURE", "signed over the body alone, without the domain prefix",
         [], peer_pb2.SignedMessage(sender=1, body=body, signature=_key(1).sign(body)).SerializeToString()),
        ("bit flipped", "BAD_SIGNATURE", "one bit of a valid signature flipped",
         [], peer_pb2.SignedMessage(sender=1, body=body, signature=flipped).SerializeToString()),
        ("explicit default field", "NON_CANONICAL", "round = 0 written out (proto3 omits default values)",
         [], signed_raw(explicit_default)),
        ("fields out of order", "NON_CANONICAL", "iteration (2) before run_id (1)", [], signed_raw(reordered)),
        ("overlong varint", "NON_CANONICAL", "iteration 10 as the two-byte varint 8a 00", [], signed_raw(overlong)),
        ("repeated field", "NON_CANONICAL", "iteration written twice (the parser keeps the last)",
         [], signed_raw(repeated)),
        ("unknown body field", "NON_CANONICAL", "field 99 appended (padding inside the signature)",
         [], signed_raw(unknown)),
        ("uint32 overflow", "NON_CANONICAL", ("sender written as the varint 2^32 + 1: it parses (truncated to "
                                               "1), but 1 encodes differently; not MALFORMED"),
         [], signed_raw(uint32_overflow)),
        ("known field with the wrong wire type", "NON_CANONICAL",
         ("iteration (field 2) written length-delimited: the parser keeps it as an unknown field, so the body "
          "is not canonical; not MALFORMED"), [], signed_raw(wrong_wire_type)),
        ("sender mismatch", "SENDER_MISMATCH", "envelope sender 1 and peer 1's signature, body sender 2",
         [], _envelope(_body(rid, sender=2), sender=1)),
        ("wrong run", "WRONG_RUN", "the run id of another run file (floats-and-order)",
         [], signed_raw(_body(other_run))),
        ("stale", "STALE", "iteration = current - keep_behind - 1", [],
         signed_raw(_body(rid, iteration=_NOW - _BEHIND - 1))),
        ("too far ahead", "TOO_FAR_AHEAD", "iteration = current + window_ahead + 1", [],
         signed_raw(_body(rid, iteration=_NOW + _AHEAD + 1))),
        ("model phase", "BAD_PHASE", "PHASE_MODEL (3) in a run whose algorithm (decbyzpg) never uses it",
         [], signed_raw(_body(rid, phase=3))),
        ("unspecified phase", "BAD_PHASE", "phase 0 (field absent)", [], signed_raw(_body(rid, phase=0))),
        ("unknown phase", "BAD_PHASE", "phase 9, no such value", [], signed_raw(_body(rid, phase=9))),
        ("negative phase", "BAD_PHASE", ("phase -1: the enum is an int32, so -1 is the 10-byte varint ff..ff 01, "
                                         "which IS its canonical encoding; the phase check rejects it"),
         [], signed_raw(negative_phase)),
        ("agreement round out of range", "BAD_ROUND", "AGREEMENT round 3 with R = 3",
         [], signed_raw(_body(rid, phase=2, round_index=3))),
        ("gradient round not 0", "BAD_ROUND", "GRADIENT has only round 0",
         [], signed_raw(_body(rid, round_index=1))),
        ("length not the bytes", "BAD_LENGTH", "length 2 with 3 values (12 bytes)",
         [], signed_raw(_body(rid, length=2))),
        ("bytes not the length", "BAD_LENGTH", "length 3 with 8 bytes",
         [], signed_raw(_body(rid, vector=_VEC[:2], length=3))),
        ("not the model's dim", "BAD_LENGTH", "4 values, consistent, but dim is 3",
         [], signed_raw(_body(rid, vector=np.append(_VEC, np.float32(1.0))))),
        ("nan", "NON_FINITE", "a quiet NaN", [], signed_raw(_body(rid, vector=[1.0, np.nan, 0.5]))),
        ("infinity", "NON_FINITE", "+infinity", [], signed_raw(_body(rid, vector=[1.0, -2.5, np.inf]))),
        ("duplicate", "DUPLICATE", "the byte-identical envelope again (answered without verifying again)",
         [good], good),
        ("equivocation", "EQUIVOCATION", ("a different, validly signed vector for the same (sender, t, phase, r): "
                                              "the first stays, the pair is kept as evidence"), [good], signed_raw(_body(rid, vector=[1.0, -2.5, 0.75]))),
    ]
    return cases


def _envelopes_document() -> dict[str, Any]:
    run = _parse(_run_files()[_ENV_RUN][2])
    cases = []
    seen: set[str] = set()
    for name, expected, why, held, envelope in _envelope_cases(run):
        got, verdict = _receive(run, held, envelope)
        if got != expected:
            raise AssertionError(f"envelope vector {name!r}: expected {expected}, the validator says {got}")
        seen.add(got)
        case: dict[str, Any] = {
            "name": name,
            "why": why,
            "envelope_hex": _hex(envelope),
            "envelope_bytes": len(envelope),
            "held_hex": [_hex(h) for h in held],
            "expected": expected,
            "expected_code": 0 if expected == "ACCEPTED" else int(peer_pb2.RejectReason.Value("REJECT_REASON_" + expected)),
            "decoded": _decoded(envelope),
        }
        if verdict.accepted and verdict.vector is not None and verdict.round_key is not None:
            case["accepted_vector"] = f32(verdict.vector)
            case["accepted_round"] = {"iteration": verdict.round_key.iteration,
                                      "phase": int(verdict.round_key.phase), "round": verdict.round_key.round}
        cases.append(case)
    every = {wire.reason_name(v) for v in peer_pb2.RejectReason.values()}
    if seen != every:
        raise AssertionError(f"envelope vectors miss reasons {sorted(every - seen)}")
    return {
        "description": "Signed round messages (SignedMessage envelopes) and what a receiver answers to each: "
                       "accepted ones and at least one per RejectReason. Every envelope is signed with the test "
                       "keys of keys.json; the run id is that of genesis.json's four-peer-decbyzpg run.",
        "format": "context: the receiver's state. roster maps peer id -> raw Ed25519 public key; phases lists "
                  "the Phase values the run's algorithm uses and agreement_rounds is R (rounds 0..R-1); the "
                  "acceptance window is current_iteration - keep_behind .. current_iteration + window_ahead "
                  "(the daemon sets keep_behind = network.retain_iterations); max_message_bytes bounds the "
                  "raw envelope. Each case: envelope_hex is the exact bytes received (as Push or a Deliver "
                  "stream carries them). held_hex lists envelopes received and accepted before it, in order. "
                  "expected is the RejectReason name without its REJECT_REASON_ prefix (ACCEPTED for "
                  "REJECT_REASON_UNSPECIFIED), expected_code its number. decoded is informative only "
                  "(sender, body and signature where the envelope parses, and the body's fields where it "
                  "parses). signature = Ed25519(key, 'decbyzpg/v1/round-message\\0' || body). For accepted "
                  "cases accepted_vector is the decoded vector and accepted_round its slot. Check order: "
                  "size, envelope parse/fields, roster, self, byte-identical duplicate, signature, body "
                  "parse, canonical body, sender match, run id, window, phase, round, length, finite; then "
                  "first-wins storage (DUPLICATE, EQUIVOCATION). " + FLOAT_NOTE,
        "context": _context(run),
        "domain_hex": _hex(wire.DOMAIN),
        "cases": cases,
    }


# --------------------------------------------------------------------------- read requests

_ISSUED_MS = 1_700_000_000_000
_READER = 1


def _read_requests() -> list[tuple[str, str, Any]]:
    return [
        ("Pull for two senders", "Pull",
         peer_pb2.PullRequest(iteration=_NOW, phase=int(Phase.GRADIENT), round=0, senders=[0, 2])),
        ("Pull for everything held", "Pull",
         peer_pb2.PullRequest(iteration=_NOW, phase=int(Phase.AGREEMENT), round=2)),
        ("Status", "Status", peer_pb2.StatusRequest()),
        ("Evidence", "Evidence", peer_pb2.EvidenceRequest()),
    ]


def _reads_document() -> dict[str, Any]:
    run = _parse(_run_files()[_ENV_RUN][2])
    rid = run.run_id
    signed_cases = []
    authorized: dict[str, Any] = {}
    for name, method, request in _read_requests():
        if method == "Pull":
            request.run_id = rid
        reads.authorize(request, method, rid, _READER, _key(_READER), issued_ms=_ISSUED_MS)
        message = reads.signed_bytes(method, rid, _READER, _ISSUED_MS, request)
        authorized[name] = request
        fields: dict[str, Any] = {}
        if method == "Pull":
            fields = {"iteration": request.iteration, "phase": request.phase, "round": request.round,
                      "senders": list(request.senders)}
        signed_cases.append({
            "name": name,
            "method": method,
            "reader": _READER,
            "issued_ms": _ISSUED_MS,
            "request_fields": fields,
            "signed_bytes_hex": _hex(message),
            "signature_input_hex": _hex(reads.READ_DOMAIN + message),
            "signature_hex": _hex(request.auth.signature),
            "request_hex": _hex(request.SerializeToString(deterministic=True)),
        })

    clock_ms = _ISSUED_MS + 60_000
    gate = reads.ReadGate(rid, {i: _key(i).public_key() for i in range(4)}, max_skew=300.0, clock_ms=lambda: clock_ms)

    def variant(name: str, change: Callable[[Any], None]) -> Any:
        request = type(authorized[name])()
        request.CopyFrom(authorized[name])
        change(request)
        return request

    def resign(request: Any, method: str, reader: int, key: int, issued: int) -> None:
        reads.authorize(request, method, rid, reader, _key(key), issued_ms=issued)

    pull, status = "Pull for two senders", "Status"
    gate_cases: list[tuple[str, str, Any, bool, str]] = [
        ("signed Pull", "Pull", authorized[pull], True, "as signed above"),
        ("signed Status", "Status", authorized[status], True, "as signed above"),
        ("Status authorization used for Evidence", "Evidence",
         _evidence_with(authorized[status].auth), False,
         "the method name is signed: an authorization for one method is no use for another"),
        ("Pull senders changed", "Pull", variant(pull, lambda r: r.senders.append(1)), False,
         "the sender list is signed"),
        ("Pull iteration changed", "Pull", variant(pull, lambda r: setattr(r, "iteration", _NOW + 1)), False,
         "iteration, phase and round are signed"),
        ("no authorization", "Status", peer_pb2.StatusRequest(), False, "reads answer roster members only"),
        ("reader not in roster", "Status",
         variant(status, lambda r: resign(r, "Status", 7, STRANGER, _ISSUED_MS)), False,
         "reader 7 has no pinned key"),
        ("another reader's key", "Status", variant(status, lambda r: resign(r, "Status", 2, 1, _ISSUED_MS)), False,
         "signed by peer 1's key but claims reader 2"),
        ("issued too long ago", "Status",
         variant(status, lambda r: resign(r, "Status", 1, 1, clock_ms - 300_001)), False,
         "more than max_skew before the receiver's clock"),
        ("issued at the window's edge", "Status",
         variant(status, lambda r: resign(r, "Status", 1, 1, clock_ms + 300_000)), True,
         "exactly max_skew after the receiver's clock is still fresh"),
    ]
    checks = []
    for name, method, request, answered, why in gate_cases:
        refusal = gate.refusal(method, request)
        if (refusal is None) != answered:
            raise AssertionError(f"read vector {name!r}: expected answered={answered}, the gate says {refusal!r}")
        checks.append({"name": name, "method": method, "request_hex": _hex(request.SerializeToString(deterministic=True)),
                       "answered": answered, "why": why})
    return {
        "description": "Signed read requests (ReadAuth of Pull, Status and Evidence): the exact bytes a reader "
                       "signs, and which requests a peer answers.",
        "format": "signed_bytes = run_id (32 bytes) || method name (ASCII) || 0x00 || reader (uint32 "
                  "big-endian) || issued_ms (uint64 big-endian) || for Pull only: iteration (uint64 BE), "
                  "phase (uint32 BE), round (uint32 BE), number of senders (uint32 BE), each sender (uint32 "
                  "BE) in request order. signature = Ed25519(reader's key, read_domain || signed_bytes) and "
                  "signature_input_hex is that whole input. run_id is the receiving run's id (that of "
                  "genesis.json's four-peer-decbyzpg), not a request field. request_hex is the serialized "
                  "request with its auth (protobuf, for reference). gate: a receiver with that run id, the "
                  "roster of test keys 0..3, max_skew_ms and clock_ms as given answers a request iff "
                  "'answered'; open_status is false.",
        "read_domain_hex": _hex(reads.READ_DOMAIN),
        "run_id": _hex(rid),
        "signed": signed_cases,
        "gate": {"clock_ms": clock_ms, "max_skew_ms": 300_000, "open_status": False, "cases": checks},
    }


def _evidence_with(auth: Any) -> Any:
    request = peer_pb2.EvidenceRequest()
    request.auth.CopyFrom(auth)
    return request


# --------------------------------------------------------------------------- randomness and schedule


def _digest_input(genesis: bytes, *parts: bytes | str | int) -> bytes:
    """The bytes `randomness._digest` hashes, spelled out so the vector can show them (checked below)."""
    out = b"decbyzpg-rand-v1\0" + genesis
    for part in parts:
        raw = struct.pack("<q", part) if isinstance(part, int) else part.encode() if isinstance(part, str) else part
        out += struct.pack("<I", len(raw)) + raw
    return out


def _checked_digest_input(genesis: bytes, *parts: bytes | str | int) -> bytes:
    data = _digest_input(genesis, *parts)
    word = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
    if (word >> 11) * (1.0 / (1 << 53)) != randomness.uniform(genesis, *parts):
        raise AssertionError("randomness._digest no longer hashes the documented bytes")
    return data


def _stream_vector(genesis: bytes, parts: tuple[Any, ...], use: str,
                   draw: Callable[[np.random.Generator], Any]) -> dict[str, Any]:
    data = _checked_digest_input(genesis, "stream", *parts)
    seed = int.from_bytes(hashlib.sha256(data).digest()[:16], "little")
    raw = randomness.stream(genesis, *parts).bit_generator.random_raw(4)
    return {
        "parts": list(parts),
        "used_for": use,
        "sha256_input_hex": _hex(data),
        "philox_key": [str(seed & ((1 << 64) - 1)), str(seed >> 64)],
        "first_raw_uint64": [str(int(v)) for v in raw],
        "draws": draw(randomness.stream(genesis, *parts)),
    }


def _sample_draws(rng: np.random.Generator) -> dict[str, Any]:
    env_seed = int(rng.integers(0, 2**31 - 1))
    return {"env_reset_seed": env_seed, "then_random_5": f64(rng.random(5))}


def _randomness_document() -> dict[str, Any]:
    runs = _run_files()
    genesis_a = _parse(runs[0][2]).config.genesis_hash()
    genesis_b = _parse(runs[3][2]).config.genesis_hash()
    coins = []
    for label, genesis, p in (("four-peer-decbyzpg", genesis_a, 0.2), ("byzpg", genesis_b, 0.2)):
        values = []
        for t in range(1, 41):
            data = _checked_digest_input(genesis, "coin", t)
            values.append({"t": t, "u": randomness.uniform(genesis, "coin", t),
                           "word_hex": _hex(hashlib.sha256(data).digest()[:8]),
                           "x": randomness.common_coin(genesis, t, p)})
        coins.append({"run": label, "genesis_hash": _hex(genesis), "switch_prob": p,
                      "t1_sha256_input_hex": _hex(_checked_digest_input(genesis, "coin", 1)),
                      "x0": randomness.common_coin(genesis, 0, p), "values": values})
    streams = [
        _stream_vector(genesis_a, ("sample", 1, 0), "peer 1's trajectories in iteration 0: first draw the env "
                       "reset seed integers(0, 2**31 - 1), then one random() per environment per step for "
                       "categorical actions (inverse CDF) or standard_normal() for Gaussian ones",
                       _sample_draws),
        _stream_vector(genesis_a, ("aggregate", 1, 0), "peer 1's aggregation in iteration 0 (bucketing draws "
                       "permutation(n) once)",
                       lambda rng: {"permutation_4": [int(v) for v in rng.permutation(4)]}),
        _stream_vector(genesis_a, ("aggregate", 0, 3), "peer 0's aggregation in iteration 3, 13 senders",
                       lambda rng: {"permutation_13": [int(v) for v in rng.permutation(13)]}),
        _stream_vector(genesis_a, ("attack", 5, int(Phase.AGREEMENT), 1), "the Byzantine coalition's vector in "
                       "(t=5, AGREEMENT, r=1) (adversary only: honest peers never draw it)",
                       lambda rng: {"normal_3": f64(rng.normal(0.0, 1.0, 3))}),
    ]
    theta0 = _theta0(genesis_a)
    return {
        "description": "Everything random the protocol depends on, derived from the genesis hash: the common "
                       "coin x_t (large-batch iteration or not; identical at every peer without any message), "
                       "the per-purpose numpy streams, and the torch seed of the initial parameters theta_0.",
        "format": "digest(G, parts...) = SHA-256('decbyzpg-rand-v1\\0' || G || for each part: uint32 "
                  "little-endian byte length || bytes), where a str part is its UTF-8 bytes and an int part "
                  "is 8 bytes int64 little-endian (two's complement). uniform(G, parts) = (first 8 digest "
                  "bytes as uint64 little-endian >> 11) * 2^-53. Coin: x_0 = true; for t >= 1, x_t = "
                  "uniform(G, 'coin', t) < switch_prob; word_hex is the first 8 digest bytes. Streams: "
                  "seed = first 16 bytes of digest(G, 'stream', parts...) as a little-endian integer; the "
                  "generator is numpy's Generator(Philox(key=seed)), Philox4x64-10 with key words "
                  "(seed mod 2^64, seed >> 64) and counter 0 (numpy increments the counter before each "
                  "4-word block, so the first block is Philox(counter=1)); philox_key and first_raw_uint64 "
                  "are decimal strings of uint64. 'draws' are what the named consumer gets from numpy's "
                  "Generator methods (their algorithms are numpy's, not part of this file). torch_seed(G, "
                  "parts) = (first 8 bytes of digest(G, 'torch', parts...) as uint64 LE) >> 1; theta0 is "
                  "the policy torch builds from it (see its own note). " + FLOAT_NOTE,
        "coins": coins,
        "streams": streams,
        "theta0": theta0,
    }


def _theta0(genesis: bytes) -> dict[str, Any]:
    """theta_0 of a tiny categorical policy, as torch initializes it from the derived seed."""
    import gymnasium as gym

    from peer.engine.config import PolicyConfig
    from peer.engine.policy import build_policy, get_flat

    seed = randomness.torch_seed(genesis, "theta0")
    data = _checked_digest_input(genesis, "torch", "theta0")
    if int.from_bytes(hashlib.sha256(data).digest()[:8], "little") >> 1 != seed:
        raise AssertionError("randomness.torch_seed changed")
    cfg = PolicyConfig(hidden=(4,), activation="relu")
    policy = build_policy(cfg, gym.spaces.Box(-1.0, 1.0, (4,), np.float32), gym.spaces.Discrete(2), seed)
    return {
        "genesis_hash": _hex(genesis),
        "sha256_input_hex": _hex(data),
        "torch_seed": str(seed),
        "policy": {"obs_dim": 4, "actions": 2, "hidden": [4], "activation": "relu"},
        "layout": _layout(policy),
        "theta0": f32(get_flat(policy).numpy()),
        "note": "torch.manual_seed(torch_seed), then torch.nn.Linear's default initialization of each layer "
                "in order (weights kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), "
                "then the bias from the same bound), drawn from torch's CPU generator. Reproducing it "
                "outside torch means reproducing that generator; a peer may instead take theta0 from here "
                "to test its arithmetic.",
    }


def _layout(policy: Any) -> list[dict[str, Any]]:
    """Where each parameter tensor sits in the flat vector peers exchange (row-major, in module order)."""
    out, offset = [], 0
    for name, p in policy.named_parameters():
        out.append({"name": name, "shape": list(p.shape), "offset": offset})
        offset += p.numel()
    return out


def _schedule_configs() -> list[tuple[str, dict[str, Any]]]:
    base = {"env": "CartPole-v1", "seed": 7, "trajectories_per_agent": 300,
            "estimator": {"large_batch": 50, "small_batch": 4}}
    return [
        ("decbyzpg R=3", {**base, "num_peers": 5, "num_byzantine": 1}),
        ("decbyzpg paper preset R=3", {**base, "preset": "paper", "num_peers": 5, "num_byzantine": 1}),
        ("decbyzpg gda R=2", {**base, "num_peers": 6, "num_byzantine": 1, "agreement": {"rule": "gda", "rounds": 2}}),
        ("dec-page-pg", {**base, "algorithm": "dec-page-pg", "num_peers": 4}),
        ("byzpg", {**base, "algorithm": "byzpg", "num_peers": 3, "num_byzantine": 1}),
        ("page-pg", {**base, "algorithm": "page-pg", "num_peers": 1}),
        ("decbyzpg max_small_steps=2", {**base, "num_peers": 5, "num_byzantine": 1,
                                        "estimator": {**base["estimator"], "switch_prob": 0.2, "max_small_steps": 2}}),
    ]


def _schedule_document() -> dict[str, Any]:
    schedules = []
    for name, data in _schedule_configs():
        cfg = build_config(data, in_process=False)
        sched = Schedule.of(cfg)
        shape = sched.shape()
        iterations = []
        for t in range(24):
            iterations.append({"t": t, "x": sched.is_large_batch(t), "batch": sched.batch_size(t),
                               "rounds": [[int(k.phase), k.round] for k in sched.rounds(t)]})
        phases = sorted(shape.phases)
        schedules.append({
            "name": name,
            "config": data,
            "genesis_config_json": _genesis_blob(cfg).decode("ascii"),
            "genesis_hash": _hex(cfg.genesis_hash()),
            "algorithm": cfg.algorithm,
            "switch_prob": cfg.estimator.switch_prob,
            "large_batch": cfg.estimator.large_batch,
            "small_batch": cfg.estimator.small_batch,
            "trajectories_per_agent": cfg.trajectories_per_agent,
            "iteration_count": sched.iteration_count,
            "shape": {"phases": [int(p) for p in phases], "agreement_rounds": shape.agreement_rounds},
            "senders": {str(int(p)): sorted(sched.senders(RoundKey(0, p))) for p in phases},
            "quorum": {str(int(p)): sched.quorum(RoundKey(0, p)) for p in phases},
            "iterations": iterations,
        })
    return {
        "description": "Which all-to-all rounds (t, phase, r) each algorithm has, driven by the common coin, and "
                       "which of them a receiver admits at all (RoundShape: BAD_PHASE / BAD_ROUND otherwise).",
        "format": "config is the run file's learning section (defaults: CartPole-v1, tuned); "
                  "genesis_config_json and genesis_hash as in genesis.json. Per iteration t: x is the coin "
                  "(randomness.json), batch the trajectories sampled (large_batch if x else small_batch), "
                  "rounds the [phase, r] slots in the order every peer goes through them (phase 1 GRADIENT, 2 "
                  "AGREEMENT, 3 MODEL). iteration_count: iterations while the sum of batch sizes stays within "
                  "trajectories_per_agent. shape: the phases admitted and R (AGREEMENT rounds 0..R-1; the other "
                  "phases round 0 only). senders / quorum by phase: whose vectors a round carries and how many "
                  "(own included) it needs before it may close after the grace period (K - f, f = "
                  "num_byzantine; 1 for MODEL, where only peer 0 sends).",
        "schedules": schedules,
    }


# --------------------------------------------------------------------------- aggregation and agreement

_AGG_INPUTS = np.array([
    [1.0, 2.0, 3.0],
    [1.1, 1.9, 3.2],
    [0.9, 2.2, 2.9],
    [1.05, 2.05, 3.05],
    [0.95, 1.8, 3.1],
    [50.0, -40.0, 10.0],
    [-30.0, 60.0, -20.0],
], dtype=np.float32)


def _aggregator_cases() -> list[tuple[str, str, int, dict[str, Any], np.ndarray]]:
    x, even = _AGG_INPUTS, _AGG_INPUTS[:6]
    return [
        ("mean", "mean", 2, {}, x),
        ("median odd n", "median", 2, {}, x),
        ("median even n", "median", 2, {}, even),
        ("trimmed mean f=2", "trimmed_mean", 2, {}, x),
        ("trimmed mean n<=2f falls back to median", "trimmed_mean", 3, {}, even),
        ("rfa", "rfa", 2, {}, x),
        ("rfa: the geometric median is an input (snap)", "rfa", 0, {},
         np.array([[0, 0, 0], [10, 0, 0], [-10, 1, 0]], np.float32)),
        ("rfa: the geometric median is interior (Fermat point)", "rfa", 0, {},
         np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0]], np.float32)),
        ("krum f=2", "krum", 2, {}, x),
        ("multi-krum f=2 m=n-f", "multi_krum", 2, {}, x),
        ("multi-krum f=1 m=2", "multi_krum", 1, {"m": 2}, x),
        ("centered clipping tau from the data", "centered_clipping", 2, {}, x),
        ("centered clipping tau=0.5", "centered_clipping", 2, {"tau": 0.5, "iterations": 2}, x),
        ("bucketing+mean s=2", "bucketing+mean", 2, {"bucket_size": 2}, x),
        ("bucketing+rfa s=2", "bucketing+rfa", 2, {"bucket_size": 2}, x),
        ("bucketing+krum s=3 (3 means: outside Krum's n > 2f + 2)", "bucketing+krum", 1, {"bucket_size": 3}, x),
        ("nnm+rfa f=2 (each row: the mean of its n - f nearest)", "nnm+rfa", 2, {}, x),
        ("nnm+median f=1", "nnm+median", 1, {}, x),
    ]


def _aggregators_document() -> dict[str, Any]:
    genesis = _parse(_run_files()[0][2]).config.genesis_hash()
    parts = ("aggregate", 1, 0)
    cases = []
    for name, rule, f, params, inputs in _aggregator_cases():
        agg = make_aggregator(rule, f, **params)
        out = agg(inputs, randomness.stream(genesis, *parts))
        case: dict[str, Any] = {"name": name, "rule": rule, "f": f, "params": params,
                                "inputs": f32_matrix(inputs), "output": f64(out),
                                "output_as_float32": f32(out)}
        if rule.startswith("bucketing+"):
            case["stream_parts"] = list(parts)
            case["permutation"] = [int(v) for v in randomness.stream(genesis, *parts).permutation(len(inputs))]
        cases.append(case)
    return {
        "description": "Robust aggregation of the GRADIENT round's vectors: inputs, rule, output.",
        "format": "inputs: one row per sender, ordered by sender id, the receiver's own vector included (as "
                  "decoded from the wire: float32). Computation is in float64 from the float32 inputs. output "
                  "is the float64 result; output_as_float32 the value a peer continues with (cast to "
                  "float32). f is the Byzantine bound the rule is built for; params override the rule's "
                  "defaults (rfa: nu=1e-6, tol=1e-10, max_iter=1000, snap=1e-3; centered_clipping: tau from "
                  "the data, iterations=3, start=median; multi_krum: m = n - f). Bucketing draws "
                  "permutation(n) from the peer's stream ('aggregate', peer id, t) of the genesis hash of "
                  "genesis.json's four-peer-decbyzpg (here peer 1, t = 0); 'permutation' is that draw, so "
                  "bucket j averages rows permutation[j*s:(j+1)*s] (the last bucket may be smaller), and "
                  "the inner rule gets the bucket means in bucket order. Means add rows in increasing row "
                  "order, then divide, so mean, median and trimmed mean are reproducible bit for bit; krum's "
                  "choice depends on the order of the sum over coordinates (numpy: pairwise for d > 8) only "
                  "at near-ties. rfa and centered_clipping iterate over such sums and rfa stops at tol times "
                  "the inputs' spread, so another summation order can move their output by about 1e-10 "
                  "relative to that spread. nnm+<rule> first replaces row i by the mean of the n - f rows "
                  "nearest to it (squared distances from explicit differences; row i itself included; ties "
                  "to the lower row; the chosen rows added in increasing row order, then divided), and gives "
                  "the mixed rows, in row order, to the inner rule. " + FLOAT_NOTE,
        "cases": cases,
    }


def _agreement_cases() -> list[tuple[str, str, int, int, np.ndarray]]:
    """(name, rule, own row, q, received rows) -- rows ordered by sender id, own included."""
    rng = np.random.default_rng(11)  # fixed inputs, written out in the file
    cluster = np.round(rng.normal(0.0, 1.0, (7, 3)) * 64) / 64
    far = np.array([[9.0, 9.0, 9.0], [-8.0, 7.5, 0.0]])
    mixed = np.vstack([cluster, far]).astype(np.float32)
    line = np.array([[float(i), 0.0] for i in range(9)], dtype=np.float32)
    square = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5]], dtype=np.float32)
    return [
        ("mda K=9 f=2", "mda", 0, 7, mixed),
        ("mda tie: lexicographically smallest subset", "mda", 4, 7, line),
        ("mda tie in two dimensions", "mda", 4, 4, square),
        ("mda q = m", "mda", 1, 5, square),
        ("mda q = 1 keeps own", "mda", 2, 1, square),
        ("mda fallback: fewer than q received", "mda", 0, 7, mixed[:6]),
        ("gda K=9 f=1", "gda", 0, 8, mixed),
        ("gda tie: lower row first", "gda", 4, 3, square),
        ("none", "none", 0, 7, mixed),
    ]


def _agreement_document() -> dict[str, Any]:
    cases = []
    for name, rule, own_row, q, received in _agreement_cases():
        result = make_agreement(rule)(received[own_row], received, q)
        cases.append({"name": name, "rule": rule, "q": q, "own_row": own_row, "own": f32(received[own_row]),
                      "received": f32_matrix(received), "vector": f64(result.vector),
                      "vector_as_float32": f32(result.vector), "selected": list(result.selected),
                      "diameter": float(result.diameter), "fell_back": result.fell_back})
    if not cases[5]["fell_back"] or cases[1]["selected"] != list(range(7)):
        raise AssertionError("agreement tie or fallback behaviour changed")
    return {
        "description": "One averaging-agreement round at one peer: MDA (minimum-diameter averaging), GDA "
                       "(greedy) and none, with ties and the fallback.",
        "format": "received: one row per sender that delivered in time, ordered by sender id, own vector "
                  "included (row own_row); q = K - f. Distances are float64 L2 norms of explicit differences "
                  "sqrt(sum((a-b)^2)). mda: among all q-subsets of rows choose one of minimum diameter (max "
                  "pairwise distance); ties go to the lexicographically smallest sorted tuple of row "
                  "indices; q = 1 returns own unchanged (selected empty); vector = mean of the selected rows "
                  "(sum in increasing row order, then divide). gda: the q rows nearest to own (stable: equal "
                  "distances go to the lower row). none: own unchanged. Fewer than q rows: own unchanged and "
                  "fell_back true. diameter is the max pairwise distance among ALL received rows (0.0 for "
                  "fewer than two). vector is float64; vector_as_float32 what the peer sends next round. "
                  + FLOAT_NOTE,
        "cases": cases,
    }


# --------------------------------------------------------------------------- estimators

_THETA_NOW = np.array([0.5, -0.25, 0.75, 0.5, -0.5, 1.0,  # net.0.weight (3 x 2)
                       0.125, -0.25, 0.0,  # net.0.bias
                       1.0, -0.5, 0.25, -0.75, 0.5, 0.5,  # net.2.weight (2 x 3)
                       0.0, 0.125], dtype=np.float32)  # net.2.bias
_THETA_PREV = _THETA_NOW + np.array([0.0625, 0, -0.125, 0, 0, 0.0625, 0, 0.125, 0,
                                     -0.25, 0, 0.125, 0, 0, -0.0625, 0.125, 0], dtype=np.float32)
_OBS = np.array([
    [[0.5, -1.0], [1.0, 0.25], [-0.5, 0.75]],
    [[0.25, 0.5], [-1.0, -0.5], [0.0, 0.0]],
    [[1.5, -0.25], [0.0, 0.0], [0.0, 0.0]],
], dtype=np.float32)
_ACTIONS = np.array([[0, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=np.int64)
_REWARDS = np.array([[1.0, 0.5, 2.0], [-1.0, 1.5, 0.0], [0.25, 0.0, 0.0]], dtype=np.float64)
_MASK = np.array([[True, True, True], [True, True, False], [True, False, False]])
_G_THETA = np.array([0.5, 0.25, -0.5, 0.125, 0.0, 0.25, -0.75, 0.5, 0.25, -0.5], dtype=np.float32)  # 2x2, 2, 1x2, 1, log_std
_G_ACTIONS = np.array([[[0.5], [-0.25], [1.0]], [[0.0], [0.75], [0.0]], [[-1.0], [0.0], [0.0]]], dtype=np.float32)


def _estimators_document() -> dict[str, Any]:
    import gymnasium as gym
    import torch

    from peer.engine import estimators
    from peer.engine.config import EstimatorConfig, PolicyConfig
    from peer.engine.policy import build_policy, set_flat
    from peer.engine.sampling import Batch

    def policy(theta: np.ndarray, obs_dim: int, hidden: tuple[int, ...], space: Any, log_std: float = -0.5) -> Any:
        built = build_policy(PolicyConfig(hidden=hidden, activation="relu", init_log_std=log_std),
                             gym.spaces.Box(-1.0, 1.0, (obs_dim,), np.float32), space, 0)
        set_flat(built, theta)
        return built

    def batch(actions: np.ndarray) -> Any:
        return Batch(obs=torch.from_numpy(_OBS.copy()), actions=torch.from_numpy(actions.copy()),
                     rewards=torch.from_numpy(_REWARDS.copy()), mask=torch.from_numpy(_MASK.copy()))

    cases = []
    discrete = gym.spaces.Discrete(2)
    specs: list[tuple[str, str, bool, str]] = [
        ("gpomdp categorical, no baseline", "gpomdp", False, "trajectory"),
        ("gpomdp categorical, leave-one-out baseline", "gpomdp", True, "per_decision"),
        ("page correction categorical, per-decision, baseline (tuned)", "page", True, "per_decision"),
        ("page correction categorical, trajectory, no baseline (paper)", "page", False, "trajectory"),
    ]
    for name, kind, baseline, importance in specs:
        cfg = EstimatorConfig(gamma=0.5, horizon=3, large_batch=3, small_batch=3, baseline=baseline,
                              importance=importance)
        now = policy(_THETA_NOW, 2, (3,), discrete)
        b = batch(_ACTIONS)
        case: dict[str, Any] = {
            "name": name, "estimator": kind, "policy": "categorical",
            "gamma": cfg.gamma, "baseline": baseline, "importance": importance, "log_weight_clip": 0.0,
            "theta": f32(_THETA_NOW), "layout": _layout(now),
            "coefficients": f64(estimators.advantages(b, cfg)),
        }
        if kind == "gpomdp":
            out = estimators.gpomdp(now, b, cfg)
        else:
            prev = policy(_THETA_PREV, 2, (3,), discrete)
            case["theta_prev"] = f32(_THETA_PREV)
            log_w = estimators.log_importance_weights(now, prev, b, cfg)
            case["log_importance_weights"] = f64(log_w)
            case["weighted_coefficients"] = f64(estimators.importance_weighted_coefficients(b, cfg, log_w))
            out = estimators.page_correction(now, prev, b, cfg)
        case["estimate"] = f32(out.detach().numpy())
        cases.append(case)

    cfg = EstimatorConfig(gamma=0.5, horizon=3, large_batch=3, small_batch=3, baseline=True)
    gauss = policy(_G_THETA, 2, (2,), gym.spaces.Box(-2.0, 2.0, (1,), np.float32))
    b = batch(_G_ACTIONS)
    cases.append({"name": "gpomdp gaussian, leave-one-out baseline", "estimator": "gpomdp", "policy": "gaussian",
                  "gamma": 0.5, "baseline": True, "importance": cfg.importance, "log_weight_clip": 0.0,
                  "theta": f32(_G_THETA), "layout": _layout(gauss),
                  "coefficients": f64(estimators.advantages(b, cfg)),
                  "actions_continuous": [f32(row.reshape(-1)) for row in _G_ACTIONS],
                  "estimate": f32(estimators.gpomdp(gauss, b, cfg).detach().numpy())})
    return {
        "description": "Policy-gradient estimates for a fixed tiny network and batch: GPOMDP (large-batch "
                       "iterations) and the PAGE-PG correction g(tau|theta_t) - g_w(tau|theta_{t-1}) "
                       "(small-batch iterations: v_t = v_{t-1} + correction).",
        "format": "Batch (shared by all cases): obs (n=3 trajectories, T=3 steps, 2 features) float32, "
                  "actions (int, categorical; the gaussian case has its own 1-D float32 actions), rewards "
                  "float64, mask (true = real step; padded steps follow the end). Policies: an MLP with "
                  "the given layout (Linear, ReLU, Linear; weights row-major (out, in)); categorical: "
                  "log pi(a|s) = log_softmax(logits)[a]; gaussian: mean = MLP(s), log_std the last "
                  "parameter, log N(a; mean, exp(log_std)^2) summed over action dimensions. theta is the "
                  "flat float32 parameter vector in layout order (what peers exchange). coefficients "
                  "(n x T, row-major, float64) = G_h - b_h on real steps, 0 on padding, with G_h = "
                  "sum_{j>=h} gamma^j r_j (discounted from time 0) and b_h the mean of G_h over the OTHER "
                  "trajectories still running at h (0 if none; only if baseline). gpomdp = (1/n) grad_theta "
                  "sum_{i,h} log pi(a_ih|s_ih) coefficient_ih. page = gpomdp(theta) - (1/n) grad_theta_prev "
                  "sum log pi_prev(a|s) weighted_coefficient, where log_importance_weights (n x T) are the "
                  "per-step log(pi_prev/pi_now) on real steps, cumulated along the trajectory "
                  "(per_decision) or summed over it (trajectory), and weighted_coefficients are, "
                  "per_decision: sum_{j>=h} gamma^j w_j r_j - w_h b_h, trajectory: w (G_h - b_h), with "
                  "w = exp(log w). The estimate is computed in float32 (log-probabilities and gradients; "
                  "coefficients in float64 cast to float32): compare with a relative tolerance of ~1e-5, "
                  "not bit for bit. " + FLOAT_NOTE,
        "batch": {"obs": [f32_matrix(traj) for traj in _OBS], "actions": _ACTIONS.tolist(),
                  "rewards": [f64(r) for r in _REWARDS], "mask": _MASK.tolist()},
        "cases": cases,
    }


# --------------------------------------------------------------------------- the whole set

_BUILDERS: dict[str, tuple[Callable[[], dict[str, Any]], str]] = {
    "keys.json": (_keys_document, "test keys and public key texts"),
    "genesis.json": (_genesis_document, "genesis hash and run id of run files, with every hashed byte"),
    "envelopes.json": (_envelopes_document, "signed round messages: accepted, and one per RejectReason"),
    "reads.json": (_reads_document, "signed read requests (Pull, Status, Evidence) and which are answered"),
    "randomness.json": (_randomness_document, "common coin, random streams, theta_0 seed"),
    "schedule.json": (_schedule_document, "rounds per iteration and admitted shapes, per algorithm"),
    "aggregators.json": (_aggregators_document, "robust aggregation rules"),
    "agreement.json": (_agreement_document, "MDA, GDA and none, with ties and the fallback"),
    "estimators.json": (_estimators_document, "GPOMDP and the PAGE-PG correction for a tiny network"),
}


def generate() -> dict[str, dict[str, Any]]:
    """Every vector file: file name -> JSON-ready document (each with 'description' and 'format')."""
    documents = {name: build() for name, (build, _) in _BUILDERS.items()}
    for name, document in documents.items():
        document["format_version"] = FORMAT_VERSION
        if not document.get("description") or not document.get("format"):
            raise AssertionError(f"{name} lacks a description or format note")
    documents[INDEX] = {
        "description": "Test vectors of the decbyzpg.v1 protocol, generated by `decbyzpg vectors` from the "
                       "reference implementation; a second implementation checks itself against them.",
        "format": "files maps each vector file to what it holds; every file has 'description', 'format' "
                  "(how to read its fields) and 'format_version'. Generated files: do not edit, regenerate.",
        "files": {name: what for name, (_, what) in _BUILDERS.items()},
        "format_version": FORMAT_VERSION,
    }
    return documents


APPROXIMATE: dict[str, float] = {"estimators.json": 1e-5}
"""Files whose numbers are platform-dependent in their last bits, with the relative tolerance
they are compared with.  The estimates come from torch's float32 kernels, whose exp/log and
reduction order depend on the CPU's vector instructions (measured: AVX2 and torch's default
kernels differ in the last bits), so an exact comparison would call the committed file stale
on another CPU although nothing in the protocol changed.  Everything else is exact."""


def _close(current: Any, wanted: Any, rtol: float, key: str = "") -> bool:
    """Same structure and exact strings, ints and bools; floats (and float32 hex) within `rtol`."""
    if isinstance(wanted, dict):
        return (isinstance(current, dict) and current.keys() == wanted.keys()
                and all(_close(current[k], wanted[k], rtol, k) for k in wanted))
    if isinstance(wanted, list):
        return (isinstance(current, list) and len(current) == len(wanted)
                and all(_close(c, w, rtol, key) for c, w in zip(current, wanted)))
    if key == "f32le" and isinstance(current, str) and isinstance(wanted, str) and len(current) == len(wanted):
        try:
            a, b = (np.frombuffer(bytes.fromhex(v), dtype="<f4").astype(np.float64) for v in (current, wanted))
        except ValueError:
            return False
        return bool(np.allclose(a, b, rtol=rtol, atol=rtol * 1e-2, equal_nan=True))
    if isinstance(wanted, float) and isinstance(current, (int, float)) and not isinstance(current, bool):
        return math.isclose(current, wanted, rel_tol=rtol, abs_tol=rtol * 1e-2)
    return type(current) is type(wanted) and current == wanted


def _is_current(path: Path, name: str, document: dict[str, Any]) -> bool:
    try:
        text = path.read_text()
    except OSError:
        return False
    if text == render(document):
        return True
    if name not in APPROXIMATE:
        return False
    try:
        return _close(json.loads(text), document, APPROXIMATE[name])
    except ValueError:
        return False


def _listed(out_dir: Path) -> list[str]:
    """Files the index in `out_dir` lists (what an earlier `write` made), or none."""
    try:
        listed = json.loads((out_dir / INDEX).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [name for name in listed if isinstance(name, str) and "/" not in name and name.endswith(".json")]


def write(out_dir: Path | str, documents: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Write the vector files that are not current into `out_dir` atomically; returns their names.

    Current files are left alone, so regenerating on another CPU does not rewrite the
    platform-dependent last bits of an approximate file.  Files an earlier generation
    listed in index.json that are no longer generated are removed, so a second
    implementation never reads an orphaned vector file; nothing else in the directory is
    touched.
    """
    out = Path(out_dir)
    docs = generate() if documents is None else documents
    orphans = [name for name in _listed(out) if name not in docs]
    written = []
    for name, document in sorted(docs.items()):
        if not _is_current(out / name, name, document):
            atomic_write(out / name, render(document), mode=0o644)
            written.append(name)
    for name in orphans:
        (out / name).unlink(missing_ok=True)
    return written


def stale(out_dir: Path | str, documents: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Names of the files in `out_dir` that differ from what `generate()` gives (missing ones
    included; `APPROXIMATE` files compared with their tolerance), plus files an earlier index
    listed that are no longer generated; sorted."""
    out = Path(out_dir)
    docs = generate() if documents is None else documents
    differing = [name for name, document in docs.items() if not _is_current(out / name, name, document)]
    differing += [name for name in _listed(out) if name not in docs and (out / name).exists()]
    return sorted(differing)
