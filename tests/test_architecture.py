"""Imports follow the layers (import-linter contracts in pyproject.toml), code is ruff-clean,
and the daemon process never imports onnxruntime (its idle budget is 80 MB)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def test_import_layers() -> None:
    proc = subprocess.run([_tool("lint-imports"), "--config", str(REPO / "pyproject.toml")],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "broken" not in proc.stdout.lower() or "0 broken" in proc.stdout.lower()


def test_ruff_clean() -> None:
    proc = subprocess.run([_tool("ruff"), "check", "edged", "tools", "tests", "bench"],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_mypy_clean(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Type hints are checked, not decoration (generated folders are excluded in pyproject)."""
    proc = subprocess.run([_tool("mypy"), "--cache-dir", str(tmp_path / "mypy"), "edged"],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_daemon_modules_do_not_import_onnxruntime() -> None:
    code = ("import sys, edged.daemon, edged.service.wiring, edged.manager.manager; "
            "bad = [m for m in ('onnxruntime', 'onnx', 'tensorrt') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "", f"the daemon process imports {out}"


def test_ci_runs_the_slow_tests() -> None:
    """``slow`` is for a quick round while working (``-m "not slow"``); CI runs everything:
    neither the pytest options nor the CI command deselect by marker."""
    addopts = next(line for line in (REPO / "pyproject.toml").read_text().splitlines()
                   if line.startswith("addopts"))
    assert "-m" not in addopts.split("=", 1)[1].replace('"', " ").split(), addopts
    ci = (REPO / ".ci" / "run").read_text()
    assert "exec bash tools/test.sh\n" in ci, ci
    pytest_line = next(line for line in (REPO / "tools" / "test.sh").read_text().splitlines()
                       if "-m pytest" in line)
    assert pytest_line.split("-m pytest", 1)[1].split() == ['"$@"'], pytest_line
