"""The learning core: pure computation, the same objects in-process and behind the daemon.

Nothing here imports grpc, protobuf, threading or the filesystem (config loading aside).
"""

ENGINE_REVISION = 2
"""Bumped whenever the same configuration starts producing different numbers (2: per-decision
importance weights corrected).  Results record it, and sweeps and the matrix redo any run
whose recorded revision differs instead of reusing it."""
