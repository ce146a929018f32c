"""The engine interface: tensor signatures, options, the lazy backend registry, format detection.

The daemon imports this module, the model manager builds ``EngineOptions`` and reads
``Inspection``s from it, and the worker processes use the same types: so nothing here may import
onnxruntime, tensorrt or onnx (onnxruntime alone costs ~37 MiB of RSS and the daemon's idle
budget is 80 MB). Backends are named by a ``"module:Class"`` string and imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edged import errors as e
from edged.datatypes import NUMPY_TO_OIP, OIP_TO_NUMPY

if TYPE_CHECKING:  # pragma: no cover
    from edged.engines.session import Session

# Every Open Inference Protocol datatype name. BYTES (string tensors) and BF16 (numpy has no
# bfloat16) appear in signatures but cannot cross the worker channel yet.
DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BYTES", "BF16")
UNSUPPORTED_DATATYPES = {"BYTES": "string tensors are not supported by edged's engines yet",
                         "BF16": "numpy has no bfloat16; send FP32 to a BF16 model's cast"}

BACKENDS: Mapping[str, str] = {
    "onnx": "edged.engines.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "edged.engines.tensorrt:TensorRTBackend",
}
TENSORRT_SUFFIXES = (".engine", ".plan", ".trt")
TENSORRT_MAGIC = b"ftrt"


# A signature as plain tuples: ((name, datatype, shape) per input, the same per output).
SignatureWire = tuple[tuple[tuple[str, str, tuple[int, ...]], ...],
                      tuple[tuple[str, str, tuple[int, ...]], ...]]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # an OIP datatype name (see DATATYPES)
    shape: tuple[int, ...]  # -1 marks a dynamic dimension

    def describe(self) -> str:
        return f"{self.datatype}{list(self.shape)}"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)

    def diff(self, other: Signature) -> list[str]:
        """What a client would notice when ``self`` is replaced by ``other`` ([] if nothing).

        Compared by tensor name, not position: OIP clients address tensors by name.
        """
        out: list[str] = []
        for kind, mine, theirs in (("input", self.inputs, other.inputs),
                                   ("output", self.outputs, other.outputs)):
            a = {t.name: t for t in mine}
            b = {t.name: t for t in theirs}
            for name in a.keys() - b.keys():
                out.append(f"{kind} '{name}' removed")
            for name in b.keys() - a.keys():
                out.append(f"{kind} '{name}' added ({b[name].describe()})")
            for name in a.keys() & b.keys():
                if a[name].datatype != b[name].datatype:
                    out.append(f"{kind} '{name}': datatype {a[name].datatype} -> "
                               f"{b[name].datatype}")
                if a[name].shape != b[name].shape:
                    out.append(f"{kind} '{name}': shape {list(a[name].shape)} -> "
                               f"{list(b[name].shape)}")
        return sorted(out)

    def to_wire(self) -> SignatureWire:
        """Plain tuples, so the signature crosses the worker channel through ``marshal``."""
        return (tuple((t.name, t.datatype, t.shape) for t in self.inputs),
                tuple((t.name, t.datatype, t.shape) for t in self.outputs))

    @staticmethod
    def from_wire(wire: SignatureWire) -> Signature:
        ins, outs = wire
        return Signature(tuple(TensorSpec(n, d, tuple(s)) for n, d, s in ins),
                         tuple(TensorSpec(n, d, tuple(s)) for n, d, s in outs))


@dataclass(frozen=True)
class Inspection:
    """What the artifact says about itself, without loading it into a session."""

    format: str
    signature: Signature
    weights_bytes: int
    overhead_bytes: int
    estimate_bytes: int
    details: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineOptions:
    providers: tuple[str, ...] = ()  # preferred execution providers; () = every available one
    tensorrt_ep: bool = False  # the TensorRT EP is opt-in per model (engine builds take minutes)
    precision: str = "fp32"  # fp32 | fp16 | int8 (TensorRT EP / native TensorRT only)
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    # Cap for the runtime's own allocations (ORT CPU arena, CUDA gpu_mem_limit, TensorRT
    # workspace and device memory), from the tier budget: the pool asks its ``memory_cap`` at
    # load time (see onnxruntime.py for the rule). 0 and no pool cap = derive one from the
    # artifact (estimate.default_memory_limit): never unbounded.
    memory_limit_bytes: int = 0
    # Per-input shapes for the warm-up inference; the default puts 1 in the first dynamic
    # dimension (and in every dimension sharing its symbolic name) and 64 in the others.
    warmup_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    cuda_context_bytes: int = 300 << 20  # one CUDA context, for estimates (Jetson: ~300 MiB)
    # A fresh worker + one session, as measured on this device (engines/calibration.py);
    # 0: the estimate's constants (estimate.CPU_WORKER_BASE_BYTES + ORT_SESSION_FIXED_BYTES).
    worker_fixed_bytes: int = 0
    # The CUDA EP's arena cap: the model's admitted bytes + the configured headroom (set by the
    # daemon); 0: ``memory_limit_bytes``. cuDNN: bounded defaults, configurable
    # (engines.cudnn_conv_algo_search / cudnn_conv_use_max_workspace).
    gpu_mem_limit_bytes: int = 0
    cudnn_conv_algo_search: str = "HEURISTIC"
    cudnn_conv_use_max_workspace: bool = False
    cache_dir: str = ""  # where the TensorRT EP may cache built engines ("" = no cache)
    # Runs on a GPU (CUDA / TensorRT EP chosen, or a TensorRT engine): the planner counts such
    # a model as unswappable memory (manager: LoadSpec.gpu).
    uses_gpu: bool = False
    # What the installer said the artifact was built for (a version's engine_info), e.g.
    # {"tensorrt_version": "10.3.0", "compute_capability": "8.7"}: checked before a TensorRT
    # engine is deserialised (tensorrt.check_built_for).
    engine_info: Mapping[str, str] = field(default_factory=dict)

    def to_wire(self) -> dict[str, object]:
        return {"providers": tuple(self.providers), "tensorrt_ep": self.tensorrt_ep,
                "precision": self.precision, "intra_op_threads": self.intra_op_threads,
                "inter_op_threads": self.inter_op_threads,
                "memory_limit_bytes": self.memory_limit_bytes,
                "warmup_shapes": {k: tuple(v) for k, v in self.warmup_shapes.items()},
                "cuda_context_bytes": self.cuda_context_bytes, "cache_dir": self.cache_dir,
                "worker_fixed_bytes": self.worker_fixed_bytes,
                "gpu_mem_limit_bytes": self.gpu_mem_limit_bytes,
                "cudnn_conv_algo_search": self.cudnn_conv_algo_search,
                "cudnn_conv_use_max_workspace": self.cudnn_conv_use_max_workspace,
                "uses_gpu": self.uses_gpu, "engine_info": dict(self.engine_info)}

    @staticmethod
    def from_wire(d: Mapping[str, Any]) -> EngineOptions:
        return EngineOptions(**{**d, "providers": tuple(d.get("providers", ())),
                                "warmup_shapes": dict(d.get("warmup_shapes", {})),
                                "engine_info": dict(d.get("engine_info", {}))})


@dataclass(frozen=True)
class ShmRef:
    """A tensor in a POSIX shared-memory object (``/dev/shm/<name>``) that the worker maps.

    For an output, ``datatype``/``shape`` may be empty: the worker fills them in its reply.
    """

    name: str
    offset: int
    byte_size: int
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class LoadResult:
    key: str
    pid: int
    load_seconds: float  # the whole load: worker start (if any) + session + warm-up
    footprint_bytes: int  # see WorkerPool.load: what unloading this model gives back
    signature: Signature
    providers: tuple[str, ...]
    session_seconds: float = 0.0  # creating the runtime session alone
    warmup_seconds: float = 0.0
    peak_bytes: int = 0  # the worker's peak RSS during the load (load-time transient copies)
    dedicated: bool = True  # False when the model joined an existing group worker
    memory_limit_bytes: int = 0  # the runtime cap the session was opened with
    gpu_bytes: int = 0  # device memory over the load (NvMap / NVML), part of footprint_bytes


class Backend(Protocol):
    """One engine format. ``inspect`` runs in the daemon (cheap, no heavy imports);
    ``open`` runs inside a worker process."""

    format: str

    def inspect(self, path: Path, options: EngineOptions) -> Inspection: ...

    def open(self, path: Path, options: EngineOptions) -> Session: ...

    def preload(self) -> None:
        """Import the runtime now (a spare worker, ahead of any load)."""


def datatype_of_numpy(dtype: np.dtype | type) -> str:
    dt = np.dtype(dtype)
    name = NUMPY_TO_OIP.get(dt)
    if name is not None:
        return name
    if dt.kind in "OUS":
        return "BYTES"
    raise e.InvalidArgument(f"numpy dtype {dt} has no Open Inference Protocol datatype",
                            reason="BAD_TENSOR")


def numpy_of_datatype(name: str) -> np.dtype:
    """OIP name -> numpy dtype; BYTES and BF16 are refused with the reason."""
    if name in OIP_TO_NUMPY:
        return OIP_TO_NUMPY[name]
    why = UNSUPPORTED_DATATYPES.get(name, f"unknown datatype (known: {', '.join(DATATYPES)})")
    raise e.InvalidArgument(f"datatype {name}: {why}", reason="BAD_TENSOR")


def get_backend(fmt: str) -> Backend:
    """Import the backend for ``fmt`` now (never at daemon start-up) and return an instance."""
    target = BACKENDS.get(fmt)
    if target is None:
        raise e.InvalidArgument(f"unknown model format {fmt!r} (known: {', '.join(BACKENDS)})",
                                field="format")
    module, _, cls = target.partition(":")
    backend: Backend = getattr(importlib.import_module(module), cls)()
    return backend


def detect_format(path: Path) -> str:
    """``"onnx"`` or ``"tensorrt"`` from the file's bytes (and suffix), without loading it.

    A missing, empty, truncated or garbage file is an ``InvalidArgument`` that says why, so an
    install or a capacity check fails before any worker is started.
    """
    from edged.engines import onnx_inspect

    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(64 << 10)
    except FileNotFoundError:
        raise e.InvalidArgument(f"artifact {path} does not exist", field="artifact") from None
    except OSError as exc:
        raise e.InvalidArgument(f"artifact {path} cannot be read: {exc.strerror}",
                                field="artifact") from None
    if not head:
        raise e.InvalidArgument(f"artifact {path.name} is empty", field="artifact",
                                reason="CORRUPT_ARTIFACT")
    if tensorrt_payload_offset(head) is not None:
        return "tensorrt"
    if path.suffix.lower() in TENSORRT_SUFFIXES:
        raise e.InvalidArgument(
            f"artifact {path.name} has a TensorRT suffix but no TensorRT plan header "
            f"(expected {TENSORRT_MAGIC!r}, found {head[:4]!r})", field="artifact",
            reason="CORRUPT_ARTIFACT")
    onnx_inspect.check_model_file(path)
    return "onnx"


def tensorrt_payload_offset(head: bytes) -> int | None:
    """Where the TensorRT plan starts: 0, or after an Ultralytics-style JSON prefix
    (``<u32 little-endian length><JSON>``) that exporters put in front of ``.engine`` files."""
    if head.startswith(TENSORRT_MAGIC):
        return 0
    if len(head) >= 8:
        n = int.from_bytes(head[:4], "little")
        if 0 < n < len(head) - 8 and head[4:5] == b"{" and \
                head[4 + n:8 + n] == TENSORRT_MAGIC:
            return 4 + n
    return None


def inspect(path: Path, fmt: str | None = None,
            options: EngineOptions | None = None) -> Inspection:
    """Signature, weights and the memory estimate of an artifact, cheaply, in this process."""
    fmt = fmt or detect_format(path)
    return get_backend(fmt).inspect(Path(path), options or EngineOptions())
