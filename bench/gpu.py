"""The GPU benchmark (issue 12, part 8): edged's memory truth and latency with the CUDA EP.

    python -m bench.gpu [--quick] [--out bench/GPU_RESULTS.md]

Run it on the NVIDIA GPU test machine (see ../shared/tools/gpu/README.md: there it runs as the
COMMAND of ``bash .gpu/on-device.sh``, e.g. ``python -m bench.gpu --out $OUT/GPU_RESULTS.md``).
Where onnxruntime has no CUDA EP or there is no GPU it prints why and exits 0 (a skip).

Per demo model, at its realistic warm-up shape: outputs through edged vs in-process CUDA (max
abs difference), p50 latency in-process and through edged, the estimate before the load (after
``edged calibrate``), the accounted bytes, and the device's own number for the model's worker
(NVML per process) after 0 and 200 inferences; unloading returns the worker's device memory.
Then the same four models sharing one worker (``share_worker: one``). And the latency cost of
cuDNN's bounded algorithm search (HEURISTIC, edged's default) vs EXHAUSTIVE, in-process. Results
go to a markdown file naming the device, driver and library versions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO

MODELS = REPO / "models"
SHAPES: dict[str, dict[str, list[int]]] = {
    "silero-vad": {"input": [1, 512]},
    "ppocr-cls": {"x": [1, 3, 48, 192]},
    "ppocr-rec": {"x": [1, 3, 48, 320]},
    "ppocr-det": {"x": [1, 3, 640, 640]},
}
MB = 1e6


def cuda_available() -> str | None:
    """None when the CUDA EP and a GPU are there, else why not (the benchmark then skips)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no CUDA EP ({ort.get_available_providers()})"
    try:
        import pynvml

        pynvml.nvmlInit()
        if int(pynvml.nvmlDeviceGetCount()) == 0:
            return "NVML sees no GPU"
    except Exception as exc:  # noqa: BLE001 - no driver / no library
        return f"no NVML: {exc}"
    return None


def feeds_for(name: str, inputs: list[Any]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out: dict[str, np.ndarray] = {}
    for i in inputs:
        if name == "silero-vad" and i.name == "state":
            out[i.name] = np.zeros((2, 1, 128), np.float32)
        elif name == "silero-vad" and i.name == "sr":
            out[i.name] = np.array(16000, dtype=np.int64)
        else:
            out[i.name] = rng.random(SHAPES[name][i.name], dtype=np.float32)
    return out


def p50_ms(fn: Any, n: int, warm: int = 5) -> float:
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def versions() -> dict[str, str]:
    import onnxruntime as ort
    import pynvml

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    name = pynvml.nvmlDeviceGetName(h)
    drv = pynvml.nvmlSystemGetDriverVersion()
    total = pynvml.nvmlDeviceGetMemoryInfo(h).total

    def dec(v: Any) -> str:
        return v.decode() if isinstance(v, bytes) else str(v)

    return {"gpu": dec(name), "driver": dec(drv), "gpu_memory": f"{total / 2**30:.0f} GiB",
            "onnxruntime": ort.__version__, "python": sys.version.split()[0],
            "cuda_runtime": _cuda_version(pynvml)}


def _cuda_version(pynvml: Any) -> str:
    try:
        v = int(pynvml.nvmlSystemGetCudaDriverVersion())
        return f"{v // 1000}.{v % 1000 // 10}"
    except Exception:  # noqa: BLE001
        return "?"


def device_bytes(pid: int) -> int | None:
    from edged.engines.gpumem import open_nvml_meter

    meter = open_nvml_meter()
    return meter(pid) if meter is not None else None


def inprocess(quick: bool) -> tuple[dict[str, dict[str, Any]], list[list[str]]]:
    """In-process CUDA per model (the reference outputs and latency); cuDNN search cost."""
    import onnxruntime as ort

    refs: dict[str, dict[str, Any]] = {}
    cudnn_rows = []
    for name in SHAPES:
        path = str(MODELS / f"{name}.onnx")
        row = [name]
        for search in ("HEURISTIC", "EXHAUSTIVE"):
            sess = ort.InferenceSession(path, providers=[
                ("CUDAExecutionProvider", {"cudnn_conv_algo_search": search}),
                "CPUExecutionProvider"])
            feeds = feeds_for(name, sess.get_inputs())
            first = time.perf_counter()
            outs = sess.run(None, feeds)
            first_ms = (time.perf_counter() - first) * 1e3
            p50 = p50_ms(lambda s=sess, f=feeds: s.run(None, f), 50 if quick else 200)
            row += [f"{first_ms:.1f}", f"{p50:.3f}"]
            if search == "HEURISTIC":
                refs[name] = {"feeds": feeds, "outs": outs, "p50_ms": p50}
            del sess
        cudnn_rows.append(row)
    return refs, cudnn_rows


def run_daemon(config: dict[str, Any]) -> Any:
    from daemon_harness import DaemonProcess

    return DaemonProcess(config).start(timeout=120)


def edged_models(refs: dict[str, dict[str, Any]], share: bool, quick: bool
                 ) -> tuple[list[list[str]], list[str]]:
    """Install, calibrate, check, load, infer 0 / 200 times, read NVML; unload."""
    n = 50 if quick else 200
    d = run_daemon({"engines": {"share_worker": "one" if share else "per_model"}})
    rows, notes = [], []
    try:
        cal = subprocess.run([sys.executable, "-m", "edged", "--config", str(d.config_path),
                              "--state-dir", str(d.state_dir), "calibrate", "--json"],
                             capture_output=True, text=True, timeout=300)
        notes.append(f"edged calibrate: {cal.stdout.strip() or cal.stderr.strip()}"
                     .replace("\n", " "))
        with d.client(timeout=300) as c:
            for name in SHAPES:
                c.install(name, MODELS / f"{name}.onnx", warmup_shapes=SHAPES[name])
                estimate = c.check(name).estimated_bytes
                loaded = c.load(name, timeout=300).model
                pid = loaded.worker_pid
                dev0 = device_bytes(pid)
                ref = refs[name]
                got = c.infer(name, ref["feeds"])
                diff = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b))))
                           for a, b in zip(got.values(), ref["outs"], strict=True))
                p50 = p50_ms(lambda nm=name, f=ref["feeds"]: c.infer(nm, f), n)
                time.sleep(2.5)  # the pool re-measures busy workers about once a second
                dev_n = device_bytes(pid)
                accounted = next(m.footprint_bytes for m in c.status().loaded if m.name == name)
                rows.append([name, "shared" if share else "alone",
                             ",".join(loaded.providers), f"{diff:.2e}",
                             f"{ref['p50_ms']:.3f}", f"{p50:.3f}",
                             f"{estimate / MB:.0f}", f"{loaded.footprint_bytes / MB:.0f}",
                             f"{accounted / MB:.0f}", _mb(dev0), _mb(dev_n), str(pid)])
            status = c.status()
            notes.append("status fixed costs: " + "; ".join(
                f"{k}: {v}" for k, v in (status.fixed_costs or {}).items()))
            budget = status.gpu_budget
            notes.append("status gpu budget: " + (
                "none" if budget is None else
                f"budget_bytes: {budget[0]}; used_bytes: {budget[1]}; "
                f"device_total_bytes: {budget[2]}"))
            if share:
                pid = status.loaded[0].worker_pid
                total = sum(m.footprint_bytes for m in status.loaded)
                notes.append(f"shared worker {pid}: accounted {total / MB:.0f} MB in all, "
                             f"device + RSS by NVML/psutil: {_worker_total(pid) / MB:.0f} MB")
            for name in SHAPES:
                pid = next((m.worker_pid for m in c.status().loaded if m.name == name), 0)
                before = device_bytes(pid) if pid else None
                c.unload(name)
                time.sleep(1.0)
                after = device_bytes(pid) if pid else None
                if not share:
                    notes.append(f"unload {name}: worker {pid} held {_mb(before)} MB of device "
                                 f"memory, {_mb(after)} MB after (its process ended)")
    finally:
        d.stop()
        d.cleanup()
    return rows, notes


def _worker_total(pid: int) -> int:
    """A worker's device memory (NVML) plus its anonymous RSS: what it really holds."""
    dev = device_bytes(pid) or 0
    try:
        with open(f"/proc/{pid}/status") as f:
            anon = next(int(x.split()[1]) * 1024 for x in f if x.startswith("RssAnon:"))
    except OSError:
        anon = 0
    return dev + anon


def _mb(v: int | None) -> str:
    return "n/a" if v is None else f"{v / MB:.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(REPO / "bench" / "GPU_RESULTS.md"))
    args = p.parse_args(argv)
    why = cuda_available()
    if why is not None:
        print(f"bench.gpu: skipped: {why}")
        return 0
    started = time.time()
    info = versions()
    refs, cudnn_rows = inprocess(args.quick)
    alone, notes_a = edged_models(refs, share=False, quick=args.quick)
    shared, notes_s = edged_models(refs, share=True, quick=args.quick)
    head = ["model", "worker", "providers", "max abs diff vs in-process CUDA",
            "in-process p50 ms", "edged p50 ms", "estimate MB (before load)",
            "measured at load MB", "accounted after inferences MB",
            "device MB after 0 (NVML, worker)", "device MB after N", "worker pid"]
    lines = [
        "# edged on a GPU",
        "",
        f"Command: `python -m bench.gpu{' --quick' if args.quick else ''}` "
        f"(took {time.time() - started:.0f} s)",
        "",
        "- " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
        "Device MB: the model's worker's device memory by NVML (per process) after the load "
        "(0 inferences) and after N (200, or 50 with --quick); accounted: what edged's status "
        "says the model takes after them (RSS + device memory, re-measured).",
        "",
        "| " + " | ".join(head) + " |",
        "| " + " | ".join("---" for _ in head) + " |",
        *("| " + " | ".join(r) + " |" for r in alone + shared),
        "",
        "cuDNN algorithm search, in-process CUDA (first run ms, p50 ms):",
        "",
        "| model | HEURISTIC first | HEURISTIC p50 | EXHAUSTIVE first | EXHAUSTIVE p50 |",
        "| --- | --- | --- | --- | --- |",
        *("| " + " | ".join(r) + " |" for r in cudnn_rows),
        "",
        *(f"- {n}" for n in notes_a + notes_s),
        "",
    ]
    text = "\n".join(lines)
    Path(args.out).write_text(text)
    print(text)
    print("RESULT " + json.dumps({"alone": alone, "shared": shared, "info": info}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
