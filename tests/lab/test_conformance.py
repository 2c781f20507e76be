"""`decbyzpg conformance` against real peers on loopback: ours passes, broken ones fail the right row.

The peer under test runs as a thread of the test process (the suite only talks to it over
gRPC, so where it runs does not matter to the suite), which lets a test break one thing in
it by patching that object alone.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from decbyzpg.v1 import peer_pb2

from peer.cli.main import main
from peer.engine.aggregators import make_aggregator
from peer.engine.errors import ExitCode
from peer.lab.conformance import FAIL, NOT_CHECKED, PASS, REQUIREMENTS, reject_row
from peer.net import wire
from peer.net.daemon import PeerDaemon
from tests.support.netutil import Threads, key_of, make_run

pytestmark = pytest.mark.network

# K = 5 with one Byzantine id, which the tester plays honestly; eight short iterations.
TINY = {"num_peers": 5, "num_byzantine": 1, "seed": 3, "trajectories_per_agent": 24,
        "estimator": {"large_batch": 4, "small_batch": 2, "horizon": 50, "switch_prob": 0.4}}
# A patient grace (no round closes without a message that is coming) and retain_iterations = 1,
# so STALE is reachable; a short round_timeout also checks the deadline (it costs 2.5 s).
WITH_DEADLINE = {"round_timeout": 2.5, "grace": 2.5, "startup_timeout": 60.0, "linger": 2.0, "retain_iterations": 1}
WITHOUT_DEADLINE = {**WITH_DEADLINE, "round_timeout": 10.0, "grace": 10.0}
TARGET = 2


def conformance(run, *extra: str) -> list[str]:
    keys = run.path.parent / "keys"
    return ["conformance", "--run-file", str(run.path), "--keys", str(keys), "--target-id", str(TARGET), *extra]


def check_peer(tmp_path: Path, capsys, network: dict[str, Any],
               break_it: Callable[[PeerDaemon], None] = lambda daemon: None) -> tuple[int, dict[str, dict[str, str]]]:
    """Run the suite against peer TARGET (patched by `break_it`); its exit status and rows by id."""
    run = make_run(tmp_path, TINY, byzantine_ids=[4], network=network)
    target = PeerDaemon(run, TARGET, key_of(run, TARGET), tmp_path / "target")
    break_it(target)
    threads = Threads()
    threads.start(TARGET, target)
    code = main(conformance(run, "--target", run.peer(TARGET).address, "--json", "--timeout", "60"))
    threads.join(30)
    report = json.loads(capsys.readouterr().out)
    return code, {row["id"]: row for row in report["rows"]}


def failed(rows: dict[str, dict[str, str]]) -> set[str]:
    return {row_id for row_id, row in rows.items() if row["result"] == FAIL}


def test_there_is_a_row_for_every_reject_reason() -> None:
    ids = {req.id for req in REQUIREMENTS}
    reasons = [wire.reason_name(value) for value in peer_pb2.RejectReason.values() if value != wire.ACCEPTED]
    assert {reject_row(name) for name in reasons} <= ids
    assert len(ids) == len(REQUIREMENTS)


def test_our_peer_passes_every_requirement(tmp_path, capsys) -> None:
    code, rows = check_peer(tmp_path, capsys, WITH_DEADLINE)
    assert code == ExitCode.SUCCESS, {k: r["evidence"] for k, r in rows.items() if r["result"] != PASS}
    assert all(row["result"] == PASS for row in rows.values()), rows  # STALE and the deadline included
    assert "bit-identical" in rows["outputs-match"]["evidence"]
    assert "(1, agreement, 0)" in rows["deadline"]["evidence"]


def test_a_peer_that_accepts_non_finite_vectors_fails_that_row(tmp_path, capsys) -> None:
    def accept_non_finite(daemon: PeerDaemon) -> None:
        validator = daemon.transport.validator
        check = validator.check

        def lenient(envelope, current_iteration):
            verdict = check(envelope, current_iteration)
            if verdict.reason != peer_pb2.REJECT_REASON_NON_FINITE:
                return verdict
            env = envelope if isinstance(envelope, peer_pb2.SignedMessage) else peer_pb2.SignedMessage.FromString(envelope)
            body = peer_pb2.RoundMessage.FromString(env.body)
            return wire.Verdict(wire.ACCEPTED, verdict.sender, verdict.round_key,
                                wire.decode_vector(body.vector, body.length), env)

        validator.check = lenient

    code, rows = check_peer(tmp_path, capsys, WITHOUT_DEADLINE, accept_non_finite)
    assert code == ExitCode.FAILURE
    assert failed(rows) == {"reject-non-finite"}  # the probe met the genuine message: nothing else suffered
    assert "NON_FINITE" not in rows["reject-non-finite"]["evidence"]
    assert rows["deadline"]["result"] == NOT_CHECKED  # round_timeout 10 s: too dear


def test_a_peer_that_answers_unsigned_status_fails_that_row(tmp_path, capsys) -> None:
    def open_status(daemon: PeerDaemon) -> None:
        daemon.transport.read_gate.open_status = True  # while the run file says otherwise

    code, rows = check_peer(tmp_path, capsys, WITHOUT_DEADLINE, open_status)
    assert code == ExitCode.FAILURE
    assert failed(rows) == {"reads-unsigned-refused"}
    assert "unsigned Status -> answered" in rows["reads-unsigned-refused"]["evidence"]


def test_a_peer_that_averages_instead_of_its_rule_fails_outputs_match(tmp_path, capsys) -> None:
    def plain_mean(daemon: PeerDaemon) -> None:
        daemon.machine.aggregator = make_aggregator("mean", daemon.cfg.num_byzantine)  # the run file says rfa

    code, rows = check_peer(tmp_path, capsys, WITHOUT_DEADLINE, plain_mean)
    assert code == ExitCode.FAILURE
    assert failed(rows) == {"outputs-match"}
    # the gradients it sent are right; the first parameters after aggregating are not
    assert "first at (0, agreement, 0)" in rows["outputs-match"]["evidence"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_bad_input_is_one_line_and_a_named_exit_code(tmp_path, capsys) -> None:
    run = make_run(tmp_path, TINY, byzantine_ids=[4], network=WITHOUT_DEADLINE)
    nowhere = f"127.0.0.1:{_free_port()}"
    cases = [
        (["conformance", "--run-file", str(tmp_path / "missing.toml"), "--keys", str(tmp_path), "--target-id", "0",
          "--target", nowhere], ExitCode.USAGE, "does not exist"),
        (["conformance", "--run-file", str(run.path), "--keys", str(tmp_path / "no-keys"), "--target-id", "0",
          "--target", nowhere], ExitCode.USAGE, "key directory"),
        (conformance(run), ExitCode.USAGE, "--target HOST:PORT"),
        (conformance(run, "--target", nowhere), ExitCode.UNREACHABLE, "does not answer"),
        (conformance(run, "--spawn", "false"), ExitCode.UNREACHABLE, "exited with status 1"),
    ]
    for argv, expected, words in cases:
        assert main(argv) == expected, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and words in err and "Traceback" not in err, err
        assert len(err.splitlines()) == 1, err
