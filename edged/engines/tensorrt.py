"""Native TensorRT engines (``.engine`` / ``.plan``): TensorRT 10's Python API + cuda-python.

Neither ``tensorrt`` nor ``cuda`` is imported at module level: on a Jetson they come from
JetPack (not PyPI) and elsewhere they are usually absent, so every entry point checks for them
and says what is missing (``FailedPrecondition("TensorRT is not installed ...")``).

An engine is specific to the TensorRT version and the GPU it was built on. When the version's
``engine_info`` (given at install) names them (``tensorrt_version``, ``compute_capability``),
``open`` compares them with the installed TensorRT and the GPU *before* deserialising, and a
mismatch is a FailedPrecondition naming both (``check_built_for``, a pure function). Without
them, deserialising one built elsewhere fails, and we report TensorRT's own reason with a
"rebuild it on this device" hint. The engine's device memory is checked against the model's
runtime cap (``memory_limit_bytes``, from its tier budget: see onnxruntime.py).

``inspect`` must deserialise the plan to learn its I/O tensors and device-memory size,
which needs the GPU and costs hundreds of MB: it runs in a short-lived helper process
(``python -m edged.engines.tensorrt inspect PATH``), never in the daemon.

One execution context per session, so inferences on it are serialised; device buffers are
allocated on first use and grown as shapes change. Data-dependent output shapes (which need an
``IOutputAllocator``) are not supported yet.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edged import errors as e
from edged.engines import estimate as est
from edged.engines.base import (
    EngineOptions,
    Inspection,
    Signature,
    TensorSpec,
    numpy_of_datatype,
    tensorrt_payload_offset,
)
from edged.engines.session import RunHandle

# TensorRT DataType names -> OIP datatype names.
TRT_TYPES = {"FLOAT": "FP32", "HALF": "FP16", "BF16": "BF16", "INT8": "INT8", "INT32": "INT32",
             "INT64": "INT64", "BOOL": "BOOL", "UINT8": "UINT8", "FP8": "FP8", "INT4": "INT4"}
INSPECT_TIMEOUT_S = 300.0


def _release(version: str) -> tuple[int, ...] | None:
    """``"10.3.0.26"`` -> (10, 3, 0): the parts an engine is tied to (the build number is not)."""
    m = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", version or "")
    return tuple(int(g or 0) for g in m.groups()) if m else None


def _capability(text: str) -> tuple[int, int] | None:
    """``"8.7"``, ``"sm_87"`` or ``"87"`` -> (8, 7)."""
    t = (text or "").strip().lower().removeprefix("sm_").removeprefix("sm")
    m = re.fullmatch(r"(\d+)\.(\d+)", t) or re.fullmatch(r"(\d+)(\d)", t)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_built_for(engine_info: Mapping[str, str], installed_version: str,
                    capability: tuple[int, int] | None, name: str) -> None:
    """Refuse an engine whose install-time ``engine_info`` says it was built for another
    TensorRT release or another GPU than this device's, before TensorRT is asked to
    deserialise it (which would only say "None"). Unknown or unparsable fields are not
    checked: deserialisation then decides."""
    built = engine_info.get("tensorrt_version", "")
    have, want = _release(installed_version), _release(built)
    if have is not None and want is not None and have != want:
        raise e.FailedPrecondition(
            f"{name} was built with TensorRT {built.strip()} but this device has TensorRT "
            f"{installed_version}: an engine only runs on the TensorRT release it was built "
            "with; rebuild it on this device (or install the ONNX model)", field="artifact")
    cc = _capability(engine_info.get("compute_capability", ""))
    if cc is not None and capability is not None and cc != capability:
        raise e.FailedPrecondition(
            f"{name} was built for a GPU of compute capability {cc[0]}.{cc[1]} but this "
            f"device's GPU is {capability[0]}.{capability[1]}: rebuild it on this device "
            "(or install the ONNX model)", field="artifact")


def require_tensorrt() -> None:
    missing = [m for m in ("tensorrt", "cuda") if importlib.util.find_spec(m) is None]
    if missing:
        names = {"tensorrt": "TensorRT (the tensorrt Python package)",
                 "cuda": "cuda-python"}
        raise e.FailedPrecondition(
            f"{' and '.join(names[m] for m in missing)} not installed, so TensorRT engines "
            "cannot be used on this device (on a Jetson they come with JetPack; elsewhere "
            "`pip install edged[tensorrt]`); use the ONNX model instead", field="format")


class TensorRTBackend:
    format = "tensorrt"

    def inspect(self, path: Path, options: EngineOptions) -> Inspection:
        require_tensorrt()
        proc = subprocess.run([sys.executable, "-m", "edged.engines.tensorrt", "inspect",
                               str(path)], capture_output=True, text=True, check=False,
                              timeout=INSPECT_TIMEOUT_S)
        try:
            info = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise e.Internal(f"inspecting {path.name} with TensorRT failed: "
                             f"{proc.stderr.strip()[-500:]}") from None
        if "error" in info:
            cls = getattr(e, info["error"], e.Internal)
            if not (isinstance(cls, type) and issubclass(cls, e.EdgedError)):
                cls = e.Internal
            raise cls(info["message"], field="artifact")
        sig = Signature.from_wire(info["signature"])
        engine_bytes = Path(path).stat().st_size
        overhead = est.worker_fixed(options) + options.cuda_context_bytes + info["device_memory"]
        details = {"tensorrt_version": info["version"], "layers": str(info["layers"]),
                   "device_memory_bytes": str(info["device_memory"]), "gpu": "true",
                   "estimate": f"worker {est.CPU_WORKER_BASE_BYTES} + cuda context "
                               f"{options.cuda_context_bytes} + engine {engine_bytes} + "
                               f"device memory {info['device_memory']}"}
        return Inspection("tensorrt", sig, engine_bytes, overhead, engine_bytes + overhead,
                          details)

    def open(self, path: Path, options: EngineOptions) -> TrtSession:
        require_tensorrt()
        return TrtSession(Path(path), options)

    def preload(self) -> None:
        """Nothing to import ahead: a spare worker for TensorRT engines stays as it is."""


def _modules() -> tuple[Any, Any]:
    import tensorrt as trt

    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:  # pragma: no cover - older cuda-python layout
        from cuda import cudart
    return trt, cudart


def _check(cudart: Any, result: Any, what: str) -> Any:
    """cuda-python returns (error, *values): raise on error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise e.Internal(f"CUDA {what} failed: {err}")
    return values[0] if len(values) == 1 else values


def _engine(trt: Any, cudart: Any, path: Path,
            engine_info: Mapping[str, str] | None = None) -> tuple[Any, Any, Any]:
    """(runtime, engine, logger) or FailedPrecondition with the reason (ours or TensorRT's)."""
    if _check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount") < 1:
        raise e.FailedPrecondition("no CUDA device: TensorRT engines need a GPU")
    props = _check(cudart, cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
    check_built_for(engine_info or {}, trt.__version__, (int(props.major), int(props.minor)),
                    path.name)
    logger = _logger(trt)
    data = path.read_bytes()
    start = tensorrt_payload_offset(data[:1 << 16])
    if start is None:
        raise e.InvalidArgument(f"{path.name} is not a TensorRT plan", field="artifact",
                                reason="CORRUPT_ARTIFACT")
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(memoryview(data)[start:])
    if engine is None:
        gpu = f"{props.name.decode(errors='replace')} (sm_{props.major}{props.minor})"
        reason = "; ".join(logger.errors[-3:]) or "no reason given"
        raise e.FailedPrecondition(
            f"TensorRT {trt.__version__} on {gpu} cannot load {path.name}: {reason}. Engines "
            "only run on the TensorRT version and GPU they were built with: rebuild it on "
            "this device (or install the ONNX model)", field="artifact")
    return runtime, engine, logger


def _logger(trt: Any) -> Any:
    class Logger(trt.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(msg)

    return Logger()


def _signature(trt: Any, engine: Any) -> Signature:
    ins: list[TensorSpec] = []
    outs: list[TensorSpec] = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtype = TRT_TYPES.get(engine.get_tensor_dtype(name).name, "UNKNOWN")
        spec = TensorSpec(name, dtype, tuple(int(d) for d in engine.get_tensor_shape(name)))
        (ins if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outs).append(spec)
    return Signature(tuple(ins), tuple(outs))


def _device_memory(engine: Any) -> int:
    size = getattr(engine, "device_memory_size_v2", None)  # TensorRT >= 10.0
    return int(size if size is not None else engine.device_memory_size)


class _NoCancel:
    """An enqueued TensorRT execution cannot be abandoned: its request just runs to the end."""

    cancelled = False

    def cancel(self) -> None:
        pass


class TrtSession:
    def __init__(self, path: Path, options: EngineOptions) -> None:
        trt, cudart = _modules()
        self._trt, self._cudart = trt, cudart
        self._runtime, self._engine, self._logger = _engine(trt, cudart, path,
                                                            options.engine_info)
        needed = _device_memory(self._engine)
        if options.memory_limit_bytes and needed > options.memory_limit_bytes:
            raise e.ResourceExhausted(f"{path.name} needs {needed} bytes of device memory, "
                                      f"over its cap of {options.memory_limit_bytes} (from "
                                      "its tier's budget)")
        self._context = self._engine.create_execution_context()
        self._stream = _check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.signature = _signature(trt, self._engine)
        self.providers = ("TensorRT",)
        self.dim_names: Mapping[str, tuple[str | None, ...]] = {}
        # The warm-up uses the optimization profile's "opt" shapes for dynamic inputs.
        self.preferred_shapes: Mapping[str, tuple[int, ...]] = {
            t.name: tuple(int(d) for d in self._engine.get_tensor_profile_shape(t.name, 0)[1])
            for t in self.signature.inputs if -1 in t.shape}
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._lock = threading.Lock()

    def run_handle(self) -> _NoCancel:
        return _NoCancel()

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None,
            handle: RunHandle | None = None) -> dict[str, np.ndarray]:
        cudart, ctx, stream = self._cudart, self._context, self._stream
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        names = list(outputs) if outputs else [t.name for t in self.signature.outputs]
        with self._lock:
            for name, arr in feeds.items():
                arr = np.ascontiguousarray(arr)
                if not ctx.set_input_shape(name, arr.shape):
                    raise e.InvalidArgument(f"input '{name}': shape {arr.shape} is outside "
                                            "the engine's optimization profile", field=name,
                                            reason="BAD_TENSOR")
                ptr = self._device(name, arr.nbytes)
                _check(cudart, cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d,
                                                      stream), "cudaMemcpyAsync")
                ctx.set_tensor_address(name, ptr)
            hosts = {}
            for t in self.signature.outputs:  # every output needs an address, wanted or not
                shape = tuple(ctx.get_tensor_shape(t.name))
                if any(d < 0 for d in shape):
                    raise e.Unimplemented(f"output '{t.name}' has a data-dependent shape; "
                                          "edged does not support that for TensorRT yet")
                host = np.empty(shape, numpy_of_datatype(t.datatype))
                ctx.set_tensor_address(t.name, self._device(t.name, host.nbytes))
                hosts[t.name] = host
            if not ctx.execute_async_v3(stream):
                raise e.Internal("TensorRT execute_async_v3 failed: "
                                 + "; ".join(self._logger.errors[-3:]))
            for name in names:
                host = hosts[name]
                _check(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, self._buffers[name][0],
                                                      host.nbytes, d2h, stream),
                       "cudaMemcpyAsync")
            _check(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return {name: hosts[name] for name in names}

    def bind(self, feeds: Mapping[str, np.ndarray],
             outputs: Mapping[str, np.ndarray]) -> None:
        """Not yet: ``run`` copies each output from the device into a fresh host array (the
        lane then copies it once more). Writing it into the lane's memory is the same copy
        with another destination, left until it can be run on a TensorRT device."""
        return None

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self._cudart, self._cudart.cudaFree(ptr), "cudaFree")
            ptr = int(_check(self._cudart, self._cudart.cudaMalloc(max(nbytes, 1)),
                             "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers.clear()
        self._cudart.cudaStreamDestroy(self._stream)
        del self._context, self._engine, self._runtime


def _describe(path: Path) -> dict[str, Any]:
    """What ``inspect`` needs; runs in the helper process."""
    trt, cudart = _modules()
    _runtime, engine, _logger = _engine(trt, cudart, path)
    return {"signature": _signature(trt, engine).to_wire(), "layers": engine.num_layers,
            "device_memory": _device_memory(engine), "version": trt.__version__}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "inspect":
        print("usage: python -m edged.engines.tensorrt inspect PATH", file=sys.stderr)
        return 2
    try:
        out: dict[str, Any] = _describe(Path(argv[1]))
    except e.EdgedError as exc:
        out = {"error": type(exc).__name__, "message": exc.message}
    except Exception as exc:  # noqa: BLE001 - reported to the daemon, not raised there
        out = {"error": "Internal", "message": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
