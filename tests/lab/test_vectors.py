"""tests/vectors/: current, independently checkable, and what the validator really answers.

Three kinds of test, for three reasons:

* **Currency.**  The committed files equal what `peer.lab.vectors.generate()` gives, so a
  change to the protocol's arithmetic or bytes cannot land without regenerating them
  (`decbyzpg vectors`), and a second implementation never checks itself against a stale file.
* **Independent re-derivation.**  Where it is feasible, the outputs are recomputed here from
  the files' documented inputs with hashlib, struct, the cryptography library, numpy and a
  few lines of arithmetic -- never with the project's helpers.  This proves the files'
  "format" notes describe enough to implement from, not merely that the code agrees with
  itself.
* **Rejections through the real validator.**  Every envelope vector is fed, with the
  context the file states, to `Validator` and `RoundStore` as the transport uses them.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import math
import struct
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from decbyzpg.v1 import peer_pb2

from peer.cli import vectors as cli_vectors
from peer.engine.schedule import Phase, RoundShape
from peer.lab import vectors
from peer.net import reads, wire
from peer.net.store import RoundStore

DIR = Path(__file__).resolve().parents[1] / "vectors"
ROUND_DOMAIN = b"decbyzpg/v1/round-message\0"
READ_DOMAIN = b"decbyzpg/v1/read-request\0"
RAND_DOMAIN = b"decbyzpg-rand-v1\0"


def load(name: str) -> dict[str, Any]:
    return json.loads((DIR / name).read_text())


def f32(doc: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(doc["f32le"]), dtype="<f4").astype(np.float32)


def rows(docs: list[dict[str, Any]]) -> np.ndarray:
    return np.stack([f32(d) for d in docs])


ENVELOPES = load("envelopes.json")


@pytest.fixture(scope="module")
def generated() -> dict[str, dict[str, Any]]:
    return vectors.generate()


# --------------------------------------------------------------------------- currency and the command


def test_the_committed_vectors_are_current(generated) -> None:
    assert vectors.stale(DIR, generated) == [], "run `decbyzpg vectors` and commit tests/vectors/"
    assert sorted(p.name for p in DIR.glob("*.json")) == sorted(generated)


def test_every_file_says_what_it_holds_and_how_to_read_it(generated) -> None:
    for name, document in generated.items():
        assert document["description"] and document["format"] and document["format_version"] == 1, name
        assert vectors.render(document).endswith("}\n") and vectors.render(document).isascii()
    assert set(generated["index.json"]["files"]) == set(generated) - {"index.json"}


def test_write_is_what_stale_compares_and_removes_only_its_own_orphans(tmp_path, generated) -> None:
    assert vectors.stale(tmp_path, generated) == sorted(generated)
    vectors.write(tmp_path, generated)
    assert vectors.stale(tmp_path, generated) == []
    (tmp_path / "keys.json").write_text("{}\n")
    index = json.loads((tmp_path / "index.json").read_text())
    index["files"]["old.json"] = "a file an earlier version generated"
    (tmp_path / "index.json").write_text(json.dumps(index))
    (tmp_path / "old.json").write_text("{}")
    (tmp_path / "mine.json").write_text("{}")  # not ours: never listed, never touched
    assert vectors.stale(tmp_path, generated) == ["index.json", "keys.json", "old.json"]
    vectors.write(tmp_path, generated)
    assert vectors.stale(tmp_path, generated) == [] and not (tmp_path / "old.json").exists()
    assert (tmp_path / "mine.json").exists()


def _nudge(path: Path, pick, factor: float) -> None:
    """Multiply one float32 of the f32le object `pick(document)` by `factor`, in the file."""
    document = json.loads(path.read_text())
    target = pick(document)
    values = np.frombuffer(bytes.fromhex(target["f32le"]), dtype="<f4").copy()
    values[0] = np.float32(values[0] * factor) if factor != 1.0 else np.nextafter(values[0], np.float32(np.inf))
    target["f32le"] = values.tobytes().hex()
    path.write_text(vectors.render(document))


def test_only_the_torch_estimates_get_a_tolerance(tmp_path, generated) -> None:
    """Their last bits depend on the CPU's kernels (AVX2 vs torch's default differ); nothing else's may."""
    assert set(vectors.APPROXIMATE) == {"estimators.json"}
    vectors.write(tmp_path, generated)

    def estimate(document: dict[str, Any]) -> dict[str, Any]:
        return document["cases"][0]["estimate"]

    _nudge(tmp_path / "estimators.json", estimate, 1.0)  # one ulp: another CPU's rounding
    assert vectors.stale(tmp_path, generated) == [] and vectors.write(tmp_path, generated) == []
    _nudge(tmp_path / "estimators.json", estimate, 1.001)  # a real change
    _nudge(tmp_path / "aggregators.json", lambda d: d["cases"][0]["output_as_float32"], 1.0)
    assert vectors.stale(tmp_path, generated) == ["aggregators.json", "estimators.json"]


def test_the_command_checks_and_writes(tmp_path, capsys, monkeypatch, generated) -> None:
    monkeypatch.setattr(vectors, "generate", lambda: generated)  # the command's own cost is generate's
    parser = argparse.ArgumentParser()
    cli_vectors.register(parser.add_subparsers())
    check = parser.parse_args(["vectors", "--out", str(tmp_path), "--check"])
    assert check.func(check) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not current" in err and "envelopes.json" in err
    write = parser.parse_args(["vectors", "--out", str(tmp_path)])
    assert write.func(write) == 0
    assert check.func(check) == 0


# --------------------------------------------------------------------------- keys, genesis, run id


def test_keys_derive_from_their_seeds() -> None:
    for key in load("keys.json")["keys"]:
        private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(key["seed"]))
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert raw.hex() == key["public_key_raw"]
        assert key["public_key_text"] == "ed25519:" + base64.b64encode(raw).decode()
        pem = serialization.load_pem_private_key(key["private_key_pem"].encode(), password=None)
        assert pem.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == raw


def test_genesis_hash_and_run_id_from_the_documented_bytes() -> None:
    for run in load("genesis.json")["runs"]:
        g, r = run["genesis"], run["run_id"]
        blob = g["config_json"].encode()
        assert bytes.fromhex(g["sha256_input_hex"]) == b"decbyzpg-genesis-v1\0" + blob
        assert hashlib.sha256(b"decbyzpg-genesis-v1\0" + blob).hexdigest() == g["genesis_hash"]
        # the blob is canonical compact JSON with sorted keys, and lacks the unhashed keys
        config = json.loads(blob)
        assert json.dumps(config, sort_keys=True, separators=(",", ":")) == g["config_json"]
        assert not {"attack", "num_byzantine", "allow_beyond_tolerance"} & set(config)
        # f and the roster: from the TOML text, the roster sorted by id, compact JSON with sorted keys
        document = tomllib.loads(run["run_file_toml"])
        roster = [[p["id"], p["address"], p["public_key"]] for p in sorted(document["peers"], key=lambda p: p["id"])]
        assert document.get("num_byzantine", r["num_byzantine"]) == r["num_byzantine"]  # resolved default when absent
        bound_and_roster = json.dumps({"num_byzantine": r["num_byzantine"], "roster": roster},
                                      sort_keys=True, separators=(",", ":"))
        assert bound_and_roster == r["bound_and_roster_json"]
        genesis = bytes.fromhex(g["genesis_hash"])
        assert bytes.fromhex(r["sha256_input_hex"]) == b"decbyzpg-run-v1\0" + genesis + bound_and_roster.encode()
        assert hashlib.sha256(b"decbyzpg-run-v1\0" + genesis + bound_and_roster.encode()).hexdigest() == r["run_id"]


# --------------------------------------------------------------------------- envelopes


def _pb_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def canonical_body(fields: dict[str, Any]) -> bytes:
    """proto3's canonical RoundMessage: fields in number order, zero/empty ones omitted."""
    out = b""
    for number, name, kind in ((1, "run_id", "bytes"), (2, "iteration", "int"), (3, "phase", "int"),
                               (4, "round", "int"), (5, "sender", "int"), (6, "length", "int"),
                               (7, "vector_hex", "bytes")):
        value = fields[name]
        if kind == "int" and value:
            out += _pb_varint(number << 3) + _pb_varint(value)
        elif kind == "bytes" and value:
            data = bytes.fromhex(value)
            out += _pb_varint((number << 3) | 2) + _pb_varint(len(data)) + data
    return out


def _verifies(key_hex: str, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex)).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def test_accepted_envelopes_verify_and_are_canonical_without_the_project() -> None:
    context = ENVELOPES["context"]
    accepted = [c for c in ENVELOPES["cases"] if c["expected"] == "ACCEPTED"]
    assert len(accepted) >= 5
    for case in accepted:
        d = case["decoded"]
        body, signature = bytes.fromhex(d["body_hex"]), bytes.fromhex(d["signature_hex"])
        assert _verifies(context["roster"][str(d["sender"])], ROUND_DOMAIN + body, signature), case["name"]
        fields = d["body_fields"]
        assert canonical_body(fields) == body, case["name"]
        assert fields["run_id"] == context["run_id"] and fields["sender"] == d["sender"]
        values = struct.unpack(f"<{fields['length']}f", bytes.fromhex(fields["vector_hex"]))
        assert bytes.fromhex(case["accepted_vector"]["f32le"]) == bytes.fromhex(fields["vector_hex"])
        assert all(math.isfinite(v) for v in values)
        assert context["current_iteration"] - context["keep_behind"] <= fields["iteration"]
        assert fields["iteration"] <= context["current_iteration"] + context["window_ahead"]


def test_bad_signature_envelopes_do_not_verify_without_the_project() -> None:
    context = ENVELOPES["context"]
    for case in [c for c in ENVELOPES["cases"] if c["expected"] == "BAD_SIGNATURE"]:
        d = case["decoded"]
        key = context["roster"][str(d["sender"])]
        assert not _verifies(key, ROUND_DOMAIN + bytes.fromhex(d["body_hex"]), bytes.fromhex(d["signature_hex"]))


def test_every_reject_reason_has_a_vector() -> None:
    names = {c["expected"] for c in ENVELOPES["cases"]}
    assert names == {wire.reason_name(v) for v in peer_pb2.RejectReason.values()}
    for case in ENVELOPES["cases"]:
        code = case["expected_code"]
        assert case["expected"] == ("ACCEPTED" if code == 0 else peer_pb2.RejectReason.Name(code)[len("REJECT_REASON_"):])


@pytest.mark.parametrize("case", ENVELOPES["cases"], ids=[c["name"] for c in ENVELOPES["cases"]])
def test_the_validator_answers_each_vector_as_stated(case: dict[str, Any]) -> None:
    c = ENVELOPES["context"]
    store = RoundStore()
    roster = {int(i): Ed25519PublicKey.from_public_bytes(bytes.fromhex(k)) for i, k in c["roster"].items()}
    shape = RoundShape(frozenset(Phase(p) for p in c["phases"]), c["agreement_rounds"])
    validator = wire.Validator(bytes.fromhex(c["run_id"]), roster, c["self_id"], c["dim"], shape,
                               max_message_bytes=c["max_message_bytes"], window_ahead=c["window_ahead"],
                               keep_behind=c["keep_behind"], already_held=store.holds)
    for raw in case["held_hex"]:
        assert store.add(validator.check(bytes.fromhex(raw), c["current_iteration"])) == wire.ACCEPTED
    verdict = validator.check(bytes.fromhex(case["envelope_hex"]), c["current_iteration"])
    reason = store.add(verdict) if verdict.accepted else verdict.reason
    assert wire.reason_name(reason) == case["expected"]
    assert reason == case["expected_code"]
    assert (len(bytes.fromhex(case["envelope_hex"])) > c["max_message_bytes"]) == (case["expected"] == "TOO_LARGE")


# --------------------------------------------------------------------------- read requests


def test_read_signatures_from_the_documented_layout() -> None:
    doc = load("reads.json")
    run_id = bytes.fromhex(doc["run_id"])
    reader_key = load("keys.json")["keys"]
    for case in doc["signed"]:
        message = run_id + case["method"].encode("ascii") + b"\0" + struct.pack(">IQ", case["reader"], case["issued_ms"])
        if case["method"] == "Pull":
            f = case["request_fields"]
            message += struct.pack(">QIII", f["iteration"], f["phase"], f["round"], len(f["senders"]))
            message += b"".join(struct.pack(">I", s) for s in f["senders"])
        assert message.hex() == case["signed_bytes_hex"], case["name"]
        assert bytes.fromhex(doc["read_domain_hex"]) == READ_DOMAIN
        assert (READ_DOMAIN + message).hex() == case["signature_input_hex"]
        public = reader_key[case["reader"]]["public_key_raw"]
        assert _verifies(public, READ_DOMAIN + message, bytes.fromhex(case["signature_hex"])), case["name"]
        request = {"Pull": peer_pb2.PullRequest, "Status": peer_pb2.StatusRequest,
                   "Evidence": peer_pb2.EvidenceRequest}[case["method"]].FromString(bytes.fromhex(case["request_hex"]))
        assert request.auth.signature.hex() == case["signature_hex"] and request.auth.issued_ms == case["issued_ms"]


def test_the_read_gate_answers_each_vector_as_stated() -> None:
    doc = load("reads.json")
    gate_doc = doc["gate"]
    keys = {k["index"]: Ed25519PublicKey.from_public_bytes(bytes.fromhex(k["public_key_raw"]))
            for k in load("keys.json")["keys"][:4]}
    gate = reads.ReadGate(bytes.fromhex(doc["run_id"]), keys, gate_doc["max_skew_ms"] / 1000,
                          gate_doc["open_status"], clock_ms=lambda: gate_doc["clock_ms"])
    kinds = {"Pull": peer_pb2.PullRequest, "Status": peer_pb2.StatusRequest, "Evidence": peer_pb2.EvidenceRequest}
    for case in gate_doc["cases"]:
        request = kinds[case["method"]].FromString(bytes.fromhex(case["request_hex"]))
        assert (gate.refusal(case["method"], request) is None) == case["answered"], case["name"]


# --------------------------------------------------------------------------- randomness and schedule


def rand_input(genesis: bytes, *parts: str | int) -> bytes:
    out = RAND_DOMAIN + genesis
    for part in parts:
        raw = part.encode() if isinstance(part, str) else struct.pack("<q", part)
        out += struct.pack("<I", len(raw)) + raw
    return out


def uniform(genesis: bytes, *parts: str | int) -> float:
    word = int.from_bytes(hashlib.sha256(rand_input(genesis, *parts)).digest()[:8], "little")
    return (word >> 11) / 2.0**53


MASK64 = (1 << 64) - 1


def philox4x64_10(counter: list[int], key: list[int]) -> list[int]:
    """Philox4x64 with 10 rounds (Salmon et al., 2011), from the published constants."""
    c, k = list(counter), list(key)
    for r in range(10):
        if r:
            k = [(k[0] + 0x9E3779B97F4A7C15) & MASK64, (k[1] + 0xBB67AE8584CAA73B) & MASK64]
        p0, p1 = 0xD2E7470EE14C6C93 * c[0], 0xCA5A826395121157 * c[2]
        c = [(p1 >> 64) ^ c[1] ^ k[0], p1 & MASK64, (p0 >> 64) ^ c[3] ^ k[1], p0 & MASK64]
    return c


def test_the_coin_from_its_documented_derivation() -> None:
    for coin in load("randomness.json")["coins"]:
        genesis = bytes.fromhex(coin["genesis_hash"])
        assert coin["x0"] is True
        assert rand_input(genesis, "coin", 1).hex() == coin["t1_sha256_input_hex"]
        for v in coin["values"]:
            digest = hashlib.sha256(rand_input(genesis, "coin", v["t"])).digest()
            assert digest[:8].hex() == v["word_hex"]
            assert uniform(genesis, "coin", v["t"]) == v["u"]
            assert v["x"] == (v["u"] < coin["switch_prob"])
        assert 0 < sum(v["x"] for v in coin["values"]) < len(coin["values"])


def test_streams_and_torch_seed_from_their_documented_derivation() -> None:
    doc = load("randomness.json")
    genesis = bytes.fromhex(doc["coins"][0]["genesis_hash"])
    for stream in doc["streams"]:
        data = rand_input(genesis, "stream", *stream["parts"])
        assert data.hex() == stream["sha256_input_hex"]
        seed = int.from_bytes(hashlib.sha256(data).digest()[:16], "little")
        key = [seed & MASK64, seed >> 64]
        assert stream["philox_key"] == [str(k) for k in key]
        assert stream["first_raw_uint64"] == [str(v) for v in philox4x64_10([1, 0, 0, 0], key)]
    theta0 = doc["theta0"]
    data = rand_input(bytes.fromhex(theta0["genesis_hash"]), "torch", "theta0")
    assert data.hex() == theta0["sha256_input_hex"]
    assert str(int.from_bytes(hashlib.sha256(data).digest()[:8], "little") >> 1) == theta0["torch_seed"]


def test_schedule_slots_from_the_rules_and_the_coin() -> None:
    forced_seen = False
    for s in load("schedule.json")["schedules"]:
        genesis = bytes.fromhex(s["genesis_hash"])
        assert hashlib.sha256(b"decbyzpg-genesis-v1\0" + s["genesis_config_json"].encode()).digest() == genesis
        config = json.loads(s["genesis_config_json"])
        every = config["aggregation"]["every_iteration"]
        rounds = 0 if s["algorithm"] == "byzpg" or config["agreement"]["rule"] == "none" else config["agreement"]["rounds"]
        m = config["estimator"].get("max_small_steps", 0)  # absent from the hashed config while off

        def large(t: int) -> bool:
            """x_t by PROTOCOL.md section 6: the coin, or m small iterations since the last coin."""
            coin = [u == 0 or uniform(genesis, "coin", u) < s["switch_prob"] for u in range(t + 1)]
            if coin[t] or m == 0:
                return coin[t]
            last = max(u for u in range(t) if coin[u])
            return (t - last) % (m + 1) == 0

        xs = [large(it["t"]) for it in s["iterations"]]
        forced_seen |= any(x and not (uniform(genesis, "coin", it["t"]) < s["switch_prob"])
                           for x, it in zip(xs, s["iterations"]) if it["t"])
        for it, x in zip(s["iterations"], xs):
            t = it["t"]
            assert it["x"] == x and it["batch"] == (s["large_batch"] if x else s["small_batch"])
            expected = [[1, 0]] if x or (every and s["algorithm"] != "byzpg") else []
            expected += [[3, 0]] if s["algorithm"] == "byzpg" else [[2, r] for r in range(rounds)]
            assert it["rounds"] == expected, (s["name"], t)
        used, t = 0, 0
        while True:
            x = large(t)
            batch = s["large_batch"] if x else s["small_batch"]
            if used + batch > s["trajectories_per_agent"]:
                break
            used, t = used + batch, t + 1
        assert s["iteration_count"] == t
    assert forced_seen, "some vector should show an x_t forced by max_small_steps"
    assert {json.loads(s["genesis_config_json"])["aggregation"]["every_iteration"]
            for s in load("schedule.json")["schedules"] if s["algorithm"] == "decbyzpg"} == {True, False}


# --------------------------------------------------------------------------- aggregation and agreement


def test_simple_aggregators_recomputed_with_numpy() -> None:
    checked = 0
    for case in load("aggregators.json")["cases"]:
        x = rows(case["inputs"]).astype(np.float64)
        n, f = len(x), case["f"]
        rule = case["rule"]
        if rule == "mean":
            expected = x.mean(axis=0)
        elif rule == "median":
            expected = np.median(x, axis=0)
        elif rule == "trimmed_mean":
            expected = np.median(x, axis=0) if n <= 2 * f else np.sort(x, axis=0)[f:n - f].mean(axis=0)
        elif rule == "krum":
            sq = np.array([[np.sum((a - b) ** 2) for b in x] for a in x])
            k = n - f - 2
            scores = [np.sort(np.delete(sq[i], i))[:k].sum() for i in range(n)]
            expected = x[int(np.argmin(scores))]
        elif rule == "bucketing+mean":
            perm, s = case["permutation"], case["params"]["bucket_size"]
            means = [x[perm[i:i + s]].mean(axis=0) for i in range(0, n, s)]
            expected = np.stack(means).mean(axis=0)
        else:
            continue
        assert case["output"] == expected.tolist(), case["name"]
        assert f32(case["output_as_float32"]).tolist() == expected.astype(np.float32).tolist()
        checked += 1
    assert checked >= 6


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    diff = a - b
    return float(np.sqrt(np.sum(diff * diff)))


def test_agreement_recomputed_by_enumeration() -> None:
    for case in load("agreement.json")["cases"]:
        x = rows(case["received"]).astype(np.float64)
        m, q = len(x), case["q"]
        d = [[_dist(x[i], x[j]) for j in range(m)] for i in range(m)]
        assert case["diameter"] == max((max(r) for r in d), default=0.0)
        own = x[case["own_row"]]
        if m < q:
            assert case["fell_back"] and case["selected"] == [] and case["vector"] == own.tolist()
            continue
        assert not case["fell_back"]
        if case["rule"] == "none" or (case["rule"] == "mda" and q == 1):
            assert case["selected"] == [] and case["vector"] == own.tolist()
            continue
        if case["rule"] == "mda":
            best = min(itertools.combinations(range(m), q),
                       key=lambda s: max(d[i][j] for i in s for j in s))  # min keeps the first: lexicographic
            selected = list(best)
        else:
            to_own = [_dist(row, own) for row in x]
            selected = sorted(sorted(range(m), key=lambda i: to_own[i])[:q])
        assert case["selected"] == selected, case["name"]
        assert case["vector"] == x[selected].mean(axis=0).tolist()


# --------------------------------------------------------------------------- estimators


def _mlp(theta: np.ndarray, layout: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {p["name"]: theta[p["offset"]:p["offset"] + int(np.prod(p["shape"]))].reshape(p["shape"])
            for p in layout}


def _log_prob_and_grad(params: dict[str, np.ndarray], layout: list[dict[str, Any]], s: np.ndarray,
                       a: Any, gaussian: bool) -> tuple[float, np.ndarray]:
    """log pi(a|s) and its gradient for Linear-ReLU-Linear, by hand (float64)."""
    w1, b1, w2, b2 = params["net.0.weight"], params["net.0.bias"], params["net.2.weight"], params["net.2.bias"]
    pre = w1 @ s + b1
    h = np.maximum(pre, 0.0)
    out = w2 @ h + b2
    grads: dict[str, np.ndarray] = {}
    if gaussian:
        log_std = params["log_std"]
        z = (a - out) / np.exp(log_std)
        logp = float(np.sum(-0.5 * z * z - log_std - 0.5 * math.log(2 * math.pi)))
        g_out = z / np.exp(log_std)
        grads["log_std"] = z * z - 1.0
    else:
        shifted = out - out.max()
        log_softmax = shifted - math.log(np.exp(shifted).sum())
        logp = float(log_softmax[a])
        g_out = -np.exp(log_softmax)
        g_out[a] += 1.0
    g_pre = (w2.T @ g_out) * (pre > 0)
    grads.update({"net.2.weight": np.outer(g_out, h), "net.2.bias": g_out,
                  "net.0.weight": np.outer(g_pre, s), "net.0.bias": g_pre})
    return logp, np.concatenate([grads[p["name"]].reshape(-1) for p in layout])


def _estimate(theta: np.ndarray, c: np.ndarray, layout: list[dict[str, Any]], obs: np.ndarray, actions: Any,
              gaussian: bool) -> tuple[np.ndarray, np.ndarray]:
    """(1/n) sum_{i,h} grad log pi(a_ih|s_ih) c_ih, and the log-probabilities."""
    n, steps = c.shape
    params = _mlp(theta, layout)
    total, logp = np.zeros(len(theta)), np.zeros((n, steps))
    for i, h in itertools.product(range(n), range(steps)):
        a = actions[i][h] if gaussian else int(actions[i, h])
        logp[i, h], grad = _log_prob_and_grad(params, layout, obs[i, h], a, gaussian)
        total += grad * c[i, h]
    return total / n, logp


def test_estimates_recomputed_by_hand() -> None:
    doc = load("estimators.json")
    obs = np.stack([rows(traj) for traj in doc["batch"]["obs"]]).astype(np.float64)
    rewards = np.array(doc["batch"]["rewards"])
    mask = np.array(doc["batch"]["mask"], dtype=bool)
    n, steps = mask.shape
    for case in doc["cases"]:
        gaussian = case["policy"] == "gaussian"
        actions = ([f32(r).astype(np.float64) for r in case["actions_continuous"]] if gaussian
                   else np.array(doc["batch"]["actions"]))
        gamma = case["gamma"]
        returns = np.zeros((n, steps))
        for i in range(n):
            acc = 0.0
            for h in reversed(range(steps)):
                acc += gamma**h * rewards[i, h] * mask[i, h]
                returns[i, h] = acc
        baseline = np.zeros((n, steps))
        if case["baseline"]:
            for i, h in itertools.product(range(n), range(steps)):
                others = [returns[k, h] for k in range(n) if k != i and mask[k, h]]
                baseline[i, h] = sum(others) / len(others) if others else 0.0
        coef = (returns - baseline) * mask
        np.testing.assert_allclose(np.array(case["coefficients"]).reshape(n, steps), coef, rtol=1e-12, atol=1e-12)

        theta = f32(case["theta"]).astype(np.float64)
        g_now, logp_now = _estimate(theta, coef, case["layout"], obs, actions, gaussian)
        if case["estimator"] == "gpomdp":
            expected = g_now
        else:
            theta_prev = f32(case["theta_prev"]).astype(np.float64)
            _, logp_prev = _estimate(theta_prev, coef, case["layout"], obs, actions, gaussian)
            ratio = (logp_prev - logp_now) * mask
            log_w = ratio.cumsum(1) if case["importance"] == "per_decision" else np.repeat(
                ratio.sum(1, keepdims=True), steps, axis=1)
            np.testing.assert_allclose(np.array(case["log_importance_weights"]).reshape(n, steps), log_w,
                                       rtol=1e-5, atol=1e-6)
            w = np.exp(log_w)
            if case["importance"] == "per_decision":
                weighted = np.zeros((n, steps))
                for i in range(n):
                    acc = 0.0
                    for h in reversed(range(steps)):
                        acc += gamma**h * w[i, h] * rewards[i, h] * mask[i, h]
                        weighted[i, h] = acc
                weighted = (weighted - w * baseline) * mask
            else:
                weighted = coef * w
            np.testing.assert_allclose(np.array(case["weighted_coefficients"]).reshape(n, steps), weighted,
                                       rtol=1e-5, atol=1e-6)
            g_prev, _ = _estimate(theta_prev, weighted, case["layout"], obs, actions, gaussian)
            expected = g_now - g_prev
        np.testing.assert_allclose(f32(case["estimate"]), expected, rtol=1e-4, atol=1e-6, err_msg=case["name"])
