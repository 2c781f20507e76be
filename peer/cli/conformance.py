"""`decbyzpg conformance`: check a peer -- ours, a re-implementation, a fork -- against decbyzpg.v1.

The tester plays the other K - 1 roster members over real gRPC and checks each requirement
of the protocol (`peer.lab.conformance`); one row per requirement, a table or JSON, and exit
status 1 (ExitCode.FAILURE) when a MUST fails.  The runner is imported only when the command
runs, so `decbyzpg --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_conformance(args: argparse.Namespace) -> int:
    from peer.lab.conformance import ConformanceOptions, render_table, run_conformance

    report = run_conformance(ConformanceOptions(
        run_file=Path(args.run_file), keys=Path(args.keys), target_id=args.target_id, target=args.target,
        spawn=args.spawn, out=Path(args.out) if args.out else None, timeout=args.timeout))
    print(json.dumps(report.to_json(), indent=2) if args.json else render_table(report))
    return report.exit_code


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "conformance", help="check a peer under test against the protocol, over the wire",
        description="Play the other K - 1 roster members (honest peers on their roster addresses) against a "
                    "peer under test and check each requirement of decbyzpg.v1: health, signed reads, every "
                    "reject reason, progress, valid messages, outputs bit-identical to the in-process reference, "
                    "evidence, Pull, the round deadline. Exit status 1 if a MUST requirement fails. Give the run "
                    "file a short run (a few iterations), a patient network.grace (e.g. 5) and a network.linger "
                    "of a few seconds; network.round_timeout <= 5 also checks the deadline.")
    p.add_argument("--run-file", required=True, metavar="RUN.toml", help="the run file the target was given")
    p.add_argument("--keys", required=True, metavar="DIR",
                   help="directory of <id>.key for every roster member but the target (and the target's, for "
                        "--spawn's {key})")
    p.add_argument("--target-id", type=int, required=True, metavar="N", help="the target's roster id")
    p.add_argument("--target", metavar="HOST:PORT",
                   help="where the target listens (default with --spawn: its roster address); start it right "
                        "before the suite, fresh (no checkpoint)")
    p.add_argument("--spawn", metavar="COMMAND",
                   help="start the target with this command and stop it at the end; {run_file}, {id}, {key}, "
                        "{out} and {address} are filled in, e.g. "
                        "\"decbyzpg peer --config {run_file} --id {id} --key {key} --out {out}\"")
    p.add_argument("--out", metavar="DIR",
                   help="where the tester peers (and a spawned target) write; new or empty (default: a temporary "
                        "directory, removed afterwards)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="give up waiting for the target after this long (default 600)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.set_defaults(func=cmd_conformance)
