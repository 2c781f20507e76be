"""The project's one error family and its named exit codes.

Every error a *user* can cause (a bad run file, a key that does not match the roster, a
results directory that belongs to another run, a peer that violates the protocol) is a
`DecByzPGError` subclass and carries the exit status the CLI ends with.  The CLI prints
those as one line; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import enum
import signal


class ExitCode(enum.IntEnum):
    """Exit statuses of every `decbyzpg` command (one place, so scripts can rely on them)."""

    SUCCESS = 0
    FAILURE = 1  # the command ran but its outcome failed (a peer crashed, a check failed)
    USAGE = 2  # bad flags, run file, key file or other input (argparse uses 2 as well)
    RUN_STATE = 3  # the run's files on disk do not fit the command (foreign checkpoint, ...)
    UNREACHABLE = 4  # a peer to query could not be reached
    INTERRUPTED = 130  # SIGINT (128 + 2)
    TERMINATED = 143  # SIGTERM (128 + 15)

    @classmethod
    def stopped_by(cls, signum: int | None) -> ExitCode:
        """The status of a daemon stopped on request: TERMINATED for SIGTERM, else INTERRUPTED."""
        return cls.TERMINATED if signum == signal.SIGTERM else cls.INTERRUPTED


class DecByzPGError(Exception):
    """Base of every error a user can cause; `exit_code` is what the CLI exits with."""

    exit_code: ExitCode = ExitCode.FAILURE


class ConfigError(DecByzPGError, ValueError):
    """A configuration value or flag is invalid; the message names the field."""

    exit_code = ExitCode.USAGE


class KeyFileError(DecByzPGError, ValueError):
    """A key file is missing, unreadable, malformed, or does not match the roster."""

    exit_code = ExitCode.USAGE


class RunStateError(DecByzPGError):
    """Files on disk (checkpoint, metrics, run directory) do not belong to this run or command."""

    exit_code = ExitCode.RUN_STATE


class ProtocolError(DecByzPGError, ValueError):
    """A message or value violates decbyzpg.v1 (raised by the codec; validators return reasons)."""

    exit_code = ExitCode.FAILURE


class PeerUnreachableError(DecByzPGError):
    """A peer queried by a client command did not answer."""

    exit_code = ExitCode.UNREACHABLE
