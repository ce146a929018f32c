"""The daemon's own RSS under large plain (non-shared-memory) requests.

Every request carries PP-OCR det's tensors through gRPC itself (4.9 MB in, 1.6 MB out), so each
one makes the daemon allocate and free several multi-megabyte buffers (the received message, the
tensor handed to the worker, the reply). With glibc's defaults that memory stays with the
process: a thread per core gets its own malloc arena, and freeing one large mmap'd buffer
raises the mmap threshold so the next ones come from those arenas and fragment them. The
daemon fixes both for itself at start (edged.malloc_tuning) and the unit sets them too.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from bench.common import Section
from bench.latency import det_shaped_model

MB = 1e6
BOUND = 32 * MB  # SPEC: within 32 MB of idle after 1000 det-sized plain requests (2 cores)


def _run(env: dict[str, str], n: int, clients: int) -> tuple[float, float, float, float]:
    """(idle RSS, RSS after n requests, peak RSS during them, daemon RSS in status)."""
    from daemon_harness import DaemonProcess

    d = DaemonProcess({"telemetry": {"interval_s": 1.0}}, env=env).start()
    try:
        proc = psutil.Process(d.proc.pid)
        with tempfile.TemporaryDirectory() as tmp, d.client(shm_threshold=None) as c:
            c.install("det-shaped", det_shaped_model(Path(tmp) / "det-shaped.onnx"))
            c.load("det-shaped")
            feeds = {"x": np.random.default_rng(0).random((1, 3, 640, 640), np.float32)}
            c.infer("det-shaped", feeds)
            time.sleep(2)
            idle = proc.memory_info().rss
            peak = [idle]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.05):
                    peak[0] = max(peak[0], proc.memory_info().rss)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()

            def client(k: int) -> None:
                with d.client(shm_threshold=None) as own:
                    for _ in range(k):
                        own.infer("det-shaped", feeds)

            threads = [threading.Thread(target=client, args=(n // clients,))
                       for _ in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            stop.set()
            sampler.join()
            time.sleep(2)
            after = proc.memory_info().rss
            status = c.status()
            shown = float(status.snapshot.process_rss_bytes)
        return idle, after, max(peak[0], after), shown
    finally:
        d.stop()
        d.cleanup()


def run(quick: bool) -> Section:
    sec = Section("Daemon RSS under large plain requests",
                  method="The real daemon on a Unix socket; a model with PP-OCR det's tensors "
                         "(1x3x640x640 in, 1x1x640x640 out, a channel mean) loaded; requests "
                         "through edged.client with shared memory off (every byte through "
                         "gRPC), from 1 client and from 4 concurrent clients. Idle = the "
                         "daemon's RSS after install, load and one request; after = 2 s after "
                         "the last request.")
    n = 200 if quick else 1000
    for clients in (1, 4):
        idle, after, peak, shown = _run({}, n, clients)
        sec.add(f"daemon RSS growth after {n} det-sized plain requests, {clients} client(s)",
                "<= 32 MB over idle (2 cores)",
                f"idle {idle / MB:.1f} MB, after {after / MB:.1f} MB (+{(after - idle) / MB:.1f}"
                f" MB), peak {peak / MB:.1f} MB", after - idle <= BOUND,
                f"status shows daemon RSS {shown / MB:.1f} MB" if shown else "")
    return sec
