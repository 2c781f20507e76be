"""The layering contract (pyproject.toml [tool.importlinter]) holds, and would catch a violation.

cli -> lab -> adversary -> net -> engine: a module may import only from layers below it,
and the engine imports no networking, protobuf or threads.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(cwd / "pyproject.toml"), "--no-cache"], cwd=cwd,
                          capture_output=True, text=True, env={"PYTHONPATH": str(pythonpath), "PATH": "/usr/bin:/bin"},
                          timeout=120)


def test_the_import_contracts_hold() -> None:
    result = lint(ROOT, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path) -> None:
    for package in ("peer", "adversary"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "proto" / "decbyzpg", tmp_path / "decbyzpg", ignore=shutil.ignore_patterns("__pycache__"))
    config = tmp_path / "peer" / "engine" / "config.py"
    config.write_text(config.read_text() + "\nfrom peer.lab import results  # an upward import\n")
    result = lint(tmp_path, tmp_path)
    assert result.returncode != 0
    assert "peer.engine is not allowed to import peer.lab" in result.stdout
    assert "peer.engine.config -> peer.lab.results" in result.stdout
