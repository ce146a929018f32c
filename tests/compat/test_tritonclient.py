"""The unchanged tritonclient.grpc against the real daemon (in a child process), plain and
through system shared memory, with outputs equal to in-process ONNX Runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ortref import run_onnx

CHILD = Path(__file__).with_name("triton_child.py")




@pytest.mark.parametrize("use_shm", [False, True], ids=["grpc", "shared-memory"])
def test_tritonclient_runs_the_demo_models(daemon, demo_models, tmp_path, use_shm) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    feeds = {"x": rng.random((1, 3, 64, 64), dtype=np.float32)}
    with daemon.client() as c:
        c.install("ppocr-det", demo_models["ppocr-det"], warmup_shapes={"x": (1, 3, 64, 64)})
    np.savez(tmp_path / "in.npz", **feeds)
    args = [sys.executable, str(CHILD), daemon.target, "ppocr-det", str(tmp_path / "in.npz"),
            str(tmp_path / "out.npz")] + (["--shm"] if use_shm else [])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["live"] and report["ready"] and report["model_ready"]
    assert report["server"]["name"] == "edged"
    assert "system_shared_memory" in report["server"]["extensions"]
    assert report["metadata"]["inputs"][0]["name"] == "x"
    assert report["metadata"]["platform"] == "onnxruntime_onnx"
    got = dict(np.load(tmp_path / "out.npz"))
    want = run_onnx(demo_models["ppocr-det"], feeds)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    assert report["missing_model_error"] == "StatusCode.NOT_FOUND"
    assert report["ready_after_unload"] == []
    assert report["ready_after_load"] == ["ppocr-det"]
    if use_shm:
        assert report["shm_status"] == ["in0", "out0"]


VAD_CHILD = Path(__file__).with_name("triton_vad_child.py")


def test_tritonclient_on_a_multi_input_model(daemon, demo_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """silero-vad through the unchanged tritonclient: ``input`` in shared memory with ``state``
    and ``sr`` inline (raw contents for those two only, as Triton accepts), ``stateN`` into
    shared memory, output selection, a wrong shape, unknown regions."""
    rng = np.random.default_rng(7)
    feeds = {"input": rng.standard_normal((1, 512), dtype=np.float32),
             "state": rng.standard_normal((2, 1, 128), dtype=np.float32) * 0.1,
             "sr": np.array(16000, dtype=np.int64)}
    with daemon.client() as c:
        c.install("vad", demo_models["silero-vad"],
                  warmup_shapes={"input": (1, 512)})
    np.savez(tmp_path / "in.npz", **feeds)
    proc = subprocess.run([sys.executable, str(VAD_CHILD), daemon.target, "vad",
                           str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    got = dict(np.load(tmp_path / "out.npz"))
    want = run_onnx(demo_models["silero-vad"], feeds)
    np.testing.assert_array_equal(got["mixed.output"], want["output"])
    np.testing.assert_array_equal(got["mixed.stateN"], want["stateN"])
    np.testing.assert_array_equal(got["selected.output"], want["output"])
    assert report["mixed_outputs"] == ["output", "stateN"]
    assert report["selected_outputs"] == ["output"]  # only what was asked for
    assert report["wrong_shape"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "input 'state'" in report["wrong_shape"]["message"]
    assert report["unregister_unknown"] is None  # success, as Triton answers
    assert report["status_unknown"]["status"] == "StatusCode.NOT_FOUND"
    assert report["regions_after"] == []
