"""Footprints after real inferences: a worker's memory grows past what its load measured.

A load measures the worker after one tiny warm-up inference; real inputs grow ONNX Runtime's
arena and the worker keeps that memory (ppocr-det: 35 MB after the warm-up, 106 MB after one
640x640 frame). The planner must account what unloading would give back and what the worker
can reach, so the pool's monitor re-reads, about once a second, each worker that served
requests since its last look: its anonymous high-water mark (VmHWM less file and shared pages;
the worker restarts VmHWM after each load, so load-time copies are not counted) plus the device
memory its models took at load. Growth past the models' footprints is given to the model that
served the most requests since the last look (in a group worker the growth cannot be told
apart). Footprints only grow: a peak once reached can be reached again.

The daemon's side never touches the request path for this: one /proc read per busy worker per
second, by the monitor thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

MIN_GROWTH_BYTES = 2 << 20  # smaller changes are noise (and each update rewrites a manifest)
MIN_GROWTH_FRACTION = 0.05


class Measured(Protocol):
    key: str
    footprint: int
    gpu_bytes: int  # device memory accounted to it (grows with re-measured device growth)
    served: int  # requests accepted so far
    sampled: int  # ``served`` at the last look


def regrow(models: Sequence[Measured], status: Callable[[], dict[str, int]],
           anon_peak: Callable[[dict[str, int]], int],
           device: Callable[[], int | None] | None = None) -> tuple[Measured, int] | None:
    """One worker's models: (the model whose footprint grew, by how much), or None.

    ``status()`` reads the worker's /proc status (OSError/KeyError when it is gone);
    ``device()`` (None on the CPU or without a per-process meter) its device memory now (NVML
    on a discrete GPU, NvMap per process on a Jetson; None: no reading this time). The CUDA
    arena only grows, so the device part is re-measured too: a GPU worker whose arena grew
    under real inputs is accounted for it (the issue's silero worker: 1656 MB at load, 2700
    MiB after 200 inferences). A shared worker's context was counted once, at its first load;
    what grows later goes to the model that served the most since the last look."""
    busiest = max(models, key=lambda m: m.served - m.sampled, default=None)
    if busiest is None or busiest.served == busiest.sampled:
        return None  # nothing served since the last look: nothing new to see
    try:
        reached = anon_peak(status())
    except (OSError, KeyError):
        return None
    counted = sum(m.footprint for m in models)
    gpu_counted = sum(m.gpu_bytes for m in models)
    now = device() if device is not None else None
    gpu_now = max(gpu_counted, now) if now is not None else gpu_counted
    growth = reached + gpu_now - counted
    for m in models:
        m.sampled = m.served
    if growth < max(MIN_GROWTH_BYTES, int(MIN_GROWTH_FRACTION * counted)):
        return None
    busiest.footprint += growth
    busiest.gpu_bytes += gpu_now - gpu_counted
    return busiest, growth
