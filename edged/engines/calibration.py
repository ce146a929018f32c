"""Fixed costs of an engine worker, measured on this very device and kept in the state dir.

Why: what a worker costs before any model weight is counted differs by device and library
version far more than a constant can say. An idle CPU worker with onnxruntime imported is ~25 MB
on the x86 dev box; a CUDA worker on an H200 with onnxruntime-gpu 1.31 took 1.2 GB of device
memory for its context, cuDNN/cuBLAS handles and the EP before its first weight, against the
300 MiB the config guessed (issue 12). So the estimate's fixed terms come from measurements:

- ``worker_bytes``: a fresh worker's anonymous RSS with the runtime imported, plus one
  session's fixed cost (what estimate.py otherwise takes from its CPU constants);
- ``gpu_context_bytes``: what running a session on the GPU adds on top (CUDA context, cuDNN and
  cuBLAS handles, the EP's arena), device memory and host RSS together; 0 where there is no GPU.

They are measured at the first load on a device that has no calibration yet (from that load's
own numbers, see ``from_load``) and, exactly, by ``edged calibrate`` (``measure``: a tiny probe
model loaded on the CPU and, where there is one, on the GPU, in fresh workers). They are kept
in ``<state_dir>/calibration.json`` keyed by the device (GPU name and driver, or the Jetson's
L4T release, or the CPU model) and the onnxruntime version: a driver or library upgrade
measures again. ``engines.cuda_context_bytes`` in the config overrides the GPU term.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from edged.engines.base import EngineOptions, LoadResult

FILE_NAME = "calibration.json"
PROBE = Path(__file__).with_name("probe.onnx")  # y = x + 1 over [batch, 4]: no weights
DEFAULT_CUDA_CONTEXT_BYTES = 300 << 20  # before any measurement (a Jetson Orin: ~300 MiB)


@dataclass(frozen=True)
class FixedCosts:
    device: str
    worker_bytes: int
    gpu_context_bytes: int  # 0: no GPU measured
    measured_at: float
    source: str  # "first load" | "edged calibrate"


def ort_version() -> str:
    """The installed onnxruntime's version, from its metadata (the daemon does not import it)."""
    for dist in ("onnxruntime-gpu", "onnxruntime"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "none"


def device_key(kind: str, gpu_name: str, driver: str, cpu_model: str,
               runtime: str | None = None) -> str:
    """What a calibration is valid for: the GPU and its driver (or the CPU) and the runtime."""
    what = f"{gpu_name} driver {driver}" if gpu_name else cpu_model
    return f"{kind}: {what}; onnxruntime {runtime or ort_version()}"


class CalibrationStore:
    """``calibration.json`` in the state dir: {device key: FixedCosts}; atomic writes, and a
    re-read when the file changed (``edged calibrate`` may run beside the daemon)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / FILE_NAME
        self._cache: dict[str, FixedCosts] = {}
        self._stamp: tuple[int, int] | None = None

    def _read(self) -> dict[str, FixedCosts]:
        try:
            st = self.path.stat()
        except OSError:
            self._cache, self._stamp = {}, None
            return self._cache
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                raw: dict[str, Any] = json.loads(self.path.read_text())
                self._cache = {k: FixedCosts(**v) for k, v in raw.items()}
            except (OSError, ValueError, TypeError):
                self._cache = {}  # a damaged file: measure again rather than fail
            self._stamp = stamp
        return self._cache

    def get(self, device: str) -> FixedCosts | None:
        return self._read().get(device)

    def put(self, costs: FixedCosts) -> None:
        data = {k: asdict(v) for k, v in self._read().items()}
        data[costs.device] = asdict(costs)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".calibration.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=2, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._stamp = None


def apply(options: EngineOptions, costs: FixedCosts | None,
          cuda_override: int | None) -> EngineOptions:
    """``options`` with this device's measured fixed costs (the config's
    ``cuda_context_bytes``, when set, wins over the measured GPU term)."""
    from dataclasses import replace

    gpu = cuda_override if cuda_override is not None else (
        costs.gpu_context_bytes if costs is not None and costs.gpu_context_bytes
        else DEFAULT_CUDA_CONTEXT_BYTES)
    return replace(options, cuda_context_bytes=gpu,
                   worker_fixed_bytes=costs.worker_bytes if costs is not None else 0)


def from_load(device: str, footprint: int, model_bytes: int, gpu: bool, default_worker: int,
              previous: FixedCosts | None) -> FixedCosts:
    """Fixed costs read off a real first load in a fresh worker: what the load measured beyond
    the model's own estimated bytes (weights, activations, per-node costs). On the CPU that
    is the worker (interpreter, runtime, session); on a GPU, beyond a worker as known so far
    (``previous``, else ``default_worker``), the GPU's context, handles and EP."""
    if not gpu:
        context = previous.gpu_context_bytes if previous is not None else 0
        return FixedCosts(device, max(0, footprint - model_bytes), context, time.time(),
                          "first load")
    worker = previous.worker_bytes if previous is not None else default_worker
    return FixedCosts(device, worker, max(0, footprint - worker - model_bytes), time.time(),
                      "first load")


class ProbePool(Protocol):
    """What ``measure`` needs of the engine pool (workers.WorkerPool)."""

    def load(self, key: str, artifact: Path, fmt: str,
             options: EngineOptions | None = None) -> LoadResult: ...

    def unload(self, key: str) -> None: ...


def measure(pool: ProbePool, device: str, gpu: bool) -> FixedCosts:
    """``edged calibrate``: the probe model in a fresh worker on the CPU, then (``gpu``) on
    the GPU; the difference is the GPU's fixed cost."""
    cpu_opts = EngineOptions(providers=("CPUExecutionProvider",))
    r = pool.load("calibrate-cpu:1", PROBE, "onnx", cpu_opts)
    pool.unload("calibrate-cpu:1")
    context = 0
    if gpu:
        g = pool.load("calibrate-gpu:1", PROBE, "onnx",
                      EngineOptions(providers=("CUDAExecutionProvider",), uses_gpu=True))
        pool.unload("calibrate-gpu:1")
        if any(p != "CPUExecutionProvider" for p in g.providers):
            context = max(0, g.footprint_bytes - r.footprint_bytes)
    return FixedCosts(device, r.footprint_bytes, context, time.time(), "edged calibrate")
