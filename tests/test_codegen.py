"""The committed generated code is exactly what tools/gen_protos.py produces now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "tools/gen_protos.py"), "--out",
                           str(tmp_path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "gen_protos wrote nothing"
    stale = [str(rel) for rel in generated if not (REPO / rel).exists()
             or (REPO / rel).read_bytes() != (tmp_path / rel).read_bytes()]
    assert not stale, f"generated code is stale, run tools/gen_protos.py: {stale}"
    committed = {p.relative_to(REPO) for pkg in ("edged/v1", "edged/oip")
                 for p in (REPO / pkg).glob("*_pb2*.py*")}
    extra = committed - set(generated)
    assert not extra, f"generated files without a proto: {sorted(map(str, extra))}"
