"""The learning core: pure computation, the same objects in-process and behind the daemon.

Nothing here imports grpc, protobuf, threading or the filesystem (config loading aside).
"""
