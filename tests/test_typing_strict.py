"""The engines and telemetry packages pass ``mypy --strict`` (issue 15: typed seams; the rest
of ``edged`` is checked in the default mode by test_architecture.py until it passes too)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from test_architecture import REPO, _tool

STRICT = ["edged/engines", "edged/telemetry"]


def test_mypy_strict_on_engines_and_telemetry(tmp_path: Path) -> None:
    proc = subprocess.run([_tool("mypy"), "--strict", "--cache-dir", str(tmp_path / "mypy"),
                           *STRICT], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
