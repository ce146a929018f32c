"""The README's Python example, run as written against a real daemon with the demo models."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_readme_python_example_runs(client, daemon, demo_models) -> None:  # type: ignore[no-untyped-def]
    text = (REPO / "README.md").read_text()
    section = text[text.index("## From Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "the README's Python section has no python block"
    # (as tools/demo.sh installs them)
    client.install("silero-vad", demo_models["silero-vad"], warmup_shapes={"input": (1, 512)})
    client.install("ppocr-det", demo_models["ppocr-det"], warmup_shapes={"x": (1, 3, 64, 64)})
    env = dict(os.environ, EDGED_TARGET=daemon.target, PYTHONPATH=str(REPO))
    run = subprocess.run([sys.executable, "-c", code.group(1)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("speech probability ")
    assert 0.0 <= float(lines[0].split()[-1]) <= 1.0
    assert lines[1] == "text heat map (1, 1, 640, 640) lanes opened 2", lines
