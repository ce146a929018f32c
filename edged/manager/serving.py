"""The serving side of the manager: inference, load/unload, capacity dry runs, selection,
OIP metadata and shared-memory references.

Kept apart from ``manager.py`` (installs, tiers, versions, status) so each reads on its own;
the manager's facade methods forward here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edged import errors as e
from edged.manager import planner, selection
from edged.manager.residency import LoadSpec, Residency
from edged.manager.shm import ShmRegistry
from edged.manager.views import CheckView, LoadedView

PLATFORMS = {"onnx": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}


class Serving:
    def __init__(self, manager: Any, *, residency: Residency, pool: Any, shm: ShmRegistry,
                 inspect: Callable[[Path, str | None], Any], observe: Callable[[str, float], None],
                 record: Callable[[str, int, float, float], None] | None = None,
                 metrics: Any = None, clock: Callable[[], float] = time.time) -> None:
        self._m = manager
        self._res = residency
        self._pool = pool
        self._shm = shm
        self._inspect = inspect
        self._observe = observe
        self._record = record
        self._metrics = metrics
        self._clock = clock
        self._latency_ms: dict[str, float] = {}

    # -- inference -----------------------------------------------------------------------
    def _servable(self, name: str, version: int | None) -> tuple[Any, int]:
        entry = self._m.catalog.get(name)
        v = version or entry.active
        if v != entry.active:
            if v not in entry.versions:
                raise e.NotFound(f"model '{name}' has no version {v}", field="model_version")
            if self._res.view(f"{name}:{v}") is None:
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
        spec = self._m.load_spec(entry, v)
        started = self._clock()
        t0 = time.perf_counter()
        slot = self._res.acquire(spec, timeout_s)
        ok = False
        try:
            results = self._pool.infer(slot.key, ins, outputs, output_shm=out_refs or None,
                                       timeout_s=timeout_s)
            ok = True
        finally:
            self._res.release(slot)
            seconds = time.perf_counter() - t0
            self._observe(name, started)
            if self._record is not None:
                self._record(name, v, started, seconds)
            if self._metrics is not None:
                self._metrics.observe_request(name, seconds, ok)
        prev = self._latency_ms.get(name)
        self._latency_ms[name] = seconds * 1e3 if prev is None else 0.9 * prev + 0.1 * seconds * 1e3
        return v, {k: self._shm_result(k, val, output_shm) for k, val in results.items()}

    @staticmethod
    def _shm_result(name: str, value: Any, output_shm: Mapping[str, Any]) -> Any:
        if name in output_shm and not hasattr(value, "dtype"):
            return (output_shm[name], value.datatype, tuple(value.shape))
        return value

    # -- load / unload -------------------------------------------------------------------
    def load(self, name: str, version: int | None = None) -> tuple[LoadedView, list[str], float]:
        """Load the active version, or — for an OTA test-load — any installed version."""
        entry = self._m.catalog.get(name)
        if version and version != entry.active:
            if version not in entry.versions:
                raise e.NotFound(f"model '{name}' has no version {version}", field="version")
            return self._res.load(self._m.load_spec(entry, version))
        entry, v = self._servable(name, None)
        return self._res.load(self._m.load_spec(entry, v))

    def unload(self, name: str, version: int | None = None) -> int:
        """Unload (idempotent: a model that is not loaded frees 0 bytes)."""
        entry = self._m.catalog.get(name)
        freed = 0
        for view in self._res.views():
            if view.name == entry.name and (version is None or view.version == version):
                freed += self._res.unload(f"{view.name}:{view.version}")
        return freed

    # -- capacity dry run ----------------------------------------------------------------
    def check(self, *, name: str | None, artifact_path: str | None,
              tier: str | None) -> CheckView:
        if artifact_path:
            path = Path(artifact_path)
            if not path.is_absolute() or not path.is_file():
                raise e.InvalidArgument(f"{artifact_path} is not a file on the device",
                                        field="artifact_path")
            info = self._inspect(path, None)
            spec = LoadSpec(name="(artifact)", version=1, tier=tier or "swap", artifact=path,
                            fmt=info.format, options=None, group=None,
                            bytes=info.estimate_bytes)
            estimated = info.estimate_bytes
        else:
            entry = self._m.catalog.get(name)
            target = tier or (entry.tier if entry.tier != "storage" else "swap")
            spec = self._m.load_spec(entry, entry.active, tier=target)
            estimated = entry.versions[entry.active].estimated_bytes
            if self._res.view(spec.key) is not None:
                d = self._res.plan(spec)
                return CheckView("admit", (), d.numbers, "already loaded", estimated)
        if spec.tier == "storage":
            raise e.InvalidArgument("the storage tier holds nothing in memory: check against "
                                    "ram or swap", field="tier")
        d = self._res.plan(spec)
        if isinstance(d, planner.Reject):
            return CheckView("reject", (), d.numbers, d.reason, estimated)
        if isinstance(d, planner.AdmitAfterEvicting):
            return CheckView("admit_after_evicting", tuple(d.victims), d.numbers,
                             f"fits after evicting {', '.join(d.victims)}", estimated)
        return CheckView("admit", (), d.numbers, "fits now", estimated)

    # -- selection -----------------------------------------------------------------------
    def select(self, task: str, priority: str, *, max_bytes: int | None,
               max_latency_ms: float | None) -> selection.Selection:
        loaded = self._res.loaded_keys()
        memory = self._res.memory()  # one telemetry reading for every candidate
        cands = []
        for entry in self._m.catalog.list():
            v = entry.versions[entry.active]
            key = f"{entry.name}:{entry.active}"
            fits = False
            if entry.tier != "storage" and (task in v.tasks or key in loaded):
                spec = self._m.load_spec(entry, entry.active)
                fits = key in loaded or not isinstance(self._res.plan(spec, memory=memory),
                                                       planner.Reject)
            cands.append(selection.Candidate(
                name=entry.name, version=entry.active, tasks=tuple(v.tasks), quality=v.quality,
                latency_ms=self._latency_ms.get(entry.name),
                footprint_bytes=v.measured_bytes or v.estimated_bytes, loaded=key in loaded,
                fits_now=fits, tier=entry.tier))
        return selection.select(task, priority, cands, max_bytes=max_bytes,
                                max_latency_ms=max_latency_ms)

    # -- OIP metadata --------------------------------------------------------------------
    def is_ready(self, name: str, version: int | None) -> bool:
        try:
            entry, v = self._servable(name, version)
        except e.EdgedError:
            return False
        return entry.tier in ("ram", "swap") or self._res.view(f"{name}:{v}") is not None

    def model_metadata(self, name: str, version: int | None) -> Any:
        from edged.manager.manager import ModelMetadata

        entry = self._m.catalog.get(name)
        v = version or entry.active
        if v not in entry.versions:
            raise e.NotFound(f"model '{name}' has no version {v}", field="version")
        ver = entry.versions[v]
        return ModelMetadata(entry.name, tuple(sorted(entry.versions)),
                             PLATFORMS.get(ver.format, ver.format), ver.signature)

    def repository_index(self, ready_only: bool = False) -> list[Any]:
        from edged.manager.manager import IndexRow

        loaded = self._res.loaded_keys()
        rows = []
        for entry in self._m.catalog.list():
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
        self._shm.register(name, key, offset, byte_size)

    def shm_unregister(self, name: str) -> None:
        self._shm.unregister(name)

    def shm_status(self, name: str = "") -> list[Any]:
        return self._shm.status(name)
