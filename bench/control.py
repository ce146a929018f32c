"""Control plane with 200 installed models: Status, capacity check and selection latency.

Each is a real RPC over the Unix socket; the no-op grpcio floor of the latency section is the
part any Python gRPC call pays, so the rows also give the round trip minus that floor."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import Section, ms, percentiles, time_calls
from bench.latency import floor


def run(quick: bool) -> Section:
    import modelgen
    from daemon_harness import DaemonProcess

    models, n = (50, 200) if quick else (200, 2000)
    sec = Section(f"Control plane with {models} installed models",
                  method=f"{models} distinct tiny ONNX models installed (tasks: demo), 5 of them "
                         f"loaded; n={n} sequential calls per row after 20 warm-up calls.")
    fl50 = percentiles(floor(n))[0]
    d = DaemonProcess({"preload": {"enabled": False}}).start()
    try:
        with tempfile.TemporaryDirectory() as tmp, d.client() as c:
            for i in range(models):
                path = modelgen.add_model(Path(tmp) / f"m{i}.onnx", offset=float(i))
                c.install(f"m{i:03d}", path, tasks=["demo"], quality=(i % 10) / 10)
            for i in range(5):
                c.load(f"m{i:03d}")
            rows = {"Status": (lambda: c.status(), "p99 < 5 ms", 0.005),
                    "Check (capacity dry run)": (lambda: c.check("m150" if models > 150
                                                                 else "m040"), "< 1 ms", 0.001),
                    "Select (task over all models)": (lambda: c.select("demo", "speed"),
                                                      "< 1 ms", 0.001)}
            for what, (fn, target, limit) in rows.items():
                p50, p99 = percentiles(time_calls(fn, n))
                judged = p99 if what == "Status" else p50 - fl50
                sec.add(f"{what}, {models} models", target,
                        f"p50 {ms(p50)}, p99 {ms(p99)}; minus the {ms(fl50)} gRPC floor: "
                        f"{ms(p50 - fl50)}", judged < limit,
                        "judged on p99" if what == "Status" else "judged on p50 - floor")
    finally:
        d.stop()
        d.cleanup()
    return sec
