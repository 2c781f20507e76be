"""Mutual TLS between peers (peer.net.tls): certificates, the [tls] table, and runs over TLS."""

from __future__ import annotations

import stat
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509

from peer.engine.errors import ConfigError, KeyFileError
from peer.net.runfile import load_run_file
from peer.net.tls import make_certificates, parse_tls, peer_name
from peer.net.transport import PeerTransport
from tests.net.test_network import SMALL, assert_network_run_matches_in_process
from tests.support.netutil import identity_of, key_of, make_run, started_transports

pytestmark = pytest.mark.network

DIM = 386
DATA = {"num_peers": 3, "num_byzantine": 0, "estimator": {"large_batch": 8, "small_batch": 2}}
NETWORK = {"round_timeout": 5.0, "startup_timeout": 5.0, "grace": 0.2, "retry_interval": 0.05}


def test_certificates_name_the_peer_and_keys_are_private(tmp_path) -> None:
    make_certificates(tmp_path, [(0, "10.0.0.7:50051"), (1, "peer-1:50051")])
    assert stat.S_IMODE((tmp_path / "0.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "1.pem").stat().st_mode) == 0o644
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    for peer_id, host in [(0, "10.0.0.7"), (1, "peer-1")]:
        cert = x509.load_pem_x509_certificate((tmp_path / f"{peer_id}.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        listed = [str(n.value) for n in names]
        assert peer_name(peer_id) in listed and host in listed
    with pytest.raises(ConfigError, match="exists"):
        make_certificates(tmp_path, [(0, "10.0.0.7:50051")])


def test_the_tls_table_is_checked_with_one_line_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"\{id\}"):
        parse_tls({"ca": "ca.pem", "cert": "peer.pem", "key": "peer.key"}, tmp_path)
    with pytest.raises(ConfigError, match="tls.ca"):
        parse_tls({"ca": 3, "cert": "{id}.pem", "key": "{id}.key"}, tmp_path)
    with pytest.raises(ConfigError, match="unknown"):
        parse_tls({"ca": "a", "cert": "{id}.pem", "key": "{id}.key", "verify": False}, tmp_path)
    config = parse_tls({"ca": "tls/ca.pem", "cert": "tls/{id}.pem", "key": "/abs/{id}.key"}, tmp_path)
    assert config.paths(4) == (tmp_path / "tls" / "4.pem", Path("/abs/4.key"))
    with pytest.raises(KeyFileError, match="does not exist"):
        config.load(4)


def test_a_group_readable_tls_key_is_refused(tmp_path) -> None:
    run = make_run(tmp_path, DATA, network=NETWORK, tls=True)
    key_path = run.tls.paths(1)[1]
    key_path.chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        PeerTransport(run, 1, key_of(run, 1), DIM)


@pytest.fixture()
def tls_transports(tmp_path):
    with started_transports(make_run(tmp_path, DATA, network=NETWORK, tls=True), DIM) as transports:
        yield transports


def test_peers_exchange_over_mutual_tls_and_refuse_other_clients(tls_transports, tmp_path) -> None:
    import threading

    from peer.engine.schedule import Phase, RoundKey
    from peer.net.client import ReaderIdentity, query_status
    from peer.net.tls import TlsConfig

    round_key = RoundKey(0, Phase.GRADIENT)
    results = {}

    def one(t: PeerTransport) -> None:
        results[t.peer_id] = t.exchange(round_key, np.full(DIM, float(t.peer_id), np.float32))

    threads = [threading.Thread(target=one, args=(t,)) for t in tls_transports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for k, (received, stats) in results.items():
        assert sorted(received) == [j for j in range(3) if j != k] and not stats.timed_out
        assert all(np.array_equal(v, np.full(DIM, float(j), np.float32)) for j, v in received.items())

    run = tls_transports[0].run
    address = run.peer(0).address
    # a plaintext client cannot even complete a call
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary("/decbyzpg.v1.Peer/Push")(b"", timeout=3)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # nor a client with a certificate from another CA, even one naming a roster peer
    make_certificates(tmp_path / "other-ca", [(1, address)])
    outsider = TlsConfig(tmp_path / "other-ca" / "ca.pem", str(tmp_path / "other-ca" / "{id}.pem"),
                         str(tmp_path / "other-ca" / "{id}.key")).load(1)
    foreign = ReaderIdentity(run.run_id, 1, key_of(run, 1), tls=outsider)
    with pytest.raises(Exception, match="UNAVAILABLE"):
        query_status(address, timeout=3.0, identity=foreign, peer_id=0)
    # a roster member with the run's certificate reads Status over TLS
    member = ReaderIdentity(run.run_id, 1, key_of(run, 1), tls=run.tls.load(1))
    assert query_status(address, timeout=5.0, identity=member, peer_id=0)["peer_id"] == 0
    # the server's certificate must name the peer dialed: peer 0's address is not peer 2's
    with pytest.raises(Exception, match="UNAVAILABLE"):
        query_status(address, timeout=3.0, identity=member, peer_id=2)
    assert identity_of(run, 1).tls is None  # plain identity: the helper does not load TLS


def test_init_tls_and_status_over_tls_from_the_command_line(tmp_path, capsys) -> None:
    from peer.cli.main import main

    assert main(["init", "--peers", "3", "--byzantine", "0", "--byzantine-peers", "0", "--tls",
                 "--out", str(tmp_path / "run")]) == 0
    run = load_run_file(tmp_path / "run" / "run.toml")
    assert run.tls is not None and run.tls.ca == tmp_path / "run" / "tls" / "ca.pem"
    assert run.tls.load(2).certificate.startswith(b"-----BEGIN CERTIFICATE-----")
    capsys.readouterr()
    assert main(["certs", "--config", str(tmp_path / "run" / "run.toml")]) != 0  # exists: refused
    assert "--force" in capsys.readouterr().err
    assert main(["certs", "--config", str(tmp_path / "run" / "run.toml"), "--out", str(tmp_path / "elsewhere")]) == 0
    printed = capsys.readouterr().out
    assert "[tls]" in printed and str(tmp_path / "elsewhere" / "ca.pem") in printed


def test_a_network_run_over_tls_is_bit_identical_to_in_process(tmp_path) -> None:
    assert_network_run_matches_in_process(tmp_path, {**SMALL, "algorithm": "decbyzpg"}, "avg_zero", tls=True)


def test_the_container_health_check_probes_a_tls_peer(tls_transports) -> None:
    import os
    import subprocess
    import sys

    run = tls_transports[0].run
    script = Path(__file__).resolve().parents[2] / "docker" / "healthcheck.py"
    cert, key = run.tls.paths(0)
    env = {**os.environ, "DECBYZPG_TLS_CA": str(run.tls.ca), "DECBYZPG_TLS_CERT": str(cert),
           "DECBYZPG_TLS_KEY": str(key), "DECBYZPG_TLS_NAME": peer_name(0)}
    address = run.peer(0).address
    probe = subprocess.run([sys.executable, str(script), address], env=env, capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode == 0 and "SERVING" in probe.stdout, probe.stderr
    plain = {k: v for k, v in env.items() if not k.startswith("DECBYZPG_TLS")}
    probe = subprocess.run([sys.executable, str(script), address], env=plain, capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode == 1
    partial = {**plain, "DECBYZPG_TLS_CA": str(run.tls.ca)}
    probe = subprocess.run([sys.executable, str(script), address], env=partial, capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode == 1 and "set all of" in probe.stderr and "Traceback" not in probe.stderr
