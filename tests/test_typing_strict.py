"""All of ``edged`` passes ``mypy --strict`` (issue 15: typed seams — Protocols for the pool,
event sink, sampler, policy and catalog — so that mypy follows a request from the servicer into
the engine worker). Generated code is excluded in pyproject.toml; the servicers may subclass
grpc's untyped classes (an override there says why)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from test_architecture import REPO, _tool

STRICT = ["edged"]


def test_mypy_strict_on_edged(tmp_path: Path) -> None:
    proc = subprocess.run([_tool("mypy"), "--strict", "--cache-dir", str(tmp_path / "mypy"),
                           *STRICT], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
