"""Engine lifecycle against the real daemon: load time, memory estimates, unload, start-up.

- Load time: an edged load spawns a fresh worker interpreter, imports onnxruntime there,
  creates the session and runs a warm-up inference. A bare ``InferenceSession()`` in a warm
  process would flatter the direct side, so the direct equivalent does the same work in a fresh
  ``python -c`` (interpreter, import, session, one warm-up run on the daemon's own warm-up
  feeds), timed from Popen to its reply; session + warm-up alone is given too.
- Memory: the daemon's measured footprint is its worker's RssAnon after warm-up and malloc_trim
  (a dedicated worker, Python included): what unloading should give back to MemAvailable, what
  the estimate predicts and what the unload row is held to.
- Start-up: time to health SERVING (the ram tier loads before SERVING) and RSS of the daemon
  and its workers, beside a KServe ModelServer on the same ONNX Runtime sessions.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.common import REPO, Section
from bench.latency import demo_inputs

MODELS = REPO / "models"
MB = 1e6
SETTLE_S = 1.2  # > vm.stat_interval (1 s): the vmstat counters behind MemAvailable fold in
DIRECT = r'''
import sys, time, json
t0 = time.perf_counter()
import numpy as np
import onnxruntime as ort
t1 = time.perf_counter()
so = ort.SessionOptions()
so.intra_op_num_threads = so.inter_op_num_threads = 1
sess = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
t2 = time.perf_counter()
sess.run(None, dict(np.load(sys.argv[2])))
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "session": t2 - t1, "warmup": t3 - t2}), flush=True)
'''
KSERVE_MULTI = r'''
import sys
sys.path.insert(0, sys.argv[1])
from kserve import ModelServer
from kserve_server import OnnxModel
models = [OnnxModel(n, p) for n, p in zip(sys.argv[4::2], sys.argv[5::2])]
ModelServer(http_port=int(sys.argv[2]), grpc_port=int(sys.argv[3]), workers=1,
            enable_docs_url=False).start(models)
'''


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Until the worker has exited and been reaped: its memory is only back then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            psutil.Process(pid).status()
        except psutil.NoSuchProcess:
            return
        time.sleep(0.01)


def tree_rss(pid: int) -> tuple[int, int, int]:
    """RSS of the process, summed RSS of its descendants, summed RssAnon of descendants."""
    from edged.engines.procfs import read_status

    p = psutil.Process(pid)
    kids = p.children(recursive=True)
    anon = sum(read_status(k.pid).get("RssAnon", 0) for k in kids)
    return p.memory_info().rss, sum(k.memory_info().rss for k in kids), anon


def warm_feeds(path: Path, warm: dict[str, tuple[int, ...]], out: Path) -> Path:
    """The exact feeds of the daemon's warm-up (edged's own shape and fill rules), as .npz."""
    from edged.engines.base import EngineOptions
    from edged.engines.onnxruntime import OrtSession
    from edged.engines.session import warmup_feeds, warmup_shapes

    sess: Any = OrtSession(path, EngineOptions(warmup_shapes=warm))
    feeds: dict[str, Any] = warmup_feeds(sess, warmup_shapes(sess, warm))
    np.savez(out, **feeds)
    return out


def fresh_python(args: list[str]) -> tuple[float, str]:
    """Wall time from Popen to the child's first stdout line (or its exit), and that line."""
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    wall = time.perf_counter() - t
    p.wait(60)
    return wall, line


def active(c: Any, name: str) -> Any:
    m = c.get_model(name)
    return next(v for v in m.versions if v.version == m.active_version)


def run(quick: bool) -> Section:
    import modelgen
    from daemon_harness import DaemonProcess

    from edged.engines.procfs import read_status
    from edged.errors import EdgedError

    n, reps = (1, 1) if quick else (5, 3)
    sec = Section(
        "Engines: load time, memory estimates, unload, start-up vs KServe",
        method=f"Real daemon, swap tier, preloading off, ORT with 1 intra-op + 1 inter-op "
               f"thread (the default) everywhere. Load: one untimed load per model first, "
               f"then n={n} rounds alternating edged (client.load() round trip after unload, "
               "old worker reaped), direct (fresh `python -c`: import onnxruntime, session, "
               "one warm-up run on the daemon's warm-up feeds; Popen to reply) and edged's "
               "WorkerPool in-process; medians. Memory: estimated bytes at install vs "
               "measured bytes after load. Unload: MemAvailable (median of 5 reads over "
               f"1 s) {SETTLE_S} s after unload + worker reaped vs {SETTLE_S} s after load, "
               f"{reps} repeats, median, corrected for the other processes' RssAnon and "
               "Shmem (full run only). Start-up: "
               "Popen to health SERVING (50 ms polling), RSS 1 s after ready. The machine is "
               "shared: MemAvailable is system-wide.")
    d = DaemonProcess({"preload": {"enabled": False}})
    tmp = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    try:
        with d.start().client(timeout=120) as c:
            names, feeds = list(demo_inputs()), {}
            for name, (_, warm) in demo_inputs().items():
                c.install(name, MODELS / f"{name}.onnx", warmup_shapes=warm)
                feeds[name] = warm_feeds(MODELS / f"{name}.onnx", warm, tmp / f"{name}.npz")
            big = [] if quick else ["gen-200m"]
            try:
                for m in big:
                    gen = modelgen.big_weights_model(tmp / "gen.onnx", 200 << 20)
                    c.install(m, gen, extra_files=[gen.with_name(gen.name + ".data")])
            except EdgedError as exc:
                sec.add("generated 200 MiB model", "info", f"not measured: install: {exc}", None)
                big = []
            estimates = {m: active(c, m).estimated_bytes for m in names + big}
            status = {}
            for m in names + big:
                pid = c.load(m).model.worker_pid
                status[m] = read_status(pid)
                c.unload(m)
                wait_gone(pid)
            timed = names[:1] if quick else names  # --quick: silero-vad's load only
            load_rows(sec, c, timed, feeds, n)
            spare_load_rows(sec, timed, feeds, n)
            memory_rows(sec, c, names, big, estimates, status)
            if not quick:  # MemAvailable needs a settled machine and repeats: full run only
                unload_rows(sec, c, ["ppocr-rec", "ppocr-det", *big], reps, d.proc.pid)
    finally:
        d.stop(expect_clean=False)
        d.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        startup_rows(sec, quick)
    except (RuntimeError, TimeoutError, AssertionError, OSError) as exc:  # keep the rows above
        last = [ln for ln in str(exc).splitlines() if ln.strip()][-1:] or [type(exc).__name__]
        sec.add("edged start-up / KServe", "measured", f"failed: {last[0][:200]}", False,
                "the daemon did not start or stop cleanly; see the bench's stderr")
    return sec


def spare_load_rows(sec: Section, names: list[str], feeds: dict[str, Path], n: int) -> None:
    """The same loads with ``engines.spare_workers: 1``: a worker is kept started with ONNX
    Runtime imported, so a load is the session, the warm-up and the hops — judged against
    creating the session and warming it up in a process that has ONNX Runtime imported."""
    from daemon_harness import DaemonProcess

    d = DaemonProcess({"preload": {"enabled": False}, "engines": {"spare_workers": 1}})
    try:
        with d.start().client(timeout=120) as c:
            for name, (_, warm) in demo_inputs().items():
                c.install(name, MODELS / f"{name}.onnx", warmup_shapes=warm)
            for name in names:
                c.load(name)  # untimed: the first load of a model pays for page cache
                c.unload(name)
                rt, strict = [], []
                for _ in range(n):
                    time.sleep(1.0)  # let the pool start its next spare
                    t = time.perf_counter()
                    resp = c.load(name)
                    rt.append(time.perf_counter() - t)
                    c.unload(name)
                    wait_gone(resp.model.worker_pid)
                    _, line = fresh_python(["-c", DIRECT, str(MODELS / f"{name}.onnx"),
                                            str(feeds[name])])
                    p = json.loads(line)
                    strict.append(p["session"] + p["warmup"])
                e, sw = med(rt), med(strict)
                sec.add(f"load {name} with a spare worker: edged vs session + warm-up",
                        "<= 1.10x", f"{e:.3f} s vs {sw:.3f} s ({e / sw:.2f}x)", e <= 1.10 * sw,
                        "engines.spare_workers: 1 (off by default: each spare holds ~30 MB); "
                        "the direct side is InferenceSession + one warm-up run timed inside "
                        "a process that has onnxruntime imported")
    finally:
        d.stop(expect_clean=False)
        d.cleanup()


def load_rows(sec: Section, c: Any, names: list[str], feeds: dict[str, Path], n: int) -> None:
    """Three ways per round, alternating: the daemon, the direct child, and edged's WorkerPool
    in this process (the daemon's own code path, whose LoadResult splits worker start from
    session and warm-up: that split is where edged's extra time shows)."""
    from edged.engines.base import EngineOptions
    from edged.engines.workers import WorkerPool

    pool = WorkerPool()
    try:
        for name in names:
            rt, daemon, direct, parts, split = [], [], [], [], []
            opts = EngineOptions(warmup_shapes=demo_inputs()[name][1])
            for _ in range(n):
                t = time.perf_counter()
                resp = c.load(name)
                rt.append(time.perf_counter() - t)
                daemon.append(resp.seconds)  # verify + plan + worker load, inside the daemon
                c.unload(name)
                wait_gone(resp.model.worker_pid)
                wall, line = fresh_python(["-c", DIRECT, str(MODELS / f"{name}.onnx"),
                                           str(feeds[name])])
                direct.append(wall)
                parts.append(json.loads(line))
                r = pool.load(name, MODELS / f"{name}.onnx", "onnx", opts)
                split.append((r.load_seconds - r.session_seconds - r.warmup_seconds,
                              r.session_seconds, r.warmup_seconds))
                pool.unload(name)
                wait_gone(r.pid)
            e, dw, ds = med(rt), med(direct), med(daemon)
            imp, ses, warm = (med([p[k] for p in parts]) for k in ("import", "session",
                                                                     "warmup"))
            w_start, w_ses, w_warm = (med([x[k] for x in split]) for k in range(3))
            sec.add(f"load {name}: edged vs direct (fresh process)", "<= 1.10x",
                    f"{e:.3f} s vs {dw:.3f} s ({e / dw:.2f}x)", e <= 1.10 * dw,
                    f"edged: daemon-side {ds:.3f} + RPC/manifest write {e - ds:.3f} s; its "
                    f"worker path (WorkerPool, same n): start (spawn, interpreter, edged "
                    f"imports, handshake) {w_start:.3f} + session incl. import onnxruntime "
                    f"{w_ses:.3f} + warm-up {w_warm:.3f} s. Direct: interpreter "
                    f"{dw - imp - ses - warm:.3f} + import onnxruntime {imp:.3f} + session "
                    f"{ses:.3f} + warm-up {warm:.3f} s. Against session + warm-up alone (no "
                    f"process, no import: the strict reading) edged is {e / (ses + warm):.1f}x")
    finally:
        pool.close()


def memory_rows(sec: Section, c: Any, names: list[str], big: list[str],
                estimates: dict[str, int], status: dict[str, dict[str, int]]) -> None:
    from edged.engines.estimate import CPU_WORKER_BASE_BYTES as base

    for m in names + big:
        measured, est, st = active(c, m).measured_bytes, estimates[m], status[m]
        err, real = (est - measured) / measured, m in names
        sec.add(f"memory estimate {m}" + ("" if real else " (generated, 200 MiB weights)"),
                "within +-15%" if real else "info",
                f"est {est / MB:.1f} MB vs measured {measured / MB:.1f} MB ({err:+.1%})",
                abs(err) <= 0.15 if real else None,
                f"measured = worker RssAnon after warm-up; worker VmRSS {st['VmRSS'] / MB:.1f}"
                f" MB = RssAnon {st['RssAnon'] / MB:.1f} + file/shmem pages "
                f"{(st['VmRSS'] - st['RssAnon']) / MB:.1f} (shared libs, not counted); less the "
                f"idle-worker base of the estimate ({base / MB:.1f} MB): est "
                f"{(est - base) / MB:.1f} vs measured {(measured - base) / MB:.1f} MB")


def mem_settled(wait: float, skip: set[int]) -> tuple[float, float]:
    """After ``wait`` s, medians of 5 reads over 1 s (freed pages reach the vmstat counters
    behind MemAvailable up to stat_interval, 1 s, later) of MemAvailable and of MemAvailable +
    Shmem + RssAnon of every process not in ``skip``. The machine is shared: the others move
    MemAvailable by tens of MB a second; adding back what they (and tmpfs) hold leaves the
    change that the processes in ``skip`` (daemon, worker) made."""
    from edged.engines.procfs import read_status

    time.sleep(wait)
    pts = []
    for _ in range(5):
        text = Path("/proc/meminfo").read_text()
        avail, shmem = (int(text.split(f"{k}:")[1].split()[0]) * 1024
                        for k in ("MemAvailable", "Shmem"))
        others = 0
        for d in (d for d in os.listdir("/proc") if d.isdigit() and int(d) not in skip):
            with contextlib.suppress(OSError):
                others += read_status(d).get("RssAnon", 0)
        pts.append((avail, avail + shmem + others))
        time.sleep(0.2)
    return med([p[0] for p in pts]), med([p[1] for p in pts])


def unload_rows(sec: Section, c: Any, names: list[str], reps: int, daemon: int) -> None:
    """Raw MemAvailable and MemAvailable corrected for the other processes (mem_point); the
    verdict is on the corrected median, unless even that drifts in the idle second after the
    unload by over a tenth of the footprint: then it is inconclusive."""
    for m in names:
        raw, fixed, drift, taken = [], [], [], []
        before = mem_settled(0.0, {daemon})
        for _ in range(reps):
            pid = c.load(m).model.worker_pid
            skip = {daemon, pid}
            loaded = mem_settled(SETTLE_S, skip)
            c.unload(m)
            wait_gone(pid)
            after = mem_settled(SETTLE_S, skip)
            idle = mem_settled(0.0, skip)
            raw.append(after[0] - loaded[0])
            fixed.append(after[1] - loaded[1])
            drift.append(abs(idle[1] - after[1]))
            taken.append(before[1] - loaded[1])
            before = idle
        fp = active(c, m).measured_bytes
        r, noisy = med(fixed), med(drift) > 0.1 * fp
        sec.add(f"unload {m}: MemAvailable returned / measured footprint", ">= 90%",
                f"{r / MB:.1f} MB / {fp / MB:.1f} MB ({r / fp:.0%})",
                None if noisy else r >= 0.9 * fp,
                ("inconclusive, residual noise too high; " if noisy else "")
                + f"corrected for other processes (raw MemAvailable: {med(raw) / MB:.1f} MB); "
                f"idle-second drift {med(drift) / MB:.1f} MB; the load took "
                f"{med(taken) / MB:.1f} MB; per repeat corrected/raw "
                + ", ".join(f"{f / MB:.0f}/{x / MB:.0f}" for f, x in zip(fixed, raw, strict=True))
                + " MB")


def startup_rows(sec: Section, quick: bool) -> None:
    """Idle, then 1 and 4 models installed in the ram tier, each timed on a restart of the
    same state dir (the ram tier is loaded before SERVING)."""
    from daemon_harness import DaemonProcess

    cfg = {"preload": {"enabled": False}, "telemetry": {"interval_s": 2.0}}
    n, order = 1 if quick else 3, list(demo_inputs())
    counts = (0,) if quick else (0, 1, 4)
    root: Path | None = None
    d: Any = None
    results: dict[int, list[tuple[float, int, int, int, int]]] = {}
    try:
        for count in counts:
            for i in range(n):
                if i == 0 and count:  # install what this step needs, then restart
                    d = DaemonProcess(cfg, root=root)
                    root = d.root
                    with d.start().client() as c:
                        have = {m.name for m in c.list_models()}
                        for name in (x for x in order[:count] if x not in have):
                            c.install(name, MODELS / f"{name}.onnx", tier="ram",
                                      warmup_shapes=demo_inputs()[name][1])
                    d.stop()
                d = DaemonProcess(cfg, root=root)
                root, t = d.root, time.perf_counter()
                d.start()
                secs = time.perf_counter() - t
                time.sleep(1.0)
                with d.client() as c:
                    loaded = len(c.status().loaded)
                results.setdefault(count, []).append((secs, *tree_rss(d.proc.pid), loaded))
                d.stop()
    finally:
        if d is not None:
            d.kill()  # a no-op unless a step failed with the daemon still up
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
    edged = {}
    for count, rs in results.items():
        t, rss, wrss, wanon = (med([r[k] for r in rs]) for k in range(4))
        edged[count] = (t, rss + wrss)
        label = "idle" if count == 0 else f"{count} ram-tier model(s)"
        sec.add(f"edged start-up, {label}: time to SERVING; RSS", "< 80 MB (daemon)"
                if count == 0 else "info", f"{t:.2f} s; daemon {rss / MB:.1f} MB + workers "
                f"{wrss / MB:.1f} MB", rss < 80 * MB if count == 0 else None,
                f"n={len(rs)}, {rs[-1][4]} loaded at SERVING; workers' RssAnon "
                f"{wanon / MB:.1f} MB (their RSS counts the shared libraries once each)"
                + ("; --quick skips 4 models" if quick and count else ""))
    kserve_rows(sec, quick, edged)


def kserve_rows(sec: Section, quick: bool, edged: dict[int, tuple[float, float]]) -> None:
    """KServe ModelServer on bench/kserve_peer.py's OnnxModel (the same ORT options), one
    process serving 1 or 4 models; ready = its gRPC port accepts (models are built first)."""
    from bench.kserve_peer import SERVER, WORK, ensure_venv

    py = None if quick else ensure_venv()
    if py is None:
        sec.add("KServe start-up and RSS", "info", "not measured: " + (
            "--quick skips KServe" if quick else "no KServe venv (see stderr)"), None)
        return
    (WORK / "kserve_server.py").write_text(SERVER)
    order = list(demo_inputs())
    for count in (1, 4):
        got = [kserve_once(py, order[:count]) for _ in range(2)]
        ok = [g for g in got if not isinstance(g, str)]
        if not ok:
            sec.add(f"KServe, {count} model(s)", "info", f"not measured: {got[0]}", None)
            continue
        t, rss, kids = (med([s[k] for s in ok]) for k in range(3))
        et, erss = edged.get(count, (float("nan"), float("nan")))
        sec.add(f"KServe start-up, {count} model(s): time to ready; RSS", "info",
                f"{t:.2f} s; {(rss + kids) / MB:.1f} MB", None,
                f"n={len(ok)}; edged: {et:.2f} s, {erss / MB:.1f} MB (daemon + workers); "
                f"KServe keeps the sessions in its one process; {', '.join(order[:count])}")


def kserve_once(py: Path, names: list[str]) -> tuple[float, int, int] | str:
    from bench.kserve_peer import WORK, free_port

    grpc_port = free_port()
    args = [str(py), "-c", KSERVE_MULTI, str(WORK), str(free_port()), str(grpc_port)]
    for m in names:
        args += [m, str(MODELS / f"{m}.onnx")]
    with (WORK / "kserve-engines.log").open("wb") as log:
        t = time.perf_counter()
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            while p.poll() is None and time.perf_counter() - t < 120:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", grpc_port)) == 0:
                        secs = time.perf_counter() - t
                        time.sleep(1.0)
                        rss, kids, _ = tree_rss(p.pid)
                        return secs, rss, kids
                time.sleep(0.02)
            return "did not become ready (see bench/.work/kserve-engines.log)"
        finally:
            p.kill()  # nothing to drain: a measurement, not a test of its shutdown
            p.wait()
