"""`decbyzpg`: assemble the command groups and turn user errors into one line and a named exit code.

Only the project's own error family (`peer.engine.errors.DecByzPGError`) is printed as a
one-line message; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from peer.cli import cluster, conformance, daemons, process, report, run, sweep, vectors
from peer.engine.errors import DecByzPGError, ExitCode

COMMAND_GROUPS = (run, sweep, report, daemons, cluster, conformance, vectors)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="decbyzpg",
        description="DecByzPG: decentralized Byzantine fault-tolerant federated policy gradient. Peer daemons "
                    "(keygen, init, certs, peer, adversary, status, cluster, conformance) and experiments (run, trace, sweep, matrix, bench, "
                    "report, vectors).")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    process.pin_malloc_mmap_threshold()
    try:
        return int(args.func(args))
    except DecByzPGError as err:
        print(f"error: {err}", file=sys.stderr)
        return int(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
