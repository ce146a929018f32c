"""The worker pool's events (``engines.workers.WorkerPool(on_event=...)``) delivered to the
parts that act on them: a crashed worker to the residency (the next request reloads), a model
that grew after real inferences to the residency (accounted, over-budget tiers drained) and the
event stream, the requests served on direct lanes to serving (observed, counted, timed), a
fresh worker's first measurement to this device's calibration.

The pool comes first in the daemon's construction (the residency is built on it), so the
parts that handle its events exist only after it: the pool publishes into a ``PoolEvents``
built before it, and each handler is subscribed once its part is built. No event can come
before a load, and every subscription is made before the first load.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

from edged.manager.catalog.catalog import Catalog
from edged.manager.memory.residency import Residency
from edged.manager.seams import EventSink
from edged.manager.serving import Serving
from edged.units import format_size

if TYPE_CHECKING:
    from edged.engines.base import EngineOptions, Inspection

Handler = Callable[[Mapping[str, object]], None]


class PoolEvents:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}

    def subscribe(self, kind: str, handler: Handler) -> None:
        self._handlers.setdefault(kind, []).append(handler)

    def __call__(self, kind: str, details: Mapping[str, object]) -> None:
        """The pool's ``on_event`` (its exceptions are logged by the pool)."""
        for handler in self._handlers.get(kind, ()):
            handler(details)


def _int(value: object) -> int:
    return value if isinstance(value, int) else int(str(value or 0))


def crashes(residency: Residency) -> Handler:
    """``worker_crash``: every model of the dead worker is forgotten (reloaded on demand)."""

    def on_crash(details: Mapping[str, object]) -> None:
        keys = details.get("keys", [details.get("key", "")])
        for key in cast("list[str]", keys):
            residency.worker_died(key, str(details.get("message", "")))
    return on_crash


def growth(residency: Residency, events: EventSink) -> Handler:
    """``footprint``: a loaded model's worker grew after real inferences (engines/
    footprint.py): the residency accounts it (``remeasured``), and the stream says so."""

    def on_growth(details: Mapping[str, object]) -> None:
        key, footprint = str(details["key"]), _int(details["bytes"])
        residency.remeasured(key, footprint)
        name, _, version = key.rpartition(":")
        gpu = _int(details.get("gpu_growth", 0))
        grew = _int(details.get("growth", 0))
        events.publish("footprint", name, int(version or 0),
                       f"grew by {format_size(grew)} after real inferences"
                       + (f" ({format_size(gpu)} of it device memory)" if gpu else "")
                       + f": accounted {format_size(footprint)}",
                       growth=grew, gpu_growth=gpu, bytes=footprint)
    return on_growth


def lane_requests(serving: Serving) -> Handler:
    """``lane_requests``: what direct lanes served (collected about once a second)."""

    def on_lanes(details: Mapping[str, object]) -> None:
        serving.lane_requests(cast("list[tuple[float, str, float, bool]]",
                                   details["records"]))
    return on_lanes


def first_loads(first_load: Callable[[Mapping[str, object], Callable[[str], int]], None],
                model_bytes: Callable[[str], int]) -> Handler:
    """``worker_measured``: a fresh worker's first load (``FixedCostsBook.first_load``)."""

    def on_measured(details: Mapping[str, object]) -> None:
        first_load(details, model_bytes)
    return on_measured


class ModelBytes:
    """A loaded model's own estimated bytes (weights, activations, per-node costs): its CPU
    estimate less the worker's fixed term — what a first load's footprint is compared with to
    find this device's worker cost."""

    def __init__(self, catalog: Catalog, artifact_path: Callable[[str], Path],
                 inspect: Callable[[Path, str | None, EngineOptions], Inspection]) -> None:
        self._catalog = catalog
        self._path = artifact_path
        self._inspect = inspect

    def __call__(self, key: str) -> int:
        from edged.engines.base import EngineOptions
        from edged.engines.estimate import worker_fixed

        name, _, version = key.rpartition(":")
        v = self._catalog.get(name).versions[int(version)]
        if v.format != "onnx":  # an engine's estimate is its own measurement: nothing to learn
            raise ValueError(f"{key} is not an ONNX model")
        opts = EngineOptions(warmup_shapes=dict(v.warmup_shapes or {}),
                             providers=("CPUExecutionProvider",))
        info = self._inspect(self._path(v.store_id), v.format, opts)
        return int(info.estimate_bytes) - worker_fixed(opts)
