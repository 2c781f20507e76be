"""peer.cli.process: the pinned mmap threshold gives freed batch-sized blocks back to the system.

Each case runs in a fresh interpreter, since the setting is process-wide and glibc's threshold
only ever moves up.  The unpinned case is the control: it shows the heap growth the pin
prevents (a LunarLander sweep worker reached 12 GB that way).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from peer.cli.process import glibc_mallopt

PROBE = r"""
import os, sys
import numpy as np
if sys.argv[1] == "pin":
    from peer.cli.process import pin_malloc_mmap_threshold
    assert pin_malloc_mmap_threshold()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
first = np.ones(2 << 20)  # 16 MiB, mmapped; freeing it raises an unpinned threshold to 16 MiB
del first
before = rss()
blocks, small = [], []
for _ in range(200):  # a batch's worth of 1 MiB blocks, each followed by a small live allocation
    blocks.append(np.ones(1 << 17))
    small.append(bytearray(4096))
del blocks
print((rss() - before) >> 20)
"""


def growth_mib(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


@pytest.mark.skipif(glibc_mallopt() is None, reason="needs glibc's mallopt")
def test_freed_blocks_go_back_to_the_system_only_when_pinned() -> None:
    assert growth_mib("pin") < 20  # the 200 MiB of freed blocks were unmapped
    assert growth_mib("default") > 150  # the control: they stayed in the heap, behind live small ones


def test_every_command_pins_it_before_running(monkeypatch, tmp_path) -> None:
    from peer.cli import main as cli_main

    calls: list[str] = []
    monkeypatch.setattr(cli_main.process, "pin_malloc_mmap_threshold", lambda: calls.append("pinned") or True)
    assert cli_main.main(["report", str(tmp_path / "missing")]) != 0  # a command that fails at once
    assert calls == ["pinned"]
