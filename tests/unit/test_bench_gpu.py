"""bench/gpu.py skips cleanly where there is no CUDA EP (here and in CI): exit 0, says why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_gpu_bench_skips_without_a_cuda_ep(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    from bench.gpu import cuda_available

    if cuda_available() is None:
        pytest.skip("a CUDA EP and a GPU are here: the benchmark would really run")
    out = tmp_path / "GPU_RESULTS.md"
    res = subprocess.run([sys.executable, "-m", "bench.gpu", "--out", str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "bench.gpu: skipped:" in res.stdout and not out.exists()
