"""The serving side of the manager: inference (gRPC and direct lanes), load/unload, OIP
metadata and shared-memory references. What fits and what to use (``check``, ``recommend``,
``select``) is advice.py.

Kept apart from ``manager.py`` (installs, tiers, versions, status) so each reads on its own;
the manager's facade methods forward here. It is built on the parts it uses (the catalog as
``specs.CatalogReader``, the specs bridge, the residency, the pool as ``ServingPool``), never
on the manager.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from edged import errors as e
from edged.engines.base import Signature
from edged.manager.catalog.manifests import ModelEntry
from edged.manager.latency import Latencies
from edged.manager.memory.residency import Residency
from edged.manager.memory.traces import TraceRecorder
from edged.manager.shm import Region, ShmRegistry
from edged.manager.specs import CatalogReader, Specs
from edged.values import MEMORY_TIERS, ModelKey
from edged.views import LoadedView

if TYPE_CHECKING:
    import numpy as np

    from edged.engines.base import ShmRef
    from edged.engines.lanes import LaneGrant

log = logging.getLogger("edged.serving")

PLATFORMS = {"onnx": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
# A request (or lane open) that never reached its worker because the worker had just died
# (errors.NotDelivered) is tried again, on a reload, this many times in all
DELIVERY_ATTEMPTS = 3
# (the pool has heard of the death when it raises NotDelivered after a failed send; where it
# found the model already gone, the residency hears of it a moment later, in the same thread)
RETRY_PAUSE_S = 0.01


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: tuple[int, ...]
    platform: str
    signature: Signature


@dataclass(frozen=True)
class IndexRow:
    name: str
    version: int
    state: str
    reason: str


class RequestMetrics(Protocol):
    """What serving counts (``edged.metrics.Metrics``, when metrics are on)."""

    def observe_request(self, model: str, seconds: float, ok: bool) -> None: ...


class ServingPool(Protocol):
    """The worker pool as serving uses it (``engines.workers.WorkerPool``): requests and
    direct lanes on what the residency loaded."""

    def infer(self, key: str, inputs: Mapping[str, np.ndarray | ShmRef],
              outputs: Sequence[str] | None = None,
              output_shm: Mapping[str, ShmRef] | None = None,
              timeout_s: float | None = None) -> dict[str, np.ndarray | ShmRef]: ...

    def open_lane(self, key: str, pid: int, size: int) -> LaneGrant: ...

    def is_loaded(self, key: str) -> bool: ...

    def lane_count(self, key: str) -> int: ...


class Serving:
    def __init__(self, *, catalog: CatalogReader, specs: Specs, residency: Residency,
                 pool: ServingPool, shm: ShmRegistry,
                 observe: Callable[[str, float], None], latencies: Latencies,
                 trace: TraceRecorder | None = None, metrics: RequestMetrics | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._catalog = catalog
        self._specs = specs
        self._res = residency
        self._pool = pool
        self._shm = shm
        self._observe = observe
        self._trace = trace  # a TraceRecorder, or None when traffic is not recorded
        self._metrics = metrics
        self._clock = clock
        self._latencies = latencies

    # -- inference -----------------------------------------------------------------------
    def _servable(self, name: str, version: int | None) -> tuple[ModelEntry, int]:
        entry = self._catalog.get(name)
        v = version or entry.active
        if v != entry.active:
            if v not in entry.versions:
                raise e.NotFound(f"model '{name}' has no version {v}", field="model_version")
            if self._res.view(ModelKey(name, v)) is None:
                raise e.FailedPrecondition(
                    f"model '{name}' version {v} is not active (active: {entry.active}); "
                    "inactive versions are kept in the storage tier", reason="STORAGE_TIER")
        elif entry.tier == "storage":
            raise e.FailedPrecondition(
                f"model '{name}' is in the storage tier; promote it first "
                f"(edgectl tier {name} swap)", reason="STORAGE_TIER")
        return entry, v

    def _tensors(self, inputs: Mapping[str, Any], output_shm: Mapping[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
        from edged.engines.base import ShmRef  # lazy: engines stay out of the daemon's imports

        ins: dict[str, Any] = {}
        for tname, value in inputs.items():
            if isinstance(value, tuple):
                params, datatype, shape = value
                t = self._shm.resolve(params.region, params.offset, params.byte_size, datatype,
                                      shape, tname)
                ins[tname] = ShmRef(t.shm_name, t.offset, t.byte_size, datatype, shape)
            else:
                ins[tname] = value
        outs = {}
        for oname, params in output_shm.items():
            t = self._shm.resolve_output(params.region, params.offset, params.byte_size, oname)
            outs[oname] = ShmRef(t.shm_name, t.offset, t.byte_size, "", ())
        return ins, outs

    def infer(self, name: str, version: int | None, inputs: Mapping[str, Any],
              outputs: list[str] | None, output_shm: Mapping[str, Any],
              timeout_s: float | None = None) -> tuple[int, dict[str, Any]]:
        entry, v = self._servable(name, version)
        ins, out_refs = self._tensors(inputs, output_shm)
        spec = self._specs.serving_spec(entry, v)
        started = self._clock()
        self._observe(name, started)  # at arrival, so the preloader learns at once
        ticket = self._trace.start(started) if self._trace is not None else None
        t0 = time.perf_counter()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            try:
                slot = self._res.acquire(spec, _left(deadline))
            except BaseException:
                if ticket is not None:  # it arrived, so it is traffic; it just never ran
                    self._finish_trace(ticket, name, v, None)
                raise
            t_run = time.perf_counter()
            ok = again = False
            try:
                results = self._pool.infer(str(slot.key), ins, outputs,
                                           output_shm=out_refs or None,
                                           timeout_s=_left(deadline))
                ok = True
            except e.NotDelivered as exc:
                # its worker had died a moment before and the residency had not heard yet:
                # nothing ran, so it is served again on a reload, once the death is known
                again = attempt < DELIVERY_ATTEMPTS
                if not again:
                    raise
                log.info("request on %s not delivered (%s): retrying on a reload", slot.key,
                         exc)
            finally:
                self._res.release(slot)
                now = time.perf_counter()
                if not again:
                    if ticket is not None:
                        self._finish_trace(ticket, name, v, now - t_run)
                    if self._metrics is not None:
                        self._metrics.observe_request(name, now - t0, ok)
            if ok:
                break
            time.sleep(RETRY_PAUSE_S * attempt)
        # selection's measured latency: the inference alone, not a load it may have waited for
        self._latencies.timed(name, spec.variant, (now - t_run) * 1e3)
        return v, {k: self._shm_result(k, val, output_shm) for k, val in results.items()}

    # -- direct lanes (engines/lanes.py) -------------------------------------------------
    def open_lane(self, name: str, version: int | None, pid: int, size: int,
                  timeout_s: float | None = None) -> tuple[int, LaneGrant]:
        """A lane to the model's worker for client ``pid``: loaded on demand like a request
        (the slot is held only while the worker opens the lane; the lane itself is revoked
        by whatever unloads the model)."""
        entry, v = self._servable(name, version)
        spec = self._specs.serving_spec(entry, v)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            slot = self._res.acquire(spec, _left(deadline))
            try:
                return v, self._pool.open_lane(str(slot.key), pid, size)
            except e.NotDelivered:
                # its worker died and the crash had not reached the residency yet (a client
                # whose lane broke asks again at once): the pool has heard of it now, so the
                # next acquire reloads
                if attempt == DELIVERY_ATTEMPTS:
                    raise
            finally:
                self._res.release(slot)
            time.sleep(RETRY_PAUSE_S * attempt)
        raise AssertionError("unreachable")

    def lane_count(self, key: str) -> int:
        """Open direct lanes on ``key``."""
        return self._pool.lane_count(key)

    def lane_requests(self, records: list[tuple[float, str, float, bool]]) -> None:
        """Requests served on lanes (collected about once a second, in time order): observed,
        counted, timed and traced as gRPC requests are."""
        last: dict[str, tuple[int, float]] = {}
        for t, key, seconds, _ok in records:
            n, _ = last.get(key, (0, 0.0))
            last[key] = (n + 1, t + seconds)
        variant = {}
        for key, (n, t_last) in last.items():
            self._res.served(key, n, t_last)
            view = self._res.view(key)
            variant[key] = view.variant if view is not None else ""
        for t, key, seconds, ok in records:
            parsed = ModelKey.parse(key)
            name, v = parsed.name, parsed.version
            self._observe(name, t)
            if self._trace is not None:
                try:
                    self._trace.record(name, v, t, seconds)
                except OSError as exc:
                    log.warning("trace recording failed (%s)", exc)
            if self._metrics is not None:
                self._metrics.observe_request(name, seconds, ok)
            if ok:
                self._latencies.timed(name, variant[key], seconds * 1e3)

    def _finish_trace(self, ticket: int, name: str, version: int,
                      seconds: float | None) -> None:
        """Recording is best effort: a full disk must never fail a request that succeeded."""
        if self._trace is None:
            return
        try:
            self._trace.finish(ticket, name, version, seconds)
        except OSError as exc:
            log.warning("trace recording failed (%s); requests are served as before", exc)

    @staticmethod
    def _shm_result(name: str, value: Any, output_shm: Mapping[str, Any]) -> Any:
        if name in output_shm and not hasattr(value, "dtype"):
            return (output_shm[name], value.datatype, tuple(value.shape))
        return value

    # -- load / unload -------------------------------------------------------------------
    def load(self, name: str, version: int | None = None) -> tuple[LoadedView, list[str], float]:
        """Load the active version, or — for an OTA test-load — any installed version."""
        entry = self._catalog.get(name)
        if version and version != entry.active:
            if version not in entry.versions:
                raise e.NotFound(f"model '{name}' has no version {version}", field="version")
            return self._res.load(self._specs.serving_spec(entry, version))
        entry, v = self._servable(name, None)
        return self._res.load(self._specs.serving_spec(entry, v))

    def unload(self, name: str, version: int | None = None) -> int:
        """Unload (idempotent: a model that is not loaded frees 0 bytes)."""
        entry = self._catalog.get(name)
        freed = 0
        for view in self._res.views():
            if view.name == entry.name and (version is None or view.version == version):
                freed += self._res.unload(ModelKey(view.name, view.version))
        return freed

    # -- OIP metadata --------------------------------------------------------------------
    def is_ready(self, name: str, version: int | None) -> bool:
        try:
            entry, v = self._servable(name, version)
        except e.EdgedError:
            return False
        return entry.tier in MEMORY_TIERS or self._res.view(ModelKey(name, v)) is not None

    def model_metadata(self, name: str, version: int | None) -> ModelMetadata:
        entry = self._catalog.get(name)
        v = version or entry.active
        if v not in entry.versions:
            raise e.NotFound(f"model '{name}' has no version {v}", field="version")
        ver = entry.versions[v]
        return ModelMetadata(entry.name, tuple(sorted(entry.versions)),
                             PLATFORMS.get(ver.format, ver.format), ver.signature)

    def repository_index(self, ready_only: bool = False) -> list[IndexRow]:
        loaded = self._res.loaded_keys()
        rows = []
        for entry in self._catalog.list():
            key = f"{entry.name}:{entry.active}"
            if key in loaded:
                rows.append(IndexRow(entry.name, entry.active, "READY", ""))
            elif not ready_only:
                why = {"ram": "not loaded", "swap": "not loaded (loads on demand)",
                       "storage": "in the storage tier"}[entry.tier]
                rows.append(IndexRow(entry.name, entry.active, "UNAVAILABLE", why))
        return rows

    # -- shared memory -------------------------------------------------------------------
    def shm_register(self, name: str, key: str, offset: int, byte_size: int,
                     peer: str = "") -> None:
        """``peer`` is recorded with the region; it cannot scope anything: gRPC gives every
        Unix-socket peer the same ``unix:`` (see manager/shm.py)."""
        self._shm.register(name, key, offset, byte_size, peer=peer)

    def shm_unregister(self, name: str) -> None:
        self._shm.unregister(name)

    def shm_status(self, name: str = "") -> list[Region]:
        return self._shm.status(name)


def _left(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (None: no deadline); never below zero."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())
