"""The ONNX Runtime backend.

``inspect`` runs in the daemon and never imports onnxruntime (it reads the protobuf itself, see
onnx_inspect.py); ``open`` runs in a worker and is the only place that does. Execution
providers: TensorRT EP (only when opted in per model) -> CUDA -> CPU, restricted to the
model's preferred list and to what this onnxruntime build has; the session reports which ones
it really uses. Runtime memory is capped from the tier budget, never left unbounded: the CPU
arena is a process-wide allocator with ``max_mem`` and ``kSameAsRequested`` growth (not the
default power-of-two doubling), CUDA gets ``gpu_mem_limit``, the TensorRT EP a workspace cap.

The cap (``EngineOptions.memory_limit_bytes``) is set by the daemon at load time
(``WorkerPool(memory_cap=...)``, wired in daemon.py), by ``estimate.runtime_cap``:

    cap = max(the model's accounted bytes, its tier's budget - every other model in that tier)

— what its tier has left, and at least its measured footprint (else its estimate), so a
model cannot grow past its tier's budget and an admitted load is never refused by its own cap.
It applies to the CPU arena (``max_mem``) as is; CUDA's ``gpu_mem_limit`` is tighter: the
model's admitted bytes plus ``engines.gpu_mem_headroom`` (``cuda_options``), so a GPU model
cannot take more device memory than it was admitted with (plus headroom); the TensorRT EP's
workspace gets what the cap leaves after the weights (``estimate.tensorrt_ep_workspace``). A
group worker's CPU arena keeps the cap of its first model (ORT cannot resize a registered
allocator). Without a daemon (a bare pool) the cap is ``estimate.default_memory_limit``.
An inference that needs more than its cap fails with ResourceExhausted; the model keeps
serving smaller ones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from edged import errors as e
from edged.engines import activations, onnx_inspect
from edged.engines import estimate as est
from edged.engines.base import EngineOptions, Inspection, Signature, TensorSpec

if TYPE_CHECKING:  # pragma: no cover - imported at run time only inside worker processes
    import onnxruntime as ort

# ONNX Runtime's type strings -> OIP datatype names.
ORT_TYPES = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(double)": "FP64",
             "tensor(bfloat16)": "BF16", "tensor(int8)": "INT8", "tensor(int16)": "INT16",
             "tensor(int32)": "INT32", "tensor(int64)": "INT64", "tensor(uint8)": "UINT8",
             "tensor(uint16)": "UINT16", "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64",
             "tensor(bool)": "BOOL", "tensor(string)": "BYTES"}
# How ORT says an inference ran out of its cap: the BFC arena (CPU or CUDA) refusing, CUDA's
# allocator, cuDNN / cuBLAS failing to allocate their workspace.
_OUT_OF_MEMORY = ("bfc_arena", "Failed to allocate", "Available memory", "out of memory",
                  "CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED",
                  "cudaErrorMemoryAllocation")
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")


class OnnxRuntimeBackend:
    format = "onnx"

    def inspect(self, path: Path, options: EngineOptions) -> Inspection:
        summary = onnx_inspect.summarize(path)
        providers = est.choose_providers(est.installed_ort_providers(), options)
        try:
            acts, shapes = activations.warmup_activations(path, options.warmup_shapes)
        except e.InvalidArgument:  # warm-up shapes that name no input: the load will say so
            acts, shapes = None, {}
        overhead, estimate, details = est.onnx_estimate(summary, options, providers, acts,
                                                        shapes)
        return Inspection("onnx", summary.signature, summary.weights_bytes, overhead, estimate,
                          details)

    def open(self, path: Path, options: EngineOptions) -> OrtSession:
        return OrtSession(Path(path), options)

    def preload(self) -> None:
        """Import onnxruntime now (in a spare worker, before any load needs it)."""
        import onnxruntime  # noqa: F401


class _Cancel:
    """One inference's RunOptions: setting ``terminate`` makes ORT abandon that run."""

    def __init__(self, run_options: ort.RunOptions) -> None:
        self.run_options = run_options
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.run_options.terminate = True


class OrtSession:
    def __init__(self, path: Path, options: EngineOptions) -> None:
        import onnxruntime as ort  # the one place: only worker processes get here

        self._ort = ort
        available = tuple(ort.get_available_providers())
        chosen = est.choose_providers(available, options)
        if not chosen:
            raise e.FailedPrecondition(
                f"none of the preferred execution providers {list(options.providers)} is "
                f"available in this onnxruntime (available: {list(available)})",
                field="providers")
        # (the file sizes stand in for the weights: parsing the model again costs ~15 ms)
        weights = _artifact_bytes(path)
        limit = options.memory_limit_bytes or est.default_memory_limit(weights)
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.intra_op_threads
        so.inter_op_num_threads = options.inter_op_threads
        # Fatal only: every error ORT logs is also raised (and reported by the daemon, once, in
        # the journal's one-line form), and its own lines would reach stderr in ANSI colours.
        so.log_severity_level = 4
        so.enable_cpu_mem_arena = True
        # No memory pattern: with it, the second run at a shape allocates one more block for
        # the whole plan while the arena keeps the first run's chunks (ppocr-det at 640x640:
        # 68 MiB of activations after the warm-up, 115-124 MiB after the next request), so
        # the footprint measured at load would not hold under traffic. Latency cost measured
        # on ppocr-det 640x640: within noise (115 vs 116 ms).
        so.enable_mem_pattern = False
        if _register_cpu_arena(ort, limit):
            so.add_session_config_entry("session.use_env_allocators", "1")
        try:
            self._sess = ort.InferenceSession(str(path), so,
                                              providers=_provider_list(chosen, options, limit,
                                                                       weights))
        except Exception as exc:  # noqa: BLE001 - ORT raises its own pybind exception types
            raise load_error(path, exc) from None
        self.providers: tuple[str, ...] = tuple(self._sess.get_providers())
        ins, outs = self._sess.get_inputs(), self._sess.get_outputs()
        self.signature = Signature(tuple(_spec(i) for i in ins), tuple(_spec(o) for o in outs))
        self.dim_names: Mapping[str, tuple[str | None, ...]] = {
            i.name: tuple(d if isinstance(d, str) else None for d in (i.shape or ()))
            for i in ins}
        self.preferred_shapes: Mapping[str, tuple[int, ...]] = {}  # (the defaults suit ORT)
        self._all_outputs = [o.name for o in outs]
        # CPU only: call the binding directly. The Python wrapper re-validates input names (the
        # daemon did) and handles GPU EP fallback (not needed on CPU): ~5 us per inference.
        self._run = self._sess.run
        binding: Any = getattr(self._sess, "_sess", None)
        if self.providers == (est.CPU,) and callable(getattr(binding, "run", None)):
            self._run = binding.run

    def run_handle(self) -> _Cancel:
        return _Cancel(self._ort.RunOptions())

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None,
            handle: _Cancel | None = None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs else self._all_outputs
        try:
            values = self._run(names, feeds if isinstance(feeds, dict) else dict(feeds),
                               handle.run_options if handle is not None else None)
        except Exception as exc:  # noqa: BLE001
            raise run_error(exc) from None
        return dict(zip(names, values, strict=True))

    def bind(self, feeds: Mapping[str, np.ndarray],
             outputs: Mapping[str, np.ndarray]) -> _Bound | None:
        """ONNX Runtime's IO binding, to OrtValues over the arrays' own memory (no copy).
        On CUDA the outputs' device-to-host copy lands in the arrays (a lane's memory) instead
        of a buffer copied again, and the inputs are copied to the device straight from them.
        On CPU it saves the output copies but ORT's bound path costs more than they do
        (bench/lane_bind.py): lane.py binds only sessions on a device."""
        ort = self._ort
        try:
            binding = self._sess.io_binding()
            for name, arr in feeds.items():
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr))
            for name, arr in outputs.items():
                binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(arr))
        except Exception:  # noqa: BLE001 - a dtype ORT cannot wrap: run unbound instead
            return None
        return _Bound(self._sess, binding, self.providers != (est.CPU,))

    def close(self) -> None:
        del self._sess


class _Bound:
    def __init__(self, sess: ort.InferenceSession, binding: ort.IOBinding, sync: bool) -> None:
        self._sess, self._binding, self._sync = sess, binding, sync

    def run(self, handle: _Cancel | None) -> None:
        try:
            self._sess.run_with_iobinding(self._binding,
                                          handle.run_options if handle is not None else None)
            if self._sync:  # (device outputs would be copied asynchronously otherwise)
                self._binding.synchronize_outputs()
        except Exception as exc:  # noqa: BLE001
            raise run_error(exc) from None


def _artifact_bytes(path: Path) -> int:
    """The model file plus any external data files next to it (named ``<model>.*``)."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def _register_cpu_arena(ort: ModuleType, limit: int) -> bool:
    """One capped CPU arena per worker process, shared by the sessions in it (a group worker
    keeps the cap of its first model: ORT cannot resize a registered allocator)."""
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                             ort.OrtMemType.DEFAULT)
    cfg = ort.OrtArenaCfg({"max_mem": int(limit), "arena_extend_strategy": 1})  # kSameAsRequested
    try:
        ort.create_and_register_allocator(info, cfg)
    except Exception as exc:  # noqa: BLE001
        return "already" in str(exc).lower()
    return True


def _provider_list(chosen: tuple[str, ...], options: EngineOptions, limit: int,
                   weights: int) -> list[str | tuple[str, dict[str, str]]]:
    out: list[str | tuple[str, dict[str, str]]] = []
    for p in chosen:
        if p == est.CUDA:
            out.append((p, cuda_options(options, limit)))
        elif p == est.TENSORRT_EP:
            workspace = est.tensorrt_ep_workspace(limit, weights)
            opts = {"trt_max_workspace_size": str(workspace),
                    "trt_fp16_enable": str(options.precision in ("fp16", "int8")),
                    "trt_int8_enable": str(options.precision == "int8")}
            if options.cache_dir:
                opts.update(trt_engine_cache_enable="True",
                            trt_engine_cache_path=options.cache_dir)
            out.append((p, opts))
        else:
            out.append(p)
    return out


def cuda_options(options: EngineOptions, limit: int) -> dict[str, str]:
    """The CUDA EP's options: its arena capped at the model's admitted bytes plus headroom
    (``gpu_mem_limit_bytes``, else the runtime cap), grown as requested (not doubled); cuDNN's
    algorithm search and workspace bounded by default: EXHAUSTIVE search (ORT's default)
    tries every algorithm with its workspace at the first run of each shape, and
    ``cudnn_conv_use_max_workspace`` lets a convolution's workspace grow up to the cap."""
    return {"gpu_mem_limit": str(options.gpu_mem_limit_bytes or limit),
            "arena_extend_strategy": "kSameAsRequested",
            "cudnn_conv_algo_search": options.cudnn_conv_algo_search,
            "cudnn_conv_use_max_workspace": "1" if options.cudnn_conv_use_max_workspace else "0",
            "do_copy_in_default_stream": "1"}


def _spec(arg: ort.NodeArg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or ()))
    return TensorSpec(arg.name, ORT_TYPES.get(arg.type, arg.type), shape)


def _message(exc: BaseException) -> str:
    return _ORT_PREFIX.sub("", str(exc).strip()).replace("\n", " ")


def load_error(path: Path, exc: BaseException) -> e.EdgedError:
    """ORT's load failures as domain errors: a bad artifact is the caller's problem (clear
    reason), a missing operator is a precondition, anything else is internal."""
    kind, msg = type(exc).__name__, _message(exc)
    where = f"artifact {path.name}"
    if kind == "InvalidProtobuf":
        return e.DataLoss(f"{where} is corrupt: {msg}", field="artifact",
                          reason="CORRUPT_ARTIFACT")
    if kind in ("InvalidGraph", "InvalidArgument"):
        return e.InvalidArgument(f"{where} is not a valid model: {msg}", field="artifact",
                                 reason="CORRUPT_ARTIFACT")
    if kind == "NoSuchFile":
        return e.InvalidArgument(f"{where}: {msg}", field="artifact")
    if kind == "NotImplemented":
        return e.FailedPrecondition(f"{where} needs something this onnxruntime lacks: {msg}")
    if "external" in msg.lower() or "open file" in msg.lower():
        return e.DataLoss(f"{where}: {msg}", field="artifact", reason="CORRUPT_ARTIFACT")
    return e.Internal(f"onnxruntime could not load {where}: {msg}")


def run_error(exc: BaseException) -> e.EdgedError:
    kind, msg = type(exc).__name__, _message(exc)
    if kind == "InvalidArgument":
        return e.InvalidArgument(msg, reason="BAD_TENSOR")
    if "terminate flag" in msg:
        return e.DeadlineExceeded("inference cancelled: its deadline passed")
    if any(s in msg for s in _OUT_OF_MEMORY):
        return e.ResourceExhausted(f"inference needs more memory than the model's cap "
                                   f"(memory_limit_bytes): {msg}")
    return e.Internal(f"inference failed: {msg}")
