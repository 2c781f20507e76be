"""Suite-wide: a `timings` fixture whose lines are printed at the end of every run.

The docker and netns tests report what they measured (and, loudly, why they skipped) here,
so CI's log shows the figures without `-s`.
"""

from __future__ import annotations

import pytest

_LINES: list[str] = []


@pytest.fixture()
def timings():
    """Call `timings("text")` to add a line to the end-of-run report."""
    return _LINES.append


def pytest_terminal_summary(terminalreporter) -> None:
    if _LINES:
        terminalreporter.section("measured by the deployment tests")
        for line in _LINES:
            terminalreporter.write_line(line)
