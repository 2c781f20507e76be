"""peer.net.runfile: the run id binds config and roster; every roster mistake is a one-line error."""

from __future__ import annotations

import pytest

from peer.engine.config import build_config
from peer.engine.errors import ConfigError
from peer.lab.cluster import init_run, run_document
from peer.net.crypto import generate_key
from peer.net.runfile import NetworkConfig, load_run_file, parse_run_file

DATA = {"num_peers": 5, "num_byzantine": 1, "estimator": {"large_batch": 8, "small_batch": 2}}


@pytest.fixture()
def document(tmp_path):
    cfg = build_config(DATA, in_process=False)
    doc = run_document(cfg)
    doc["peers"] = [{"id": k, "address": f"127.0.0.1:{50000 + k}",
                     "public_key": generate_key(tmp_path / f"{k}.key")} for k in range(5)]
    return doc


def test_a_written_run_file_loads_back(tmp_path) -> None:
    path = init_run(tmp_path / "run", build_config(DATA, in_process=False), [3], "avg_zero", base_port=51000)
    run = load_run_file(path)
    assert [p.id for p in run.peers] == [0, 1, 2, 3, 4] and run.peer(3).address == "127.0.0.1:51003"
    assert run.adversary["byzantine_ids"] == [3] and run.network == NetworkConfig()
    assert len(run.run_id) == 32


def test_the_run_id_changes_with_the_config_and_with_the_roster(document) -> None:
    base = parse_run_file(document).run_id
    assert parse_run_file({**document, "seed": 1}).run_id != base
    moved = [dict(p) for p in document["peers"]]
    moved[2]["address"] = "10.0.0.2:50002"
    assert parse_run_file({**document, "peers": moved}).run_id != base
    # what only Byzantine daemons read does not change it
    assert parse_run_file({**document, "adversary": {"attack": "silence"}}).run_id == base
    # the bound f does (it sets the quorum), though it is not in the genesis hash
    other_f = parse_run_file({**document, "num_byzantine": 0})
    assert other_f.run_id != base and other_f.config.genesis_hash() == parse_run_file(document).config.genesis_hash()


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d["peers"].pop(), "ids 0..4"),
    (lambda d: d["peers"][1].update(id=0), "ids 0..4"),
    (lambda d: d["peers"][1].update(public_key=d["peers"][0]["public_key"]), "share a public key"),
    (lambda d: d["peers"][1].update(address="nowhere"), "peers[1].address"),
    (lambda d: d["peers"][1].update(public_key="ed25519:abc"), "peers[1].public_key"),
    (lambda d: d["peers"][1].update(colour="red"), "colour"),
    (lambda d: d.update(network={"grace": 30.0}), "network.grace"),
    (lambda d: d.update(network={"round_timeout": 0}), "network.round_timeout"),
    (lambda d: d.update(network={"window_ahead": "2"}), "network.window_ahead"),
    (lambda d: d.update(network={"open_status": "yes"}), "network.open_status"),
    (lambda d: d.update(peers=[]), "roster"),
])
def test_roster_and_network_errors_name_the_field(document, mutate, fragment) -> None:
    mutate(document)
    with pytest.raises(ConfigError) as err:
        parse_run_file(document)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_id_is_a_config_error(document) -> None:
    with pytest.raises(ConfigError, match="not in the roster"):
        parse_run_file(document).peer(9)
