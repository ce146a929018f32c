"""Version switch under steady traffic (SPEC: zero failed requests; p99 during the switch at most
twice steady p99).

Why this shape: a switch warms the new version in a fresh worker (process start, ONNX Runtime
session, warm-up run), commits the manifest, then retires the old worker once its requests end.
On a small device the warm-up competes with live traffic for the same cores, so the number that
matters is the tail latency of the requests that overlapped a switch, next to the tail of the
same traffic when nothing switches, in the same run. Every request of every client is timed and
kept; the served version comes back in each OIP response, so the bench also counts requests that
began after ``Activate`` returned yet were still served by the old version.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import REPO, Section, ms, percentiles
from bench.latency import demo_inputs

MODEL = "ppocr-cls"
CLIENTS = 4
PRE_S, POST_S = 0.05, 0.5      # a switch window: from just before Activate to a bit after
GUARD_S = 1.0                  # steady samples keep this far from any switch window


@dataclass
class Sample:
    t0: float
    t1: float
    version: str   # served version ("" when the request failed)
    error: str     # "" when the request succeeded


def second_version(src: Path, dst: Path) -> Path:
    """The same graph re-serialized with another doc string: new bytes (so a new sha256 in the
    content-addressed store), identical signature, so ``Activate`` needs no consent."""
    import onnx

    m = onnx.load(str(src))
    m.doc_string = (m.doc_string or "") + " [edged bench: version 2]"
    onnx.save(m, str(dst))
    return dst


def traffic(target: str, feeds: dict[str, np.ndarray], stop: threading.Event,
            out: list[Sample]) -> None:
    """One client on its own channel, back-to-back requests; every exception is a failure."""
    from edged.client import EdgedClient, tensors

    with EdgedClient(target) as c:
        req = tensors.infer_request(MODEL, feeds, None, "")
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                resp = c.oip.ModelInfer(req, timeout=30)
                out.append(Sample(t0, time.perf_counter(), resp.model_version, ""))
            except Exception as exc:  # noqa: BLE001 - every exception is a failed request
                out.append(Sample(t0, time.perf_counter(), "", f"{type(exc).__name__}: {exc}"))


def overlaps(s: Sample, lo: float, hi: float) -> bool:
    return s.t0 < hi and s.t1 > lo


def run(quick: bool) -> Section:
    from daemon_harness import DaemonProcess

    switches, lead_s, gap_s = (1, 1.5, 1.5) if quick else (6, 4.0, 3.0)
    feeds = demo_inputs()[MODEL][0]
    sec = Section(f"Version switch under steady traffic ({MODEL})")
    d = DaemonProcess({"preload": {"enabled": False}}).start()
    samples: list[list[Sample]] = [[] for _ in range(CLIENTS)]
    windows: list[tuple[float, float, float, str]] = []  # call, return, activate s, new version
    active_after: list[int] = []
    try:
        with tempfile.TemporaryDirectory() as tmp, d.client() as admin:
            src = REPO / "models" / f"{MODEL}.onnx"
            v1 = admin.install(MODEL, src, tier="swap").version
            v2 = admin.install(MODEL, second_version(src, Path(tmp) / "v2.onnx"),
                               activate=False).version
            admin.load(MODEL)
            for _ in range(20):
                admin.infer(MODEL, feeds)
            stop = threading.Event()
            threads = [threading.Thread(target=traffic, args=(d.target, feeds, stop, s),
                                        daemon=True) for s in samples]
            started = time.perf_counter()
            for t in threads:
                t.start()
            time.sleep(lead_s)
            for i in range(switches):
                new = v2 if i % 2 == 0 else v1
                t_call = time.perf_counter()
                admin.activate(MODEL, new)
                t_ret = time.perf_counter()
                windows.append((t_call, t_ret, t_ret - t_call, str(new)))
                active_after.append(admin.get_model(MODEL).active_version)
                time.sleep(gap_s)
            stop.set()
            for t in threads:
                t.join(60)
            switch_events = sum(ev.kind == "version_switch" for ev in admin.events())
            loaded = [(m.name, m.version) for m in admin.status().loaded]
    finally:
        d.stop()
        d.cleanup()

    allr = [s for per in samples for s in per if s.t0 >= started + 0.5]  # skip connect/warm-up
    failed = [s for s in allr if s.error]
    in_switch = [s for s in allr
                 if any(overlaps(s, c - PRE_S, r + POST_S) for c, r, _, _ in windows)]
    steady = [s for s in allr if not s.error and not any(
        overlaps(s, c - PRE_S - GUARD_S, r + POST_S + GUARD_S) for c, r, _, _ in windows)]
    sw_ok = [s.t1 - s.t0 for s in in_switch if not s.error]
    st50, st99 = percentiles([s.t1 - s.t0 for s in steady])
    sw50, sw99 = percentiles(sw_ok)
    # New requests go to the new version at once: a request that starts after Activate returned
    # and before the next switch began must be served by the new version.
    stale = 0
    for i, (_, ret, _, new) in enumerate(windows):
        nxt = windows[i + 1][0] if i + 1 < len(windows) else float("inf")
        stale += sum(1 for s in allr if not s.error and ret < s.t0 and s.t1 < nxt
                     and s.version != new)
    act = [w[2] for w in windows]
    expected = [int(w[3]) for w in windows]
    sec.method = (
        f"Real demo model {MODEL} installed as v{v1} and v{v2} (v{v2}: the same graph "
        f"re-serialized, new sha256, same signature), swap tier, loaded; preloading off. "
        f"{CLIENTS} client threads, each on its own channel over the Unix socket, send "
        f"back-to-back ModelInfer requests for {time.perf_counter() - started:.0f} s while "
        f"{switches} Activate calls alternate v{v2}/v{v1}, {gap_s:.0f} s apart after "
        f"{lead_s:.0f} s of steady traffic. A switch window runs from {PRE_S * 1e3:.0f} ms before "
        f"Activate to {POST_S * 1e3:.0f} ms after it returns; 'during the switch' = requests "
        f"overlapping any window; 'steady' = requests at least {GUARD_S:.0f} s clear of every "
        f"window (before, between and after the switches, same run).")
    sec.add("failed requests during the whole run", "0",
            f"{len(failed)} of {len(allr)}", not failed,
            "; ".join(sorted({s.error[:120] for s in failed}))[:400])
    sec.add("p99 during the switch vs steady p99", "<= 2x steady",
            f"{ms(sw99)} vs {ms(st99)} = {sw99 / st99:.2f}x",
            bool(sw_ok) and sw99 <= 2 * st99,
            f"n={len(sw_ok)} in {len(windows)} switch windows, n={len(steady)} steady; "
            f"p50 {ms(sw50)} vs {ms(st50)}; slowest during a switch {ms(max(sw_ok, default=0))}")
    sec.add("Activate call (warm new worker + commit + retire)", "info",
            f"p50 {ms(percentiles(act)[0])}, max {ms(max(act))}", None,
            f"windows total {sum(act) + len(act) * (PRE_S + POST_S):.2f} s")
    sec.add("switches committed / served by the new version at once", "all; 0 stale",
            f"{sum(a == x for a, x in zip(active_after, expected, strict=True))}/{len(windows)} "
            f"active as "
            f"asked, {switch_events} version_switch events, {stale} stale requests",
            active_after == expected and stale == 0 and switch_events >= len(windows),
            f"loaded at the end: {', '.join(f'{n}:v{v}' for n, v in loaded)}")
    return sec
