"""`decbyzpg` command line: peer daemons (keygen, init, peer, adversary, status, cluster) and
experiments (run, trace, sweep, matrix, bench, report).

Every configuration error is reported as one line naming the field, with exit status 2;
tracebacks are reserved for bugs.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from peer.config import ConfigError, apply_override, build_config, load_toml, parse_override

# peer.sweep.SUITES, spelled out so that parsing arguments does not import torch
SWEEP_SUITES = ("speedup", "attacks", "lunar", "bucketing")

DEFAULT_RESULTS = Path("results")


def _seeds(text: str) -> list[int]:
    """'0-4' or '0,2,7' -> list of seeds."""
    try:
        seeds: list[int] = []
        for part in text.split(","):
            if "-" in part:
                lo, hi = part.split("-", 1)
                seeds += list(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like 0-4 or 0,2,7 (got {text!r})") from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"seeds must be non-negative integers (got {text!r})")
    return seeds


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (got {text!r})") from None


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="run file (TOML); flags below override it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any field, e.g. --set estimator.switch_prob=0.3 (repeatable)")
    p.add_argument("--env", help="gymnasium id: CartPole-v1, LunarLander-v3, Pendulum-v1, LunarLanderContinuous-v3")
    p.add_argument("--algorithm", help="decbyzpg, dec-page-pg, byzpg or page-pg")
    p.add_argument("--preset", help="tuned (default) or paper (the paper's estimator settings)")
    p.add_argument("--trajectories", type=int, metavar="N", help="budget: trajectories per agent")
    p.add_argument("--allow-beyond-tolerance", action="store_true",
                   help="run even if there are more Byzantines than the algorithm tolerates")


def _config_data(args: argparse.Namespace, extra: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = load_toml(args.config) if args.config else {}
    flags = {"env": args.env, "algorithm": args.algorithm, "preset": args.preset,
             "trajectories_per_agent": args.trajectories, **extra}
    for key, value in flags.items():
        if value is not None:
            data = apply_override(data, key.split("."), value)
    if args.allow_beyond_tolerance:
        data["allow_beyond_tolerance"] = True
    for text in args.set:
        path, value = parse_override(text)
        data = apply_override(data, path, value)
    return data


# ---------------------------------------------------------------- run


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """The flags `_run_config` reads (for `run` and `trace`)."""
    _add_config_flags(p)
    p.add_argument("--peers", type=int, help="K, number of peers (default 13)")
    p.add_argument("--byzantine", type=int, help="f, number of Byzantine peers (default 3)")
    p.add_argument("--attack", help="attack of the Byzantine peers (default avg_zero)")
    p.add_argument("--seed", type=int)


def _run_config(args: argparse.Namespace) -> Any:
    """The configuration `run` and `trace` resolve to from the run file and flags."""
    extra: dict[str, Any] = {"num_peers": args.peers, "num_byzantine": args.byzantine, "seed": args.seed,
                             "attack.name": args.attack}
    if not args.config:  # the main job: 13 peers, 3 of them AvgZero Byzantines
        extra = {"num_peers": 13, "num_byzantine": 3, **{k: v for k, v in extra.items() if v is not None}}
        if extra["num_byzantine"] > 0:
            extra.setdefault("attack.name", "avg_zero")
    return build_config(_config_data(args, extra))


def cmd_trace(args: argparse.Namespace) -> int:
    from adversary.trace import trace, write_trace

    cfg = _run_config(args)
    out = Path(args.out)
    rows = trace(cfg, args.peer_id)
    write_trace(out, rows)
    print(f"{len(rows)} iterations measured at peer {args.peer_id} -> {out}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    from peer.experiment import describe, run_experiment

    cfg = _run_config(args)
    out = Path(args.out) if args.out else DEFAULT_RESULTS / (
        _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{cfg.algorithm}-K{cfg.num_peers}")
    console = Console(stderr=True)
    console.print(f"[bold]{describe(cfg)}[/bold] -> {out}")
    bar = tqdm(total=cfg.trajectories_per_agent, unit="traj", desc="trajectories/agent", disable=args.quiet,
               dynamic_ncols=True)

    def progress(row: Any) -> None:
        bar.update(row.trajectories_per_agent - bar.n)
        bar.set_postfix(it=row.iteration, ret=f"{row.honest_mean_return:.1f}", diam=f"{row.honest_diameter:.2g}")

    try:
        summary = run_experiment(cfg, out, progress=progress)
    except KeyboardInterrupt:
        bar.close()
        console.print(f"interrupted; partial results are in {out}")
        return 130
    bar.close()
    table = Table(title="summary", show_header=False)
    for key in ("trajectories_per_agent", "final_honest_return", "last_1000_honest_return", "trajectories_to_475",
                "trajectories_to_target", "env_steps", "wall_seconds"):
        value = summary[key]
        table.add_row(key, "never" if value is None else (f"{value:.1f}" if isinstance(value, float) else str(value)))
    Console().print(table)
    console.print(f"results: {out}/ (config.toml, metrics.csv, summary.json, returns.png)")
    return 0


# ---------------------------------------------------------------- sweep


def cmd_sweep(args: argparse.Namespace) -> int:
    from peer import sweep

    base = _config_data(args, {})
    budget = base.pop("trajectories_per_agent", None)
    if args.suite:
        jobs, title = sweep.suite(args.suite, args.seeds, budget, base)
        name = args.suite
    else:
        if not args.algorithms:
            raise ConfigError("sweep needs --suite or --algorithms (with --peers, --byzantine, --attacks)")
        jobs = sweep.grid(args.algorithms, args.peers, args.byzantine, args.attacks or ["avg_zero"], args.seeds,
                          base, budget, args.allow_beyond_tolerance)
        title, name = args.title or "Sweep", "sweep"
    out = Path(args.out) if args.out else DEFAULT_RESULTS / f"sweep-{name}"
    results = sweep.run_jobs(jobs, out, args.jobs)
    threshold = None if (args.suite or "").startswith("lunar") else 475.0
    rows = sweep.write_outputs(results, out, name, title, threshold)
    print(sweep.markdown_table(rows))
    print(f"figure: {out / (name + '.png')}  table: {out / 'table.md'}")
    return 0


# ---------------------------------------------------------------- bench / report


def cmd_bench(args: argparse.Namespace) -> int:
    from peer.bench import run_benchmarks

    run_benchmarks(args.trajectories, quick=args.quick, mda=not args.no_mda)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from peer.report import write_report

    write_report([Path(p) for p in args.sweeps], Path(args.out), args.bench, [Path(c) for c in args.cluster],
                 Path(args.matrix) if args.matrix else None)
    print(f"wrote {args.out}")
    return 0


# ---------------------------------------------------------------- networked peers


def setup_logging(level: str, fmt: str) -> None:
    import logging

    from peer.logs import JsonFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _load_identity(args: argparse.Namespace):
    from peer.crypto import load_private_key, public_key_to_text
    from peer.runfile import load_run_file

    run = load_run_file(args.config)
    entry = run.peer(args.id)
    key = load_private_key(args.key)
    if public_key_to_text(key.public_key()) != entry.public_key:
        raise ConfigError(f"config error: key {args.key} does not match peer {args.id}'s public key in the roster")
    return run, key


def cmd_keygen(args: argparse.Namespace) -> int:
    from peer.crypto import generate_key

    print(generate_key(Path(args.out), overwrite=args.force))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from peer.cluster import cluster_config, init_run

    data = _config_data(args, {})
    cfg = cluster_config(args.peers, args.byzantine, data)
    byzantine = list(range(args.peers - args.byzantine_peers, args.peers)) if args.byzantine_peers else []
    path = init_run(Path(args.out), cfg, byzantine, args.attack, host=args.host, base_port=args.base_port,
                    compose=args.compose, overwrite=args.force)
    print(f"wrote {path} and {args.peers} keys in {Path(args.out) / 'keys'}")
    return 0


def cmd_peer(args: argparse.Namespace) -> int:
    from peer.daemon import PeerDaemon

    setup_logging(args.log_level, args.log_format)
    run, key = _load_identity(args)
    daemon = PeerDaemon(run, args.id, key, Path(args.out or f"results/peer-{args.id}"))
    daemon.install_signal_handlers()
    return daemon.serve(bind=args.bind)


def cmd_adversary(args: argparse.Namespace) -> int:
    from adversary.cli import run_adversary

    setup_logging(args.log_level, args.log_format)
    run, key = _load_identity(args)
    return run_adversary(run, args.id, key, Path(args.out or f"results/peer-{args.id}"), args.attack,
                         args.set_attack, args.bind)


def cmd_cluster(args: argparse.Namespace) -> int:
    from peer.cluster_cli import run_cluster

    return run_cluster(args, _config_data(args, {}))


def cmd_matrix(args: argparse.Namespace) -> int:
    from adversary.matrix import DEFAULT_ATTACKS, run_matrix, summarize_rows
    from peer.sweep import markdown_table

    base = _config_data(args, {})
    if args.trajectories is None:
        base["trajectories_per_agent"] = 2000
    rows = run_matrix(Path(args.out), base, args.attacks or list(DEFAULT_ATTACKS), args.algorithms, args.seeds,
                      args.peers, args.byzantine, args.misbehaviour, args.base_port, args.timeout)
    print(markdown_table(summarize_rows(rows)))
    print(f"table: {Path(args.out) / 'table.md'}  figure: {Path(args.out) / 'matrix.png'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Ask a running peer for its Status (and, with --evidence, its equivocation proofs)."""
    import grpc

    from decbyzpg.v1 import peer_pb2, peer_pb2_grpc

    with grpc.insecure_channel(args.address) as channel:
        stub = peer_pb2_grpc.PeerStub(channel)
        try:
            status = stub.Status(peer_pb2.StatusRequest(), timeout=args.timeout)
            evidence = stub.Evidence(peer_pb2.EvidenceRequest(), timeout=args.timeout) if args.evidence else None
        except grpc.RpcError as err:
            print(f"error: {args.address}: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    print(json.dumps({
        "peer_id": status.peer_id, "run_id": status.run_id.hex(), "iteration": status.iteration,
        "finished": status.finished, "accepted": status.accepted, "rejected": dict(status.rejected),
        **({"equivocations": [{"sender": e.first.sender, "first": e.first.body.hex(), "second": e.second.body.hex()}
                              for e in evidence.equivocations]} if evidence is not None else {}),
    }, indent=2))
    return 0


def _add_daemon_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="RUN.toml", help="the run file shared by all peers")
    p.add_argument("--id", type=int, required=True, help="this peer's roster id")
    p.add_argument("--key", required=True, metavar="FILE", help="this peer's private key (mode 0600)")
    p.add_argument("--out", help="directory for metrics.csv, checkpoint.pt (default results/peer-<id>)")
    p.add_argument("--bind", help="listen address (default [::]:<port of the roster address>)")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="decbyzpg",
        description="DecByzPG: decentralized Byzantine fault-tolerant federated policy gradient. Peer daemons "
                    "(keygen, init, peer, adversary, status, cluster) and experiments (run, trace, sweep, matrix, bench, "
                    "report).")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="one in-process configuration (default: 13 peers, 3 AvgZero, CartPole)",
                         description="Run K peers in one process and write a results directory.")
    _add_run_flags(run)
    run.add_argument("--out", help="results directory (default results/<time>-<algorithm>-K<K>)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)

    tr = sub.add_parser("trace", help="per iteration, how far an attack moved one honest peer's aggregate",
                        description="Run in one process (as `run`) and write a CSV, per iteration, of the honest "
                                    "mean's norm, the honest spread, the aggregate's distance from the honest "
                                    "mean and its cosine with it, measured at one honest peer.")
    _add_run_flags(tr)
    tr.add_argument("--peer-id", type=int, default=0, help="the honest peer to measure (default 0)")
    tr.add_argument("--out", required=True, help="CSV file to write")
    tr.set_defaults(func=cmd_trace)

    sw = sub.add_parser("sweep", help="a grid of runs in parallel, with figures and a table",
                        description="Run a named suite (the paper's figures) or a grid, then plot mean +/- std "
                                    "over seeds. Finished runs are reused, so an interrupted sweep resumes.")
    _add_config_flags(sw)
    sw.add_argument("--suite", choices=SWEEP_SUITES,
                    help="the paper's figure to reproduce")
    sw.add_argument("--title", help="title of the figure and table (grids)")
    sw.add_argument("--algorithms", type=_csv, help="grid: e.g. decbyzpg,dec-page-pg")
    sw.add_argument("--peers", type=_ints, default=[13], help="grid: K values, e.g. 5,13")
    sw.add_argument("--byzantine", type=_ints, default=[0], help="grid: f values, e.g. 0,3")
    sw.add_argument("--attacks", type=_csv, help="grid: attacks for f > 0, e.g. avg_zero,alie")
    sw.add_argument("--seeds", type=_seeds, default=_seeds("0-4"), help="e.g. 0-4 (default) or 0,3,9")
    sw.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel processes (default: cores)")
    sw.add_argument("--out", help="sweep directory (default results/sweep-<suite>)")
    sw.set_defaults(func=cmd_sweep)

    bench = sub.add_parser("bench", help="speed benchmarks (steps/s, aggregation, agreement, wall time)")
    bench.add_argument("--trajectories", type=int, default=3000, help="budget of the timed 13-peer run")
    bench.add_argument("--quick", action="store_true", help="smaller budgets, for a smoke test")
    bench.add_argument("--no-mda", action="store_true", help="skip the MDA scaling measurement")
    bench.set_defaults(func=cmd_bench)

    keygen = sub.add_parser("keygen", help="write an Ed25519 key pair; prints the public key")
    keygen.add_argument("--out", required=True, metavar="FILE", help="private key file (created with mode 0600)")
    keygen.add_argument("--force", action="store_true", help="replace an existing key file")
    keygen.set_defaults(func=cmd_keygen)

    init = sub.add_parser("init", help="write a K-peer run file and keys (loopback or compose)",
                          description="Generate run.toml (roster with pinned public keys) and keys/<id>.key.")
    _add_config_flags(init)
    init.add_argument("--peers", type=int, default=13)
    init.add_argument("--byzantine", type=int, default=3, help="the bound f honest peers assume")
    init.add_argument("--byzantine-peers", type=int, default=3,
                      help="how many peers (the highest ids) get an [adversary] role (default 3)")
    init.add_argument("--attack", default="avg_zero", help="attack of the Byzantine peers")
    init.add_argument("--host", default="127.0.0.1")
    init.add_argument("--base-port", type=int, default=50100)
    init.add_argument("--compose", action="store_true", help="addresses peer-<id>:50051 for docker compose")
    init.add_argument("--out", required=True, help="run directory to create")
    init.add_argument("--force", action="store_true", help="replace an existing run file and keys")
    init.set_defaults(func=cmd_init)

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

    st = sub.add_parser("status", help="query a running peer (iteration, rejections, equivocation evidence)")
    st.add_argument("address", help="host:port of the peer")
    st.add_argument("--evidence", action="store_true", help="also fetch the equivocation proofs it holds")
    st.add_argument("--timeout", type=float, default=5.0)
    st.set_defaults(func=cmd_status)

    cl = sub.add_parser("cluster", help="K peer processes on loopback (default 13, 3 AvgZero), live progress",
                        description="Generate a run, start one process per peer on loopback, show progress, "
                                    "merge the honest peers' results. Ctrl-C stops every process cleanly.")
    _add_config_flags(cl)
    cl.add_argument("--peers", type=int, default=13)
    cl.add_argument("--byzantine", type=int, default=3, help="Byzantine peers (and the bound f)")
    cl.add_argument("--attack", default="avg_zero")
    cl.add_argument("--seed", type=int)
    cl.add_argument("--base-port", type=int, default=50100)
    cl.add_argument("--out", help="results directory (default results/<time>-cluster-K<K>)")
    cl.add_argument("--quiet", action="store_true")
    cl.set_defaults(func=cmd_cluster)

    mx = sub.add_parser("matrix", help="resilience matrix: every attack over the wire, DecByzPG vs Dec-PAGE-PG",
                        description="For each attack and algorithm, a K-peer multi-process run on loopback; a table "
                                    "and a figure of the outcome, rejections by reason, equivocations, crashes, stalls.")
    _add_config_flags(mx)
    mx.add_argument("--attacks", type=_csv,
                    help="attacks to run, each NAME or NAME:KEY=VALUE[:KEY=VALUE] for a variant, e.g. "
                         "none,alie,ipm:epsilon=4 (default: none, every attack at its default strength, "
                         "alie:z=6 and ipm:epsilon=4)")
    mx.add_argument("--algorithms", type=_csv, default=["decbyzpg", "dec-page-pg"])
    mx.add_argument("--seeds", type=_seeds, default=_seeds("0-2"), help="e.g. 0-2 (default)")
    mx.add_argument("--peers", type=int, default=13)
    mx.add_argument("--byzantine", type=int, default=3)
    mx.add_argument("--misbehaviour", type=_csv, default=[],
                    help="protocol misbehaviour kinds the Byzantine peers add every 5th round, or 'all'")
    mx.add_argument("--base-port", type=int, default=50300)
    mx.add_argument("--timeout", type=float, default=1800.0, help="seconds before a run counts as stalled")
    mx.add_argument("--out", default="results/matrix")
    mx.set_defaults(func=cmd_matrix)

    report = sub.add_parser("report", help="write docs/RESULTS.md from sweep directories")
    report.add_argument("sweeps", nargs="+", help="sweep directories (results/sweep-*)")
    report.add_argument("--bench", help="JSON written by `decbyzpg bench` to include")
    report.add_argument("--cluster", action="append", default=[], metavar="DIR",
                        help="a `decbyzpg cluster` results directory to include (repeatable)")
    report.add_argument("--matrix", metavar="DIR", help="a `decbyzpg matrix` directory to include")
    report.add_argument("--out", default="docs/RESULTS.md")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "trajectories", None) is not None and args.trajectories < 1:
        print("error: --trajectories must be >= 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (ConfigError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
