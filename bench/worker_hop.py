"""What the worker hop costs: ONNX Runtime in-process vs ``WorkerPool.infer`` on the same model.

    .venv/bin/python bench/worker_hop.py [--n 2000]

Both run with the same session options (1 intra-op and 1 inter-op thread, CPU), in
alternating blocks of 100 calls, so that background load on the box hits both alike while each
runs with warm caches (alternating call by call would make each evict the other's). Prints
p50/p99 per model and the hop (pool minus in-process, at each percentile), plus a bare channel
round trip ("ping"). ppocr-cls at 48x192 sends 110 KB: over the 64 KB threshold, so it goes
through a lane.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
BLOCK = 100
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import modelgen  # noqa: E402

from edged.engines.base import EngineOptions  # noqa: E402
from edged.engines.workers import WorkerPool  # noqa: E402


def _cases(tmp: Path) -> list[tuple[str, Path, dict[str, np.ndarray], EngineOptions]]:
    rng = np.random.default_rng(0)
    return [
        ("add (1x4)", modelgen.add_model(tmp / "add.onnx"), {"x": np.ones((1, 4), np.float32)},
         EngineOptions()),
        ("silero-vad", REPO / "models/silero-vad.onnx",
         {"input": rng.standard_normal((1, 512), dtype=np.float32) * 0.1,
          "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000)},
         EngineOptions(warmup_shapes={"input": (1, 512)})),
        ("ppocr-cls", REPO / "models/ppocr-cls.onnx",
         {"x": rng.standard_normal((1, 3, 48, 192), dtype=np.float32)}, EngineOptions()),
    ]


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * q))] * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    n = ap.parse_args().n
    pool = WorkerPool()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for name, path, feeds, opts in _cases(Path(tmp)):
                pool.load(name, path, "onnx", opts)
                so = ort.SessionOptions()
                so.intra_op_num_threads = so.inter_op_num_threads = 1
                sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
                local: list[float] = []
                remote: list[float] = []
                for block in range(n // BLOCK + 1):
                    for fn, out in ((partial(sess.run, None, feeds), local),
                                    (partial(pool.infer, name, feeds), remote)):
                        for _ in range(BLOCK):
                            t0 = time.perf_counter()
                            fn()
                            if block:  # the first block of each is a warm-up
                                out.append(time.perf_counter() - t0)
                rows.append((name, local, remote))
                pool.unload(name)
            pool.load("ping", modelgen.add_model(Path(tmp) / "ping.onnx"), "onnx")
            pings = [pool.ping("ping") for _ in range(n + n // 10)][n // 10:]
        finally:
            pool.close()
    print(f"{'model':12s} {'in-process p50':>15s} {'p99':>8s} {'pool p50':>9s} {'p99':>8s}"
          f" {'hop p50':>8s} {'p99':>8s}   (us, n={n})")
    for name, local, remote in rows:
        print(f"{name:12s} {_pct(local, .5):15.0f} {_pct(local, .99):8.0f} "
              f"{_pct(remote, .5):9.0f} {_pct(remote, .99):8.0f} "
              f"{_pct(remote, .5) - _pct(local, .5):8.0f} "
              f"{_pct(remote, .99) - _pct(local, .99):8.0f}")
    print(f"{'ping':12s} {'':15s} {'':8s} {_pct(pings, .5):9.0f} {_pct(pings, .99):8.0f}"
          "   (channel round trip, no model)")


if __name__ == "__main__":
    main()
