"""The daemon command group: `keygen`, `init`, `certs`, `peer`, `adversary`, `status`.

These are what a user runs on each host of a real deployment (docs/DEPLOY.md); `cluster`
runs the same daemons on one machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Sequence

from peer.cli.common import add_config_flags, config_data, csv_list
from peer.engine.config import parse_override
from peer.engine.errors import ConfigError, ExitCode, KeyFileError
from peer.lab.configure import MAIN_JOB_ATTACK, MAIN_JOB_BYZANTINE, MAIN_JOB_PEERS

if TYPE_CHECKING:
    from peer.net.runfile import RunFile


def setup_logging(level: str, fmt: str) -> None:
    from peer.net.logs import JsonFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def exit_now(code: int) -> NoReturn:
    """End a daemon process as soon as its results are safe.

    Every file a daemon writes is complete on disk when `serve` returns (atomic replaces, the
    checkpoint fsynced), but tearing down torch and grpc took up to ~10 s with 13 peers
    stopping at once, longer than orchestrators wait; so flush the logs and leave.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code))


def load_identity(args: argparse.Namespace) -> tuple[RunFile, Any]:
    """The run file and this peer's signing key, checked against the roster's pinned public key."""
    from peer.net.crypto import load_private_key, public_key_to_text
    from peer.net.runfile import load_run_file

    run = load_run_file(args.config)
    entry = run.peer(args.id)
    signing_key = load_private_key(args.key)
    if public_key_to_text(signing_key.public_key()) != entry.public_key:
        raise KeyFileError(f"config error: key {args.key} does not match peer {args.id}'s public key in the roster")
    return run, signing_key


def cmd_keygen(args: argparse.Namespace) -> int:
    from peer.net.crypto import generate_key

    print(generate_key(Path(args.out), overwrite=args.force))
    return ExitCode.SUCCESS


def cmd_init(args: argparse.Namespace) -> int:
    from peer.lab.cluster import cluster_config, init_run
    from peer.net.runfile import parse_network

    data = config_data(args, {})
    network = data.pop("network", {})  # --set network.round_timeout=30 etc. go to the run file's [network]
    parse_network(network)  # validated before anything is written
    cfg = cluster_config(args.peers, args.byzantine, data)
    byzantine = list(range(args.peers - args.byzantine_peers, args.peers)) if args.byzantine_peers else []
    path = init_run(Path(args.out), cfg, byzantine, args.attack, host=args.host, base_port=args.base_port,
                    compose=args.compose, overwrite=args.force, addresses=args.addresses, network=network,
                    tls=args.tls)
    print(f"wrote {path} and {args.peers} keys in {Path(args.out) / 'keys'}"
          + (f", a run CA and {args.peers} TLS certificates in {Path(args.out) / 'tls'}" if args.tls else ""))
    return ExitCode.SUCCESS


def cmd_certs(args: argparse.Namespace) -> int:
    import tomli_w

    from peer.net.runfile import load_run_file
    from peer.net.tls import make_certificates, tls_table

    run = load_run_file(args.config)
    run_directory = Path(args.config).parent
    out = Path(args.out) if args.out else run_directory / "tls"
    make_certificates(out, [(p.id, p.address) for p in run.peers], overwrite=args.force)
    print(f"wrote a run CA ({out / 'ca.pem'}, its key ca.key) and {len(run.peers)} certificates and keys in {out}")
    print("give peer <id> ca.pem, <id>.pem and <id>.key (keep ca.key off the peers); add to the run file:\n")
    print(tomli_w.dumps({"tls": tls_table(out, run_directory)}), end="")
    return ExitCode.SUCCESS


def cmd_peer(args: argparse.Namespace) -> int:
    from peer.net.daemon import PeerDaemon

    setup_logging(args.log_level, args.log_format)
    run, signing_key = load_identity(args)
    daemon = PeerDaemon(run, args.id, signing_key, Path(args.out or f"results/peer-{args.id}"))
    daemon.install_signal_handlers()
    exit_now(daemon.serve(bind=args.bind))


def cmd_adversary(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    run, signing_key = load_identity(args)
    exit_now(run_adversary(run, args.id, signing_key, Path(args.out or f"results/peer-{args.id}"), args.attack,
                           args.set_attack, args.bind))


def attack_settings(run: RunFile, peer_id: int, name: str | None,
                    overrides: Sequence[str]) -> tuple[str, dict[str, Any], list[int]]:
    """Attack name, parameters and the coalition's ids, from the [adversary] table and flags."""
    table = run.adversary
    name = name or table.get("attack")
    if not name:
        raise ConfigError("config error: no attack given: pass --attack or set [adversary].attack in the run file")
    params = dict(table.get("params", {})) if (name == table.get("attack")) else {}
    for text in overrides:
        path, value = parse_override(text)
        params[".".join(path)] = value
    ids = table.get("byzantine_ids", [peer_id])
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise ConfigError(f"config error: adversary.byzantine_ids must be a list of peer ids (got {ids!r})")
    if peer_id not in ids:
        ids = sorted({*ids, peer_id})
    return name, params, sorted(ids)


def run_adversary(run: RunFile, peer_id: int, signing_key: Any, out: Path, name: str | None,
                  overrides: Sequence[str], bind: str | None) -> int:
    import signal

    from adversary.attacks import make_attack

    name, params, ids = attack_settings(run, peer_id, name, overrides)
    attack = make_attack(name, params)
    if attack.needs_shadow:  # protocol-following with corrupted sampling: the honest daemon, lying
        from peer.engine.sampling import Sampler, uniform_random_actions
        from peer.net.daemon import PeerDaemon

        probe = Sampler(run.config.env, run.config.estimator.horizon)
        behaviour = uniform_random_actions(probe.action_space)
        probe.close()
        daemon = PeerDaemon(run, peer_id, signing_key, out, behaviour=behaviour)
        daemon.install_signal_handlers()
        return daemon.serve(bind=bind)
    from adversary.daemon import ByzantineDaemon

    byzantine = ByzantineDaemon(run, peer_id, signing_key, attack, ids, out, options=run.adversary)
    signal.signal(signal.SIGTERM, byzantine.request_stop)
    signal.signal(signal.SIGINT, byzantine.request_stop)
    return byzantine.serve(bind=bind)


def cmd_status(args: argparse.Namespace) -> int:
    """Ask a running peer for its Status (and, with --evidence, its equivocation proofs)."""
    from peer.net.client import ReaderIdentity, query_status

    credentials = (args.config, args.id, args.key)
    identity = None
    if any(c is not None for c in credentials):
        if not all(c is not None for c in credentials):
            raise ConfigError("config error: status signs its requests with --config, --id and --key together "
                              "(a roster member's); give all three or none")
        run, signing_key = load_identity(args)
        identity = ReaderIdentity(run.run_id, args.id, signing_key, run.tls.load(args.id) if run.tls else None)
        target = next((p.id for p in run.peers if p.address == args.address), None)
        if run.tls is not None and target is None:
            raise ConfigError(f"config error: {args.address} is not a roster address; with [tls] the peer's "
                              "certificate is checked against its roster id, so give the address as in the roster")
    else:
        target = None
    print(json.dumps(query_status(args.address, args.timeout, evidence=args.evidence, identity=identity,
                                  peer_id=target), indent=2))
    return ExitCode.SUCCESS


def _add_daemon_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="RUN.toml", help="the run file shared by all peers")
    p.add_argument("--id", type=int, required=True, help="this peer's roster id")
    p.add_argument("--key", required=True, metavar="FILE", help="this peer's private key (mode 0600)")
    p.add_argument("--out", help="directory for metrics.csv, checkpoint.pt (default results/peer-<id>)")
    p.add_argument("--bind", help="listen address (default: the roster address, and 127.0.0.1 on its port; "
                   "e.g. 0.0.0.0:50051 behind NAT)")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def register(sub: argparse._SubParsersAction) -> None:
    keygen = sub.add_parser("keygen", help="write an Ed25519 key pair; prints the public key")
    keygen.add_argument("--out", required=True, metavar="FILE", help="private key file (created with mode 0600)")
    keygen.add_argument("--force", action="store_true", help="replace an existing key file")
    keygen.set_defaults(func=cmd_keygen)

    init = sub.add_parser("init", help="write a K-peer run file and keys (loopback or compose)",
                          description="Generate run.toml (roster with pinned public keys) and keys/<id>.key.")
    add_config_flags(init)
    init.add_argument("--peers", type=int, default=MAIN_JOB_PEERS)
    init.add_argument("--byzantine", type=int, default=MAIN_JOB_BYZANTINE, help="the bound f honest peers assume")
    init.add_argument("--byzantine-peers", type=int, default=MAIN_JOB_BYZANTINE,
                      help=f"how many peers (the highest ids) get an [adversary] role (default {MAIN_JOB_BYZANTINE})")
    init.add_argument("--attack", default=MAIN_JOB_ATTACK, help="attack of the Byzantine peers")
    init.add_argument("--host", default="127.0.0.1")
    init.add_argument("--base-port", type=int, default=50100)
    init.add_argument("--compose", action="store_true", help="addresses peer-<id>:50051 for docker compose")
    init.add_argument("--addresses", type=csv_list, metavar="HOST:PORT,...",
                      help="one listening address per peer, in id order (peers on separate machines)")
    init.add_argument("--out", required=True, help="run directory to create")
    init.add_argument("--force", action="store_true", help="replace an existing run file and keys")
    init.add_argument("--tls", action="store_true",
                      help="mutual TLS between peers: a run CA and one certificate per peer in tls/, and [tls]")
    init.set_defaults(func=cmd_init)

    certs = sub.add_parser("certs", help="create a run CA and a TLS certificate per peer (mutual TLS)",
                           description="Create a run CA and one TLS certificate and key per roster member for "
                                       "mutual TLS between peers; prints the [tls] table to add to the run file.")
    certs.add_argument("--config", required=True, metavar="RUN.toml", help="the run file (its roster names the peers)")
    certs.add_argument("--out", help="directory for ca.pem, ca.key, <id>.pem, <id>.key (default: tls/ beside "
                                     "the run file)")
    certs.add_argument("--force", action="store_true", help="replace existing certificates (every peer then needs "
                                                            "the new CA)")
    certs.set_defaults(func=cmd_certs)

    peer = sub.add_parser("peer", help="run one honest peer daemon",
                          description="Run one honest DecByzPG peer: a gRPC server and client of every other peer.")
    _add_daemon_flags(peer)
    peer.set_defaults(func=cmd_peer)

    adv = sub.add_parser("adversary", help="run one Byzantine peer daemon",
                         description="Run one Byzantine peer; the attack comes from --attack or the run file's "
                                     "[adversary] table.")
    _add_daemon_flags(adv)
    adv.add_argument("--attack", help="attack name (default: [adversary].attack of the run file)")
    adv.add_argument("--set-attack", action="append", default=[], metavar="KEY=VALUE",
                     help="attack parameter, e.g. --set-attack scale=100 (repeatable)")
    adv.set_defaults(func=cmd_adversary)

    st = sub.add_parser("status", help="query a running peer (iteration, rejections, equivocation evidence)",
                        description="Query a running peer. Peers answer roster members only: sign the request "
                                    "with a roster member's --config, --id and --key (any peer's), unless the "
                                    "run file sets network.open_status (Status only).")
    st.add_argument("address", help="host:port of the peer")
    st.add_argument("--config", metavar="RUN.toml", help="the run file (to sign as a roster member)")
    st.add_argument("--id", type=int, help="the roster id to sign as")
    st.add_argument("--key", metavar="FILE", help="that roster member's private key")
    st.add_argument("--evidence", action="store_true", help="also fetch the equivocation proofs it holds")
    st.add_argument("--timeout", type=float, default=5.0)
    st.set_defaults(func=cmd_status)
