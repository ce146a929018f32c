"""Memory estimates for an artifact before it is loaded.

The estimate predicts the *measured footprint* that ``WorkerPool.load`` reports for a model in a
dedicated worker: the worker's anonymous resident memory after the warm-up (see workers.py),
i.e. what unloading the model returns to ``MemAvailable``. It is made of

    worker base     an idle worker: Python + numpy + onnxruntime + the edged worker modules
    session fixed   one ORT session (allocators, kernel registry, thread pool)
    per node        each graph node, subgraph bodies included (kernels, node args, plans)
    weights         initializer + Constant-node bytes, once: the worker calls malloc_trim()
                    after creating the session, so the transient protobuf copies do not linger
    activations     what ORT's CPU arena reserves for the live activations at the warm-up's
                    shapes: the graph's liveness played through a model of the BFC arena
                    (activations.py), fragmentation included
    provider        + one CUDA context when the CUDA or TensorRT EP will be used, + the
                    TensorRT EP's workspace; on a Jetson these come out of the same RAM

Calibrated on the 2-core x86 dev box (onnxruntime 1.32 CPU, Python 3.11) against the demo models
and generated 8/64/256 MB models: see tests/unit/test_engine_estimate.py, which prints the table
and holds every model of 8 MB and more to +-15%. The CUDA/TensorRT terms are not calibrated
(no GPU here). Both fixed terms are measured per device when it can be (calibration.py: the
worker + session term and the GPU context); ``engines.cuda_context_bytes`` overrides the GPU's.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

from edged.engines.activations import Activations
from edged.engines.base import EngineOptions
from edged.engines.onnx_inspect import OnnxSummary

MiB = 1 << 20
CPU_WORKER_BASE_BYTES = 25_270_000  # measured: an idle worker with onnxruntime imported (24.1 MiB)
ORT_SESSION_FIXED_BYTES = 1_400_000  # measured: a 5-node model's session
ORT_PER_NODE_BYTES = 4_650  # measured: 500 vs 2000 chained Add/Mul nodes
WEIGHTS_FACTOR = 1.0  # measured: 8/64/256 MB MatMul models, ~1.00-1.02 incl. activations
TENSORRT_EP_WORKSPACE_BYTES = 256 * MiB  # the estimate's workspace term (and cap when 0)
TENSORRT_EP_MIN_WORKSPACE_BYTES = 32 * MiB  # TensorRT finds few tactics with less

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT_EP = "TensorrtExecutionProvider"
_EP_LIBRARIES = {CUDA: "libonnxruntime_providers_cuda.so",
                 TENSORRT_EP: "libonnxruntime_providers_tensorrt.so"}


def installed_ort_providers() -> tuple[str, ...]:
    """The execution providers the installed onnxruntime ships, found from its files: the
    daemon must not import onnxruntime just to plan memory (~37 MiB of RSS)."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return ()
    capi = Path(next(iter(spec.submodule_search_locations))) / "capi"
    found = [p for p, lib in _EP_LIBRARIES.items() if (capi / lib).exists()]
    return (*[p for p in (TENSORRT_EP, CUDA) if p in found], CPU)


def choose_providers(available: tuple[str, ...], options: EngineOptions) -> tuple[str, ...]:
    """TensorRT EP (only when opted in) -> CUDA -> CPU, restricted to the preferred ones."""
    order = [p for p in (TENSORRT_EP, CUDA, CPU) if p in available]
    if not options.tensorrt_ep:
        order = [p for p in order if p != TENSORRT_EP]
    if options.providers:
        order = [p for p in order if p in options.providers]
    return tuple(order)


def onnx_estimate(summary: OnnxSummary, options: EngineOptions,
                  providers: tuple[str, ...], activations: Activations | None = None,
                  shapes: Mapping[str, tuple[int, ...]] | None = None,
                  ) -> tuple[int, int, Mapping[str, str]]:
    """(overhead, estimate, details) for an ONNX model run by ``providers``; ``activations``
    is the graph's live peak at the warm-up ``shapes`` (None: not known, not counted)."""
    weights = summary.weights_bytes
    act = activations.arena_bytes if activations else 0
    fixed = worker_fixed(options)
    overhead = (fixed + ORT_PER_NODE_BYTES * summary.nodes + int((WEIGHTS_FACTOR - 1) * weights)
                + act)
    gpu = CUDA in providers or TENSORRT_EP in providers
    if gpu:
        overhead += options.cuda_context_bytes
    if TENSORRT_EP in providers:
        overhead += min(options.memory_limit_bytes or TENSORRT_EP_WORKSPACE_BYTES,
                        TENSORRT_EP_WORKSPACE_BYTES)
    # Loading holds the parsed protobuf and the initialized tensors at once: the worker's RSS
    # peaks near one more copy of the weights before malloc_trim gives it back.
    details = {
        "load_peak_bytes": str(weights + overhead + weights),
        "providers": ",".join(providers) or "none available",
        "gpu": str(gpu).lower(),
        "nodes": str(summary.nodes),
        "initializers": str(summary.initializers),
        "constants": str(summary.constants),
        "subgraphs": str(summary.subgraphs),
        "external_data_bytes": str(summary.external_bytes),
        "ir_version": str(summary.ir_version),
        "opsets": ",".join(f"{k}={v}" for k, v in sorted(summary.opsets.items())),
        "producer": summary.producer,
        "activation_bytes": str(act),
        "activation_peak_bytes": str(activations.peak_bytes if activations else 0),
        "activation_total_bytes": str(activations.total_bytes if activations else 0),
        "activation_unknown_tensors": str(activations.unknown if activations else -1),
        "activation_shapes": ";".join(f"{k}={'x'.join(map(str, v))}"
                                      for k, v in (shapes or {}).items()),
        "worker_fixed_bytes": str(fixed),
        "fixed_costs": "calibrated" if options.worker_fixed_bytes else "defaults",
        "estimate": (f"worker + session {fixed} + {summary.nodes} nodes x "
                     f"{ORT_PER_NODE_BYTES} + weights {weights}"
                     f" + activations {act}"
                     + (f" + cuda context {options.cuda_context_bytes}" if gpu else "")),
    }
    return overhead, weights + overhead, details


def worker_fixed(options: EngineOptions) -> int:
    """A fresh worker and one session: this device's measurement (calibration.py) if any,
    else the dev box's constants."""
    return options.worker_fixed_bytes or CPU_WORKER_BASE_BYTES + ORT_SESSION_FIXED_BYTES


def default_memory_limit(weights_bytes: int) -> int:
    """The arena cap when no budget gave one (a pool used without the daemon's
    ``memory_cap``): generous, but never unbounded."""
    return max(1 << 30, 4 * weights_bytes)


def runtime_cap(tier_budget: int, accounted_others: int, own_bytes: int) -> int:
    """The cap on one model's runtime allocations, from its tier's budget: what the tier has
    left once every other model accounted in it is counted, and never less than the model's
    own accounted bytes (its measured footprint, else its estimate): a cap below that would
    fail loads the planner admitted."""
    return max(own_bytes, tier_budget - accounted_others)


def tensorrt_ep_workspace(limit: int, weights_bytes: int) -> int:
    """The TensorRT EP's workspace: what the model's cap leaves after its weights (TensorRT
    otherwise takes all the device memory it can for tactic selection), at least
    TENSORRT_EP_MIN_WORKSPACE_BYTES unless the cap itself is smaller."""
    return max(min(limit, TENSORRT_EP_MIN_WORKSPACE_BYTES), limit - weights_bytes)


def gpu_mem_limit(admitted: int, headroom: str | int) -> int:
    """A GPU model's CUDA arena cap: what it was admitted with plus the headroom (a size, or a
    percentage of the admitted bytes): never the tier's remainder."""
    from edged.units import parse_size

    return int(admitted) + parse_size(headroom, percent_of=int(admitted))
