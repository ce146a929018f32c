"""The gRPC path (``lanes=False``): per-model concurrency and the client's shared-memory threshold.

    python -m bench --only grpc_path [--quick]    (or: python -m bench.grpc_path)

1. 8 client threads on one model over plain gRPC, for each ``engines.per_model_concurrency``
   in CONCURRENCY (one daemon each): throughput and p50/p99, against 8 threads on one
   in-process session. Chooses the default per-model concurrency.
2. Plain gRPC vs the shared-memory extension for one float32 input (and the same output: an
   identity model) from 16 KB to 8 MB, alternating blocks in one daemon. The crossover is the
   client's default ``shm_threshold`` (edged/client/client.py).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO, Section, ms, percentiles, time_alternating
from bench.lane import _throughput
from bench.latency import demo_inputs, session

CONCURRENCY = (1, 2, 4, 8)
SIZES_KB = (16, 32, 64, 128, 184, 256, 512, 1024, 2048, 8192)


def concurrency(quick: bool, model: str = "ppocr-cls") -> list[str]:
    from daemon_harness import DaemonProcess

    path = REPO / "models" / f"{model}.onnx"
    feeds, shapes = demo_inputs()[model]
    secs = 3.0 if quick else 6.0
    sess = session(path)
    tin, sin = _throughput([lambda: sess.run(None, feeds)] * 8, secs)
    i50, i99 = percentiles(sin)
    rows = [f"| {model}, 8 threads | calls/s | p50 / p99 |", "| --- | --- | --- |",
            f"| in-process, one session | {tin:.0f}/s | {ms(i50)} / {ms(i99)} |"]
    for n in CONCURRENCY:
        d = DaemonProcess({"engines": {"per_model_concurrency": n},
                           "preload": {"enabled": False}})
        d.start()
        try:
            with d.client(lanes=False) as c:
                c.install(model, path, warmup_shapes=shapes)
                c.load(model)
            clients = [d.client(lanes=False) for _ in range(8)]
            calls: list[Callable[[], object]] = []
            for cl in clients:

                def call(cl: Any = cl) -> object:
                    return cl.infer(model, feeds)

                calls.append(call)
            try:
                t, s = _throughput(calls, secs)
            finally:
                for cl in clients:
                    cl.close()
        finally:
            d.stop()
            d.cleanup()
        p50, p99 = percentiles(s)
        rows.append(f"| gRPC, per_model_concurrency {n} | {t:.0f}/s ({t / tin:.2f}x) | "
                    f"{ms(p50)} / {ms(p99)} |")
    return rows


def crossover(quick: bool) -> list[str]:
    import onnx
    from daemon_harness import DaemonProcess
    from modelgen import identity_model

    rows = ["| input (= output) | gRPC plain p50 / p99 | gRPC shm p50 / p99 | shm / plain |",
            "| --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory(prefix="xover-", dir="/tmp") as tmp:
        path = identity_model(Path(tmp) / "id.onnx", onnx.TensorProto.FLOAT, ["n"])
        d = DaemonProcess({"preload": {"enabled": False}})
        d.start()
        try:
            with d.client(lanes=False, shm_threshold=None) as plain, \
                    d.client(lanes=False, shm_threshold=0) as shm:
                plain.install("id", path)
                plain.load("id")
                for kb in SIZES_KB:
                    x = {"x": np.random.default_rng(0).random(kb * 256, dtype=np.float32)}
                    n = 60 if quick else (300 if kb <= 1024 else 100)

                    def plain_call(x: dict[str, np.ndarray] = x) -> object:
                        return plain.infer("id", x)

                    def shm_call(x: dict[str, np.ndarray] = x) -> object:
                        return shm.infer("id", x)

                    got = time_alternating({"plain": plain_call, "shm": shm_call}, n, block=10)
                    p, q = percentiles(got["plain"]), percentiles(got["shm"])
                    rows.append(f"| {kb} KB | {ms(p[0])} / {ms(p[1])} | {ms(q[0])} / "
                                f"{ms(q[1])} | {q[0] / p[0]:.2f} |")
        finally:
            d.stop()
            d.cleanup()
    return rows


def run(quick: bool) -> Section:
    sec = Section("The gRPC path: per-model concurrency and the shared-memory threshold",
                  method=f"`python -m bench.grpc_path`, {os.cpu_count()} cores; clients with "
                         "lanes=False.")
    sec.tables.append("\n".join(concurrency(quick)))
    sec.tables.append("\n".join(crossover(quick)))
    return sec


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "tests"))
    print(run("--quick" in sys.argv).markdown())
