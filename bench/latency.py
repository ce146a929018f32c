"""Inference overhead over the Unix socket against in-process ONNX Runtime and the gRPC floor.

All in one run, side by side, because the machine is noisy: the no-op grpcio floor (server in
its own process, 3 KB in / 1 KB out), in-process ONNX Runtime (one intra-op thread, the same
session options the daemon's workers use), edged through its own client (plain, and through
shared memory for the large PP-OCR det tensors), tritonclient against edged (in a child
process), and — when ``bench/kserve_peer.py`` could set up its virtual environment — a KServe
Python model server on the same model.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO, Section, ms, percentiles, time_alternating, time_calls

BENCH = Path(__file__).resolve().parent


def n_for(name: str, quick: bool) -> int:
    n = 100 if quick else 1000
    return max(5 if quick else 10, n // 20 if quick else n // 10) if name in (
        "ppocr-rec", "ppocr-det") else n


def demo_inputs() -> dict[str, tuple[dict[str, np.ndarray], dict[str, tuple[int, ...]]]]:
    rng = np.random.default_rng(0)
    return {
        "silero-vad": ({"input": rng.random((1, 512), dtype=np.float32) - 0.5,
                        "state": np.zeros((2, 1, 128), np.float32),
                        "sr": np.array(16000, dtype=np.int64)}, {"input": (1, 512)}),
        "ppocr-cls": ({"x": rng.random((1, 3, 48, 192), dtype=np.float32)},
                      {"x": (1, 3, 48, 192)}),
        "ppocr-rec": ({"x": rng.random((1, 3, 48, 320), dtype=np.float32)},
                      {"x": (1, 3, 48, 320)}),
        "ppocr-det": ({"x": rng.random((1, 3, 640, 640), dtype=np.float32)},
                      {"x": (1, 3, 64, 64)}),
    }


def session(path: Path) -> Any:
    """In-process ONNX Runtime with the options the daemon's workers use."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def inprocess(path: Path, feeds: dict[str, np.ndarray], n: int) -> list[float]:
    sess = session(path)
    return time_calls(lambda: sess.run(None, feeds), n)


def det_shaped_model(path: Path) -> Path:
    """PP-OCR det's tensors (1x3x640x640 in, 1x1x640x640 out) around ~2 ms of compute (a
    channel mean): what moving those tensors costs, without a 100+ ms model's noise."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=1)], "det-shaped",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 640, 640])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 640, 640])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def floor(n: int) -> list[float]:
    import grpc

    with tempfile.TemporaryDirectory(prefix="floor-", dir="/tmp") as tmp:
        target = f"unix:{tmp}/noop.sock"
        proc = subprocess.Popen([sys.executable, str(BENCH / "noop_server.py"), target, "1024"],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            with grpc.insecure_channel(target) as ch:
                call = ch.unary_unary("/bench.Noop/Call")
                payload = b"\1" * 3072
                return time_calls(lambda: call(payload, timeout=10), n)
        finally:
            proc.terminate()
            proc.wait(10)


def triton_child(url: str, model: str, feeds: dict[str, np.ndarray], n: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        # numpy 2's stub checks **feeds against allow_pickle (a bool); the keys are input names.
        # Passing allow_pickle=True would satisfy it, but numpy 1.x would save it as an array.
        np.savez(f"{tmp}/in.npz", **feeds)  # type: ignore[arg-type]
        out = subprocess.run([sys.executable, str(BENCH / "triton_client_child.py"), url, model,
                              f"{tmp}/in.npz", str(n)], capture_output=True, text=True,
                             timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["samples"]  # type: ignore[no-any-return]


def concurrent(fn_factory: Any, clients: int, per_client: int) -> list[float]:
    samples: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        fn, close = fn_factory()
        try:
            local = time_calls(fn, per_client, warmup=5)
        finally:
            close()
        with lock:
            samples.extend(local)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return samples


def run(quick: bool) -> Section:
    from daemon_harness import DaemonProcess

    n = n_for("silero-vad", quick)
    sec = Section(
        "Inference overhead (Unix socket) vs in-process ONNX Runtime, the gRPC floor and peers",
        method=f"n={n} sequential calls per row after 20 warm-up calls; ONNX Runtime with one "
               "intra-op and one inter-op thread in every column; overhead = p50(path) - "
               "p50(in-process). 8-client rows: 8 threads with their own channels, "
               f"{n // 4} calls each. PP-OCR rec and det take 50-350 ms a call, so they get "
               "a tenth of the samples.")
    models = {name: REPO / "models" / f"{name}.onnx" for name in demo_inputs()}
    fl50, fl99 = percentiles(floor(n))
    d = DaemonProcess({"engines": {"per_model_concurrency": 2}, "preload": {"enabled": False}})
    d.start()
    rows = []
    transport: tuple[float, float, float] | None = None
    try:
        with d.client(lanes=False) as c:
            for name, (_feeds, warm) in demo_inputs().items():
                if quick and name == "ppocr-rec":
                    continue
                c.install(name, models[name], warmup_shapes=warm)
                c.load(name)
            for name, (feeds, _) in demo_inputs().items():
                if quick and name == "ppocr-rec":
                    continue  # --quick: the small models and the large-tensor one only
                n = n_for(name, quick)

                def edged_call(f: dict[str, np.ndarray] = feeds, m: str = name) -> object:
                    return c.infer(m, f)

                if name == "ppocr-det":  # 100+ ms a call: side by side, in alternating blocks
                    sess = session(models[name])

                    def in_process(s: Any = sess, f: dict[str, np.ndarray] = feeds) -> object:
                        return s.run(None, f)

                    got = time_alternating({"in": in_process, "edged": edged_call}, n)
                    (ip50, ip99), (e50, e99) = percentiles(got["in"]), percentiles(got["edged"])
                else:
                    ip50, ip99 = percentiles(inprocess(models[name], feeds, n))
                    e50, e99 = percentiles(time_calls(edged_call, n))
                if name == "ppocr-det":  # the same call with shared memory turned off
                    with d.client(lanes=False, shm_threshold=None) as plain:

                        def edged_plain(f: dict[str, np.ndarray] = feeds, m: str = name) -> object:
                            return plain.infer(m, f)

                        p50, p99 = percentiles(time_calls(edged_plain, n))
                    sec.add("ppocr-det through edged.client without shared memory", "info",
                            f"p50 {ms(p50)}, p99 {ms(p99)}, overhead {ms(p50 - ip50)}", None)
                t50, t99 = (math.nan, math.nan) if quick and name == "ppocr-det" else \
                    percentiles(triton_child(d.target, name, feeds, n))
                rows.append((name, ip50, ip99, e50, e99, t50, t99))
                if name == "ppocr-det":
                    transport = det_transport(d, c, quick)

                def factory(m: str = name, f: dict[str, np.ndarray] = feeds) -> Any:
                    cl = d.client(lanes=False)
                    return (lambda: cl.infer(m, f)), cl.close

                if quick:
                    continue  # --quick: no 8-client rows
                c50, c99 = percentiles(concurrent(factory, 8, max(10, n // 4)))
                sec.add(f"{name}: edged p50/p99, 8 concurrent clients", "info",
                        f"{ms(c50)} / {ms(c99)}", None)
    finally:
        d.stop()
        d.cleanup()
    sec.tables.append(breakdown(quick))
    table = ["| model | in-process p50 / p99 | edged client p50 / p99 | edged overhead | "
             "tritonclient→edged p50 / p99 | overhead / floor |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, ip50, ip99, e50, e99, t50, t99 in rows:
        over = e50 - ip50
        table.append(f"| {name} | {ms(ip50)} / {ms(ip99)} | {ms(e50)} / {ms(e99)} | "
                     f"{ms(over)} | {ms(t50)} / {ms(t99)} | {over / fl50:.2f}x |")
    sec.tables.append("\n".join(table))
    sec.add("no-op grpcio floor (3 KB in, 1 KB out)", "info", f"p50 {ms(fl50)}, p99 {ms(fl99)}",
            None)
    small = [r for r in rows if r[0] in ("silero-vad", "ppocr-cls")]
    for name, ip50, _, e50, *_ in small:
        over = e50 - ip50
        sec.add(f"{name}: overhead vs floor", "<= 1.25x floor", f"{over / fl50:.2f}x "
                f"({ms(over)} vs {ms(fl50)})", over <= 1.25 * fl50)
    det = next((r for r in rows if r[0] == "ppocr-det"), None)
    if det and small:
        small_over = min(r[3] - r[1] for r in small)
        det_over = det[3] - det[1]
        # a negative overhead is noise larger than the overhead, not a pass
        sec.add("ppocr-det (4.9 MB in, 1.6 MB out) through shared memory: overhead vs the "
                "small-model overhead", "< 1.5x", f"{det_over / small_over:.2f}x "
                f"({ms(det_over)} vs {ms(small_over)})",
                det_over < 1.5 * small_over if det_over > 0 else None,
                "edged.client uses shared memory on its own above 256 KiB; in-process and "
                "edged in alternating blocks of 5 calls" + (
                    "; inconclusive: the model's run-to-run noise exceeds the overhead"
                    if det_over <= 0 else ""))
        if transport is not None:
            t_in, t_shm, t_plain = transport
            sec.add("PP-OCR det's tensors through shared memory, transport alone: overhead vs "
                    "the small-model overhead", "info (the row above is the target)",
                    f"{(t_shm - t_in) / small_over:.2f}x ({ms(t_shm - t_in)} vs "
                    f"{ms(small_over)}); without shared memory {ms(t_plain - t_in)}", None,
                    f"a generated model with det's tensor shapes and ~{ms(t_in)} of compute "
                    "(channel mean), in-process vs edged.client, alternating blocks; the "
                    "client copies the frame in and the outputs out")
    if quick:
        sec.add("KServe peer", "info", "not measured with --quick (starting it takes ~5 s "
                "per model); the full run compares it", None)
    else:
        kserve_rows(sec, rows, quick)
    time.sleep(0.1)
    return sec


def det_transport(d: Any, c: Any, quick: bool) -> tuple[float, float, float] | None:
    """p50 of in-process, edged.client through shared memory and edged.client over plain
    gRPC on the det-shaped model, in alternating blocks."""
    with tempfile.TemporaryDirectory() as tmp:
        path = det_shaped_model(Path(tmp) / "det-shaped.onnx")
        c.install("det-shaped", path)
        c.load("det-shaped")
        sess = session(path)
    feeds = {"x": np.random.default_rng(1).random((1, 3, 640, 640), dtype=np.float32)}
    with d.client(lanes=False, shm_threshold=None) as plain:
        got = time_alternating({"in": lambda: sess.run(None, feeds),
                                "shm": lambda: c.infer("det-shaped", feeds),
                                "plain": lambda: plain.infer("det-shaped", feeds)},
                               100 if quick else 400, block=10)
    c.unload("det-shaped")
    return (percentiles(got["in"])[0], percentiles(got["shm"])[0],
            percentiles(got["plain"])[0])


def kserve_rows(sec: Section, rows: list[tuple[Any, ...]], quick: bool) -> None:
    """KServe on the same models, timed with the same tritonclient child as edged."""
    from bench.kserve_peer import KServePeer

    inputs = demo_inputs()
    for name, ip50, _ip99, _e50, _e99, t50, _t99 in rows:
        n = n_for(name, quick)
        peer = KServePeer(name, REPO / "models" / f"{name}.onnx")
        try:
            if not peer.start():
                sec.add(f"{name}: KServe peer", "info", "could not start", None,
                        "see bench/.work/kserve-*.log")
                continue
            k50, k99 = percentiles(triton_child(peer.url, name, inputs[name][0], n))
        finally:
            peer.stop()
        k_over, e_over = k50 - ip50, t50 - ip50
        target = "<= 0.8x KServe's" if name in ("silero-vad", "ppocr-cls") else "info"
        sec.add(f"{name}: tritonclient overhead, edged vs KServe", target,
                f"edged {ms(e_over)} vs KServe {ms(k_over)} ({e_over / k_over:.2f}x); "
                f"KServe p50/p99 {ms(k50)} / {ms(k99)}",
                e_over <= 0.8 * k_over if target != "info" else None)


def breakdown(quick: bool) -> str:
    """Where the time of a small request goes: protobuf decode/encode in the service, the
    worker hop (pool.infer minus the bare session run), measured piece by piece in-process."""
    from edged.client.tensors import infer_request
    from edged.engines.base import EngineOptions
    from edged.engines.workers import WorkerPool
    from edged.oip import grpc_service_pb2 as oip
    from edged.service import tensors

    n = 200 if quick else 2000
    rows = ["| model | request encode (client) | decode (service) | response encode (service) | "
            "worker hop over the run itself |", "| --- | --- | --- | --- | --- |"]
    pool = WorkerPool()
    try:
        for name, (feeds, warm) in demo_inputs().items():
            if name == "ppocr-det" or (quick and name == "ppocr-rec"):
                continue
            path = REPO / "models" / f"{name}.onnx"
            req = infer_request(name, feeds, None)
            wire = req.SerializeToString()

            def encode_request(f: dict[str, np.ndarray] = feeds, m: str = name) -> object:
                return infer_request(m, f, None).SerializeToString()

            def decode_request(w: bytes = wire) -> object:
                return tensors.decode(oip.ModelInferRequest.FromString(w))

            enc = percentiles(time_calls(encode_request, n))[0]
            dec = percentiles(time_calls(decode_request, n))[0]
            pool.load(name, path, "onnx", EngineOptions(warmup_shapes=warm))
            outs = pool.infer(name, feeds)

            def encode_response(o: dict[str, Any] = outs, r: Any = req,
                                m: str = name) -> object:
                return tensors.encode(r, m, 1, o).SerializeToString()

            def worker_hop(f: dict[str, np.ndarray] = feeds, m: str = name) -> object:
                return pool.infer(m, f)

            renc = percentiles(time_calls(encode_response, n))[0]
            hop = percentiles(time_calls(worker_hop, n))[0]
            run = percentiles(inprocess(path, feeds, n))[0]
            rows.append(f"| {name} | {ms(enc)} | {ms(dec)} | {ms(renc)} | {ms(hop - run)} |")
            pool.unload(name)
    finally:
        pool.close()
    return "Request path breakdown (p50, in-process pieces):\n\n" + "\n".join(rows)
