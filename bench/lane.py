"""Direct lanes against in-process ONNX Runtime, the gRPC floor and edged's gRPC paths.

    python -m bench --only lane [--quick]

One daemon, one run, side by side for each demo model: in-process ONNX Runtime (one intra-op
thread, as the workers), edged through a lane (``EdgedClient.lane``: zero-copy, inputs written
in place, outputs read in place; and ``EdgedClient.infer`` over a lane: one copy in, one out),
edged over gRPC (plain, and with the shared-memory extension). Small models run the paths in
alternating blocks of 50 calls, the PP-OCR ones in blocks of 5 (see ``time_alternating``): the
2-core box is shared and a slow spell must hit every path alike. 8 clients: 8 threads, each
with its own ``EdgedClient`` (so its own lane), against 8 threads on one in-process session.

On the GPU machine: ``python -m bench.lane --cuda [--quick] [--out FILE]`` runs the same with the
in-process session on the CUDA EP and the daemon on its default engine settings (it picks the CUDA
EP itself where onnxruntime has it, and its default per-model concurrency).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO, Section, ms, percentiles, time_alternating
from bench.latency import demo_inputs, floor, session

CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]

MODELS = ("silero-vad", "ppocr-cls", "ppocr-rec", "ppocr-det")
DET_SHAPED = "det-shaped"  # ppocr-det's input and output sizes, next to no compute


def _n(name: str, quick: bool) -> int:
    if name in ("ppocr-rec", "ppocr-det"):
        return 20 if quick else 100
    if name == DET_SHAPED:
        return 50 if quick else 300
    return 200 if quick else 1000


def _zero_copy(c: Any, name: str, feeds: dict[str, np.ndarray]) -> tuple[Callable[[], Any],
                                                                             Callable[[], None]]:
    """A lane held open; each call writes the inputs into it and reads the outputs there."""
    ctx = c.lane(name)
    lane = ctx.__enter__()
    views = lane.inputs({k: (v.shape, v.dtype) for k, v in feeds.items()})

    def call() -> Any:
        for k, v in feeds.items():  # the "camera frame" written once, into the lane
            views[k][...] = v
        return lane.run()

    return call, lambda: ctx.__exit__(None, None, None)


def _written(sess: Any, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
    """In-process with each call's inputs written into buffers first (a camera capturing into
    a buffer): what the lane's zero-copy path does before its run."""
    bufs = {k: np.empty_like(v) for k, v in feeds.items()}

    def call() -> Any:
        for k, v in feeds.items():
            bufs[k][...] = v
        return sess.run(None, bufs)

    return call


def _throughput(fns: list[Callable[[], Any]], seconds: float,
                warmup_s: float = 1.0) -> tuple[float, list[float]]:
    """Calls per second of ``len(fns)`` threads, each calling its function for ``seconds``,
    after ``warmup_s`` of the same load untimed: the first seconds of concurrent runs grow the
    runtime's arena (the workers' grows by what is asked, not by doubling: see
    onnxruntime.py), a one-time cost that is not the steady state a robot runs in."""
    samples: list[float] = []
    lock = threading.Lock()
    times = [0.0, 0.0]  # (timed from, stop at): set when every thread is ready

    def ready() -> None:
        now = time.perf_counter()
        times[0], times[1] = now + warmup_s, now + warmup_s + seconds

    start = threading.Barrier(len(fns) + 1, action=ready)

    def worker(fn: Callable[[], Any]) -> None:
        for _ in range(3):
            fn()
        start.wait()
        local = []
        while True:  # (counted: the calls that end in the timed window)
            t = time.perf_counter()
            if t >= times[1]:
                break
            fn()
            end = time.perf_counter()
            if times[0] <= end <= times[1]:
                local.append(end - t)
        with lock:
            samples.extend(local)

    threads = [threading.Thread(target=worker, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join()
    return len(samples) / seconds, samples


def _paired(a: list[Callable[[], Any]], b: list[Callable[[], Any]], seconds: float,
            rounds: int = 4) -> tuple[tuple[float, list[float]], tuple[float, list[float]]]:
    """``_throughput`` of ``a`` and of ``b``, ``seconds`` each, in alternating rounds: a spell
    when another job holds a core of the shared box hits both alike (one 8 s run each moved
    a ratio between 0.5x and 1.1x from one run to the next)."""
    out: list[tuple[float, list[float]]] = [(0.0, []), (0.0, [])]
    for r in range(rounds):
        for i, fns in enumerate((a, b)):
            _, samples = _throughput(fns, seconds / rounds, 1.0 if r == 0 else 0.2)
            out[i][1].extend(samples)
    return ((len(out[0][1]) / seconds, out[0][1]), (len(out[1][1]) / seconds, out[1][1]))


def _cuda_session(path: Path) -> Any:
    """In-process ONNX Runtime on the CUDA EP, default options (what a hand-written loader does)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=CUDA)


def run(quick: bool, cuda: bool = False) -> Section:
    from daemon_harness import DaemonProcess

    sec = Section(
        "Direct lanes: overhead against in-process ONNX Runtime and the gRPC floor",
        method="p50/p99 per path, in alternating blocks (50 calls for the small models, 5 for "
               "PP-OCR rec and det); overhead = p50(path) - p50(in-process). lane zero-copy: "
               "`EdgedClient.lane` (inputs written into the lane, outputs read in place); lane "
               "infer: `EdgedClient.infer` over a lane (copies the inputs in and the outputs "
               "out); gRPC shm: the shared-memory extension (above the client's threshold "
               "only). 8 clients: 8 threads with an EdgedClient each, vs 8 threads on one "
               "in-process session, for a fixed time each, in 4 alternating rounds (the "
               "first after 1 s of the same load untimed).")
    import modelgen

    models = {name: REPO / "models" / f"{name}.onnx" for name in MODELS}
    tmp = Path(tempfile.mkdtemp(prefix="edged-bench-lane-"))
    # det's tensors without det's compute: its overhead is measurable on a noisy box
    models[DET_SHAPED] = modelgen.reduce_model(tmp / "det-shaped.onnx")
    det_feeds = demo_inputs()["ppocr-det"][0]
    fl50, fl99 = percentiles(floor(200 if quick else 1000))
    engines: dict[str, Any] = {} if cuda else {"per_model_concurrency": 2}
    d = DaemonProcess({"engines": engines, "preload": {"enabled": False}})
    d.start()
    rows = []
    conc = []
    providers: dict[str, str] = {}
    try:
        with d.client() as c, d.client(lanes=False, shm_threshold=None) as plain, \
                d.client(lanes=False, shm_threshold=0) as shm:
            for name in MODELS:
                c.install(name, models[name], warmup_shapes=demo_inputs()[name][1])
                providers[name] = ",".join(c.load(name).model.providers)
            c.install(DET_SHAPED, models[DET_SHAPED])
            for name in (*MODELS, DET_SHAPED):
                feeds = det_feeds if name == DET_SHAPED else demo_inputs()[name][0]
                sess = _cuda_session(models[name]) if cuda else session(models[name])
                zc, zc_close = _zero_copy(c, name, feeds)

                def in_process(s: Any = sess, f: dict[str, np.ndarray] = feeds) -> object:
                    return s.run(None, f)

                def lane_call(m: str = name, f: dict[str, np.ndarray] = feeds) -> object:
                    return c.infer(m, f)

                def grpc_call(m: str = name, f: dict[str, np.ndarray] = feeds) -> object:
                    return plain.infer(m, f)

                def shm_call(m: str = name, f: dict[str, np.ndarray] = feeds) -> object:
                    return shm.infer(m, f)

                fns: dict[str, Callable[[], object]] = {
                    "in": in_process, "zc": zc, "lane": lane_call, "grpc": grpc_call,
                    "shm": shm_call}
                if name == DET_SHAPED:  # in-process, the frame written into its buffer
                    fns["in_w"] = _written(sess, feeds)  # each call, as the lane path does
                block = {"ppocr-rec": 5, "ppocr-det": 5, DET_SHAPED: 10}.get(name, 50)
                got = time_alternating(fns, _n(name, quick), block=block)
                zc_close()
                rows.append((name, {k: percentiles(v) for k, v in got.items()}))
                if name == DET_SHAPED or (quick and name != "ppocr-cls"):
                    continue
                secs = 3.0 if quick else 8.0
                clients = [d.client() for _ in range(8)]
                client_calls: list[Callable[[], object]] = []
                for cl in clients:

                    def client_call(cl: Any = cl, m: str = name,
                                    f: dict[str, np.ndarray] = feeds) -> object:
                        return cl.infer(m, f)

                    client_calls.append(client_call)
                try:
                    (tin, sin), (tl, sl) = _paired([in_process] * 8, client_calls, secs)
                finally:
                    for cl in clients:
                        cl.close()
                conc.append((name, tin, percentiles(sin), tl, percentiles(sl)))
            st = c.status()
            lanes_open = {m.name: m.lanes for m in st.loaded}
    finally:
        d.stop()
        d.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    table = ["| model | in-process p50 / p99 | lane zero-copy p50 / p99 (overhead) | "
             "lane infer p50 / p99 (overhead) | gRPC plain p50 (overhead) | gRPC shm p50 "
             "(overhead) |", "| --- | --- | --- | --- | --- | --- |"]
    for name, p in rows:
        i50 = p["in"][0]
        table.append(
            f"| {name} | {ms(p['in'][0])} / {ms(p['in'][1])} | {ms(p['zc'][0])} / "
            f"{ms(p['zc'][1])} ({ms(p['zc'][0] - i50)}) | {ms(p['lane'][0])} / "
            f"{ms(p['lane'][1])} ({ms(p['lane'][0] - i50)}) | {ms(p['grpc'][0])} "
            f"({ms(p['grpc'][0] - i50)}) | {ms(p['shm'][0])} ({ms(p['shm'][0] - i50)}) |")
    sec.tables.append("\n".join(table))
    if conc:
        t2 = ["| model, 8 clients | in-process 8 threads: calls/s, p50 / p99 | lanes: calls/s, "
              "p50 / p99 | ratio |", "| --- | --- | --- | --- |"]
        for name, tin, (i50, i99), tl, (l50, l99) in conc:
            t2.append(f"| {name} | {tin:.0f}/s, {ms(i50)} / {ms(i99)} | {tl:.0f}/s, "
                      f"{ms(l50)} / {ms(l99)} | {tl / tin:.2f}x |")
        sec.tables.append("\n".join(t2))
    sec.add("no-op grpcio floor (3 KB in, 1 KB out)", "info", f"p50 {ms(fl50)}, p99 {ms(fl99)}",
            None)
    small = [(name, p) for name, p in rows if name in ("silero-vad", "ppocr-cls")]
    small_over = []
    for name, p in small:
        over = p["zc"][0] - p["in"][0]
        small_over.append(over)
        sec.add(f"{name}: lane overhead vs the floor", "<= 0.5x floor",
                f"{over / fl50:.2f}x ({ms(over)} vs {ms(fl50)})", over <= 0.5 * fl50)
    ref = max(min(small_over), 1e-6) if small_over else 0.0
    for name in ("ppocr-det", DET_SHAPED):
        det = dict(rows).get(name)
        if not det or not small_over:
            continue
        over = det["zc"][0] - det["in"][0]
        # the target is judged on det's tensors without det's compute: on the real model a
        # 0.2 ms difference is lost in a 100+ ms model's run-to-run noise on a shared box
        judged = name == DET_SHAPED
        note = "the same tensors without the compute: the rows below"
        if judged:
            written = det["zc"][0] - det["in_w"][0]
            note = (f"against in-process with the frame written into its buffer each call (as "
                    f"the lane path writes it into the lane): {ms(written)}, "
                    f"{written / ref:.2f}x")
        sec.add(f"{name} over the lane (zero-copy): overhead vs the small-model lane overhead",
                "<= 1.5x" if judged else "info", f"{over / ref:.2f}x ({ms(over)} vs {ms(ref)})",
                (over <= 1.5 * ref) if judged else None, note)
    for name, tin, (_i50, i99), tl, (_l50, l99) in conc:
        sec.add(f"{name}: 8 clients over lanes, throughput vs 8 threads in-process", ">= 0.8x",
                f"{tl / tin:.2f}x ({tl:.0f}/s vs {tin:.0f}/s)", tl >= 0.8 * tin)
        sec.add(f"{name}: 8 clients over lanes, p99 vs in-process p99", "<= 2x",
                f"{l99 / i99:.2f}x ({ms(l99)} vs {ms(i99)})", l99 <= 2 * i99)
    sec.add("engine providers (daemon workers)", "info",
            "; ".join(f"{k}: {v}" for k, v in providers.items()), None)
    if cuda:
        sec.add("in-process providers", "info", ",".join(CUDA), None)
    sec.add("lanes open at the end (edgectl status)", "info",
            ", ".join(f"{k} {v}" for k, v in sorted(lanes_open.items())), None)
    return sec


if __name__ == "__main__":
    import argparse
    import sys

    sys.path.insert(0, str(Path(REPO / "tests")))
    ap = argparse.ArgumentParser(prog="python -m bench.lane")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cuda", action="store_true", help="in-process on the CUDA EP (GPU machine)")
    ap.add_argument("--out", help="also write the markdown here")
    args = ap.parse_args()
    text = run(args.quick, cuda=args.cuda).markdown()
    print(text)
    if args.out:
        Path(args.out).write_text(text)
