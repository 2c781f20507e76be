"""`decbyzpg bench` and `decbyzpg report`: speed figures and docs/RESULTS.md."""

from __future__ import annotations

import argparse
from pathlib import Path

from peer.engine.errors import ExitCode


def cmd_bench(args: argparse.Namespace) -> int:
    from peer.lab.bench import run_benchmarks

    run_benchmarks(args.trajectories, quick=args.quick, mda=not args.no_mda)
    return ExitCode.SUCCESS


def cmd_report(args: argparse.Namespace) -> int:
    from peer.lab.report import write_report

    write_report([Path(p) for p in args.sweeps], Path(args.out), args.bench, [Path(c) for c in args.cluster],
                 Path(args.matrix) if args.matrix else None)
    print(f"wrote {args.out}")
    return ExitCode.SUCCESS


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="speed benchmarks (steps/s, aggregation, agreement, wall time)")
    bench.add_argument("--trajectories", type=int, default=3000, help="budget of the timed 13-peer run")
    bench.add_argument("--quick", action="store_true", help="smaller budgets, for a smoke test")
    bench.add_argument("--no-mda", action="store_true", help="skip the MDA scaling measurement")
    bench.set_defaults(func=cmd_bench)

    report = sub.add_parser("report", help="write docs/RESULTS.md from sweep directories")
    report.add_argument("sweeps", nargs="+", help="sweep directories (results/sweep-*)")
    report.add_argument("--bench", help="JSON written by `decbyzpg bench` to include")
    report.add_argument("--cluster", action="append", default=[], metavar="DIR",
                        help="a `decbyzpg cluster` results directory to include (repeatable)")
    report.add_argument("--matrix", metavar="DIR", help="a `decbyzpg matrix` directory to include")
    report.add_argument("--out", default="docs/RESULTS.md")
    report.set_defaults(func=cmd_report)
