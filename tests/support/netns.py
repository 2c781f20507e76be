"""Separate hosts on one machine: one Linux network namespace per peer, joined by a bridge.

Each host gets its own address on a private /24 that exists only inside namespaces this
module creates (nothing is routed to or from the machine's real interfaces), and peers are
started inside their namespace with `ip netns exec`, exactly as they would run on their own
machines.  Faults are applied to the links: a cut (the bridge port goes down) and random
loss (iptables' statistic match; this kernel has no netem for delay, see
`network.inject_delay`).  Needs root and iproute2; iptables only for loss.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

SUBNET = "10.77.0"


def available() -> str | None:
    """None if namespaces can be made here, else why not (the test then says so loudly)."""
    if os.geteuid() != 0:
        return "network-namespace tests need root"
    if shutil.which("ip") is None:
        return "network-namespace tests need iproute2 (`ip`)"
    if shutil.which("iptables") is None:
        return "network-namespace tests need iptables (packet loss)"
    probe = subprocess.run(["ip", "netns", "add", "dbzprobe"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", "dbzprobe"], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class NetnsLab:
    """`count` hosts named <prefix>-<k> with address 10.77.0.<10 + k>, on one bridge."""

    def __init__(self, count: int, prefix: str = "dbz") -> None:
        self.count = count
        self.prefix = prefix
        self.switch = f"{prefix}-sw"

    def host(self, k: int) -> str:
        return f"{self.prefix}-{k}"

    def address(self, k: int) -> str:
        return f"{SUBNET}.{10 + k}"

    def _port(self, k: int) -> str:
        return f"{self.prefix}s{k}"  # the bridge side of host k's link

    def __enter__(self) -> NetnsLab:
        self.down()  # leftovers of an interrupted run
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for k in range(self.count):
            host = self.host(k)
            _ip("netns", "add", host)
            _ip("link", "add", "eth0", "netns", host, "type", "veth", "peer", "name", self._port(k),
                "netns", self.switch)
            _ip("-n", host, "addr", "add", f"{self.address(k)}/24", "dev", "eth0")
            _ip("-n", host, "link", "set", "eth0", "up")
            _ip("-n", host, "link", "set", "lo", "up")
            _ip("-n", self.switch, "link", "set", self._port(k), "master", "br0")
            _ip("-n", self.switch, "link", "set", self._port(k), "up")
        return self

    def __exit__(self, *_: object) -> None:
        self.down()

    def down(self) -> None:
        for name in [self.switch, *(self.host(k) for k in range(self.count))]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def popen(self, k: int, argv: Sequence[str], log: Path, **kwargs) -> subprocess.Popen:
        """Start `argv` on host k (its only network is its link to the bridge)."""
        handle = open(log, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        return subprocess.Popen(["ip", "netns", "exec", self.host(k), *argv], stdout=handle, stderr=subprocess.STDOUT,
                                env=env, **kwargs)

    def cut(self, k: int) -> None:
        """Unplug host k: its bridge port goes down (in-flight packets are lost)."""
        _ip("-n", self.switch, "link", "set", self._port(k), "down")

    def restore(self, k: int) -> None:
        _ip("-n", self.switch, "link", "set", self._port(k), "up")

    def lose(self, probability: float) -> None:
        """Drop each packet a host receives with `probability`, on every host."""
        for k in range(self.count):
            subprocess.run(["ip", "netns", "exec", self.host(k), "iptables", "-A", "INPUT", "-i", "eth0", "-m",
                            "statistic", "--mode", "random", "--probability", str(probability), "-j", "DROP"],
                           check=True, capture_output=True, text=True)


def decbyzpg(*args: str) -> list[str]:
    """The console command, run with this interpreter (so it works from any working directory)."""
    return [sys.executable, "-m", "peer.cli.main", *args]
