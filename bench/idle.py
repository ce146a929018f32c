"""Daemon idle footprint (RSS, CPU with no model loaded) and Status latency."""

from __future__ import annotations

import time

import psutil

from bench.common import Section, ms, percentiles, time_calls


def run(quick: bool) -> Section:
    from daemon_harness import DaemonProcess

    sec = Section("Idle footprint and Status latency",
                  method="The real daemon on a Unix socket with its default config (telemetry "
                         "every 2 s); RSS of the daemon process after 3 s idle; CPU over an idle "
                         "window; Status called sequentially from one client.")
    d = DaemonProcess({"telemetry": {"interval_s": 2.0}}).start()
    try:
        proc = psutil.Process(d.proc.pid)
        time.sleep(1.5 if quick else 3)
        rss = proc.memory_info().rss
        window = 3 if quick else 20
        proc.cpu_percent(None)
        time.sleep(window)
        cpu = proc.cpu_percent(None)
        sec.add("daemon idle RSS, no model loaded", "< 80 MB", f"{rss / 1e6:.1f} MB",
                rss < 80e6)
        sec.add(f"daemon idle CPU over {window} s", "< 1%", f"{cpu:.2f}%", cpu < 1.0)
        n = 200 if quick else 2000
        with d.client() as c:
            samples = time_calls(c.status, n)
        p50, p99 = percentiles(samples)
        sec.add(f"Status latency, 0 models installed (n={n}, 20 warm-up)", "p99 < 5 ms",
                f"p50 {ms(p50)}, p99 {ms(p99)}", p99 < 0.005)
    finally:
        d.stop()
        d.cleanup()
    return sec
