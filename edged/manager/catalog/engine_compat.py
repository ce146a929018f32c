"""What a version needs from the device: a GPU, and for a TensorRT engine the TensorRT it was
built with.

A TensorRT engine only deserialises on the TensorRT version (and GPU) it was built for; after
a JetPack upgrade an old engine fails inside a worker with an opaque error. So an install
records ``tensorrt_version`` (from the backend's inspection, which ran the installed TensorRT)
and ``gpu`` (the inspection's GPU name if it gives one, else what the client said in its
``engine_info``) in the version's ``engine_info``, and every load compares the recorded version
with the installed one first: a difference is a ``FAILED_PRECONDITION`` naming both, before any
worker starts.

Versions are compared on their numeric components, the shorter being a prefix of the longer
("10.3" matches "10.3.0.30": Python packages and ``trt.__version__`` spell the same release
differently). The installed version comes from the package metadata (or, for a JetPack install
without it, the ``__version__`` line of the module's source): importing tensorrt in the daemon
would cost hundreds of MB.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from edged import errors as e

GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})
TRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-libs")
_VERSION_LINE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.M)


def uses_gpu(fmt: str, providers: Sequence[str]) -> bool:
    """True when the version runs on the GPU (its memory cannot be swapped): a TensorRT
    engine, or an ONNX model whose preferred providers include the CUDA or TensorRT EP."""
    return fmt == "tensorrt" or any(p in GPU_PROVIDERS for p in providers)


def install_info(fmt: str, details: Mapping[str, str],
                 given: Mapping[str, str] | None) -> dict[str, str]:
    """The ``engine_info`` to record at install: the client's, plus what the inspection knows."""
    info = dict(given or {})
    if fmt != "tensorrt":
        return info
    if details.get("tensorrt_version"):
        info["tensorrt_version"] = str(details["tensorrt_version"])
    gpu = details.get("gpu_name") or details.get("gpu", "")
    if gpu and gpu.lower() not in ("true", "false"):  # "true" only says that it needs one
        info["gpu"] = str(gpu)
    return info


def same_release(a: str, b: str) -> bool:
    pa, pb = _numbers(a), _numbers(b)
    if not pa or not pb:
        return a.strip() == b.strip()
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


def _numbers(text: str) -> list[int]:
    out = []
    for part in text.strip().split("."):
        m = re.match(r"\d+", part)
        if m is None:
            break
        out.append(int(m.group()))
        if m.end() != len(part):
            break
    return out


def check_tensorrt(name: str, version: int, engine_info: Mapping[str, str],
                   installed: str | None) -> None:
    """Refuse to load an engine built with another TensorRT than the installed one."""
    built = engine_info.get("tensorrt_version", "")
    if not built or not installed or same_release(built, installed):
        return
    gpu = engine_info.get("gpu")
    raise e.FailedPrecondition(
        f"model '{name}' version {version} is a TensorRT {built} engine"
        + (f" built for {gpu}" if gpu else "")
        + f", but this device has TensorRT {installed}: an engine only runs on the TensorRT "
        "version it was built with. Rebuild it on this device (or install the ONNX model)",
        field="format", metadata={"built_tensorrt": built, "installed_tensorrt": installed})


def installed_tensorrt_version() -> str | None:
    """The installed TensorRT's version without importing it; None when it is not installed."""
    from importlib import metadata, util

    for dist in TRT_DISTRIBUTIONS:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    try:
        spec = util.find_spec("tensorrt")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    try:
        m = _VERSION_LINE.search(Path(spec.origin).read_text(errors="replace"))
    except OSError:
        return None
    return m.group(1) if m else None
