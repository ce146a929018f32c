"""Install time of the PP-OCR rec model (10.9 MB): streamed through the client vs a local copy
on the device (InstallFrom a path), against the real daemon; each includes sha256
verification, inspection of the artifact and the atomic manifest switch."""

from __future__ import annotations

import hashlib
import time

from bench.common import REPO, Section, ms, percentiles


def run(quick: bool) -> Section:
    from daemon_harness import DaemonProcess

    n = 3 if quick else 10
    model = REPO / "models" / "ppocr-rec.onnx"
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    sec = Section("Install time (PP-OCR rec, 10.9 MB)",
                  method=f"n={n} installs each (a new version every time), wall time of the "
                         "client call; sha256 given, so the daemon verifies it.")
    d = DaemonProcess({"preload": {"enabled": False}}).start()
    try:
        with d.client() as c:
            stream, local = [], []
            for _ in range(n):
                t = time.perf_counter()
                c.install("rec", model, sha256=sha, tier="storage")
                stream.append(time.perf_counter() - t)
                t = time.perf_counter()
                c.install_from("rec", str(model), sha256=sha, tier="storage")
                local.append(time.perf_counter() - t)
    finally:
        d.stop()
        d.cleanup()
    s50 = percentiles(stream)[0]
    l50 = percentiles(local)[0]
    sec.add("streamed install (client-streaming RPC, 1 MiB chunks)", "info",
            f"p50 {ms(s50)}, max {ms(max(stream))}", None)
    sec.add("local install (InstallFrom a path on the device)", "info",
            f"p50 {ms(l50)}, max {ms(max(local))}", None, f"stream/local {s50 / l50:.2f}x")
    return sec
