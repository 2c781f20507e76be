"""Run each atheris target (tests/fuzz/atheris_targets.py) for a bounded time; any finding fails.

Why a subprocess: libFuzzer owns the process it runs in (it installs signal handlers, calls
exit() when done or on a finding, and counts coverage over the whole process), so it cannot
run inside pytest's.  The budget is DECBYZPG_FUZZ_SECONDS per target (default 15); set it
higher for a real campaign, or run the script directly with a corpus directory.

A finding makes libFuzzer exit non-zero after writing the input under the test's tmp_path;
the failure message shows the fuzzer's last lines (the assertion and traceback) and the
command that replays the input.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("atheris_targets.py")
SECONDS = int(os.environ.get("DECBYZPG_FUZZ_SECONDS", "15"))
TAIL_LINES = 40

pytestmark = [
    pytest.mark.fuzz,
    pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                       reason="atheris is not installed (pip install 'atheris>=3.0'); the coverage-guided "
                              "fuzzing of the validator and the Pull path did not run"),
]


def _stat(output: str, name: str) -> str:
    """One figure of libFuzzer's -print_final_stats block, or '?' if absent."""
    found = re.search(rf"^stat::{name}:\s*(\S+)", output, re.MULTILINE)
    return found.group(1) if found else "?"


@pytest.mark.parametrize("target", ["validator", "pull"])
def test_atheris_target_finds_nothing(target: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    command = [sys.executable, str(SCRIPT), target, f"-max_total_time={SECONDS}", "-timeout=20",
               "-rss_limit_mb=2048", "-print_final_stats=1", f"-artifact_prefix={artifacts}/"]
    try:
        # one stream: atheris prints the Python traceback on stdout, libFuzzer its report on stderr
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=SECONDS + 120, check=False)
    except subprocess.TimeoutExpired as err:
        tail = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        pytest.fail(f"the {target} fuzzer did not stop within {SECONDS + 120} s\n"
                    + "\n".join(tail.splitlines()[-TAIL_LINES:]))
    output = done.stdout
    runs, per_second = _stat(output, "number_of_executed_units"), _stat(output, "average_exec_per_sec")
    try:
        request.getfixturevalue("timings")(f"atheris {target}: {runs} inputs in {SECONDS} s ({per_second}/s)")
    except pytest.FixtureLookupError:  # run outside this repository's tests/ (no conftest)
        pass
    crashes = sorted(str(p) for p in artifacts.iterdir())
    replay = f"{sys.executable} {SCRIPT} {target} {crashes[0]}" if crashes else "(no input was saved)"
    assert done.returncode == 0, (
        f"the {target} fuzzer exited with {done.returncode}; saved inputs: {crashes}\nreplay: {replay}\n"
        + "\n".join(line for line in output.splitlines()[-TAIL_LINES:] if not line.startswith("INFO: Instrumenting")))
    assert runs not in ("?", "0"), f"the {target} fuzzer ran no input:\n" + "\n".join(output.splitlines()[-TAIL_LINES:])
