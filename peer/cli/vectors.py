"""`decbyzpg vectors`: write the protocol's test vectors (tests/vectors/), or check they are current.

The vectors are how a second implementation of decbyzpg.v1 checks itself (issue #11), so
they must always describe what this implementation does: `--check` is the same test the
suite runs, for scripts and CI steps that want it without pytest.  The generator is
imported only when the command runs, so `decbyzpg --help` stays instant (it needs torch).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from peer.engine.errors import ExitCode

DEFAULT_OUT = Path("tests/vectors")


def cmd_vectors(args: argparse.Namespace) -> int:
    from peer.lab.vectors import generate, stale, write

    out = Path(args.out)
    documents = generate()
    if args.check:
        differing = stale(out, documents)
        if differing:
            print(f"error: test vectors in {out} are not current: {', '.join(differing)} "
                  "(regenerate with `decbyzpg vectors`)", file=sys.stderr)
            return ExitCode.FAILURE
        print(f"{len(documents)} vector files in {out} are current")
        return ExitCode.SUCCESS
    names = write(out, documents)
    if names:
        print(f"wrote {len(names)} of {len(documents)} vector files to {out}: {', '.join(names)}")
    else:
        print(f"{len(documents)} vector files in {out} were already current")
    return ExitCode.SUCCESS


def register(sub: argparse._SubParsersAction) -> None:
    vectors = sub.add_parser("vectors", help="write the protocol test vectors (JSON) for other implementations, "
                                             "or --check that they are current")
    vectors.add_argument("--out", default=str(DEFAULT_OUT), metavar="DIR",
                         help=f"directory of the vector files (default {DEFAULT_OUT})")
    vectors.add_argument("--check", action="store_true",
                         help="write nothing; exit 1 naming the files that differ from what would be written")
    vectors.set_defaults(func=cmd_vectors)
