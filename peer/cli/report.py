"""`decbyzpg bench` and `decbyzpg report`: speed figures and docs/RESULTS.md."""

from __future__ import annotations

import argparse
from pathlib import Path

from peer.engine.errors import ExitCode


def cmd_bench(args: argparse.Namespace) -> int:
    if args.network:
        return cmd_network_bench(args)
    from peer.lab.bench import run_benchmarks

    run_benchmarks(3000 if args.trajectories is None else args.trajectories, quick=args.quick, mda=not args.no_mda)
    return ExitCode.SUCCESS


def cmd_network_bench(args: argparse.Namespace) -> int:
    from peer.engine.errors import ConfigError
    from peer.lab.netbench import network_benchmark, render

    if args.peers < 1 or not 0 <= args.byzantine < args.peers:
        raise ConfigError(f"config error: --peers must be >= 1 and 0 <= --byzantine < --peers "
                          f"(got {args.peers}, {args.byzantine})")
    trajectories = 1500 if args.trajectories is None else args.trajectories
    report = network_benchmark(args.peers, args.byzantine, trajectories, args.seed, Path(args.out),
                               base_port=args.base_port, skip_in_process=args.no_in_process, tls=args.tls,
                               cross_check=not args.no_cross_check)
    print(render(report))
    print(f"saved {Path(args.out) / 'network-bench.json'}")
    return ExitCode.SUCCESS


def cmd_report(args: argparse.Namespace) -> int:
    from peer.lab.report import write_report

    write_report([Path(p) for p in args.sweeps], Path(args.out), args.bench, [Path(c) for c in args.cluster],
                 Path(args.matrix) if args.matrix else None, [Path(p) for p in args.network_bench])
    print(f"wrote {args.out}")
    return ExitCode.SUCCESS


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="speed benchmarks (steps/s, aggregation, agreement, wall time)")
    bench.add_argument("--trajectories", type=int,
                       help="budget of the timed run (default 3000; 1500 with --network)")
    bench.add_argument("--quick", action="store_true", help="smaller budgets, for a smoke test")
    bench.add_argument("--no-mda", action="store_true", help="skip the MDA scaling measurement")
    bench.add_argument("--network", action="store_true",
                       help="instead: the same run in this process and as K peer processes on loopback, side by "
                            "side (wall, CPU, round latency, traffic, CPU split, peak RSS)")
    bench.add_argument("--peers", type=int, default=13, help="--network: K (default 13)")
    bench.add_argument("--byzantine", type=int, default=3, help="--network: Byzantine peers, AvgZero (default 3)")
    bench.add_argument("--seed", type=int, default=0, help="--network: seed (default 0)")
    bench.add_argument("--base-port", type=int, default=51300, help="--network: first loopback port")
    bench.add_argument("--no-in-process", action="store_true", help="--network: skip the in-process reference run")
    bench.add_argument("--tls", action="store_true", help="--network: the peers talk mutual TLS ([tls], a run CA)")
    bench.add_argument("--no-cross-check", action="store_true",
                       help="--network: network.cross_check = false (to measure what the cross-checks cost)")
    bench.add_argument("--out", default="results/network-bench", help="--network: results directory")
    bench.set_defaults(func=cmd_bench)

    report = sub.add_parser("report", help="write docs/RESULTS.md from sweep directories")
    report.add_argument("sweeps", nargs="+", help="sweep directories (results/sweep-*)")
    report.add_argument("--bench", help="JSON written by `decbyzpg bench` to include")
    report.add_argument("--cluster", action="append", default=[], metavar="DIR",
                        help="a `decbyzpg cluster` results directory to include (repeatable)")
    report.add_argument("--matrix", metavar="DIR", help="a `decbyzpg matrix` directory to include")
    report.add_argument("--network-bench", action="append", default=[], metavar="DIR",
                        help="a `decbyzpg bench --network` directory to include, one table row each (repeatable)")
    report.add_argument("--out", default="docs/RESULTS.md")
    report.set_defaults(func=cmd_report)
