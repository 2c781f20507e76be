"""The deployment files without Docker: generated compose files are current and follow
the main job's conventions; the Dockerfile keeps its promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_compose_files_are_the_generators_output(tmp_path: Path) -> None:
    compose, stack = tmp_path / "compose.yaml", tmp_path / "stack.yml"
    subprocess.run([sys.executable, str(ROOT / "compose" / "generate.py"), "--compose-out", str(compose),
                    "--stack-out", str(stack)], check=True, capture_output=True)
    hint = "stale: run `python3 compose/generate.py` and commit the result"
    assert (ROOT / "compose" / "compose.yaml").read_text() == compose.read_text(), f"compose/compose.yaml is {hint}"
    assert (ROOT / "compose" / "stack.yml").read_text() == stack.read_text(), f"compose/stack.yml is {hint}"


def test_last_f_ids_are_byzantine_and_every_peer_has_its_own_key() -> None:
    text = (ROOT / "compose" / "compose.yaml").read_text()
    commands = dict(re.findall(r"\n  (peer-\d+):\n    <<: \*peer\n    command: \[(\w+),", text))
    assert commands == {f"peer-{k}": "peer" if k < 10 else "adversary" for k in range(13)}
    for k in range(13):
        assert f"--id, \"{k}\", --key, /run-data/keys/{k}.key, --out, /results/peer-{k}" in text
    stack = (ROOT / "compose" / "stack.yml").read_text()
    assert stack.count("endpoint_mode: dnsrr") == 1 and stack.count("<<: *peer") == 13
    for k in range(13):
        assert f"source: key-{k}\n" in stack and f"file: ${{RUN_DIR:-./run}}/keys/{k}.key" in stack


def test_generator_handles_other_sizes(tmp_path: Path) -> None:
    compose, stack = tmp_path / "c.yaml", tmp_path / "s.yml"
    subprocess.run([sys.executable, str(ROOT / "compose" / "generate.py"), "--peers", "5", "--byzantine", "1",
                    "--compose-out", str(compose), "--stack-out", str(stack)], check=True, capture_output=True)
    text = compose.read_text()
    assert "peer-4:\n    <<: *peer\n    command: [adversary," in text and "peer-5:" not in text
    assert 'PEERS: "5"' in text and 'BYZANTINE: "1"' in text


def test_dockerfile_promises() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE=python:3.11-slim" in text
    assert re.search(r"^USER 1000:1000$", text, re.M), "the peers must not run as root"
    assert 'ENTRYPOINT ["decbyzpg"]' in text
    assert 'HEALTHCHECK' in text and 'decbyzpg-health' in text
    assert "OMP_NUM_THREADS=1" in text
    assert "--no-index" in text and "--no-cache-dir" in text
    ignored = (ROOT / ".dockerignore").read_text()
    assert ignored.splitlines()[2] == "*", "the build context is an allow-list"
    assert "!tests" not in ignored and "!results" not in ignored


def test_image_and_compose_files_share_one_health_check() -> None:
    """The Dockerfile's HEALTHCHECK and compose/generate.py's say the same: the 5 s timeout
    that one of them still had was what swarm replaced busy tasks for (stop 13)."""
    flags = dict(re.findall(r"--([a-z-]+)=(\w+)", re.search(r"^HEALTHCHECK (.*)$", (ROOT / "Dockerfile").read_text(),
                                                             re.M).group(1)))
    for name in ("compose.yaml", "stack.yml"):
        block = re.search(r"  healthcheck:\n((?:    .*\n)+)", (ROOT / "compose" / name).read_text()).group(1)
        settings = dict(re.findall(r"    (\w+): (\w+)\n", block))
        assert {key.replace("_", "-"): value for key, value in settings.items()} == flags, name


def test_health_check_script_runs_against_nothing(tmp_path: Path) -> None:
    """No server at the address: exit status 1, one line naming the gRPC code."""
    done = subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py"), "127.0.0.1:9"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "UNAVAILABLE" in done.stderr or "DEADLINE_EXCEEDED" in done.stderr
