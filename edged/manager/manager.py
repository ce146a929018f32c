"""The model manager: the one facade the service layer (and the OTA tool) talks to.

It owns no policy of its own; it composes the catalog (what is installed, in which tier), the
residency (what is loaded, reference counts, capacity decisions), telemetry and events, so that
every caller goes through the same decisions. Methods return domain objects; the service layer
turns them into protos.

A version that cannot run here is refused when its load spec is made, before any worker
starts: a missing artifact (``DATA_LOSS``, see ``artifacts``) or a TensorRT engine built with
another TensorRT (``FAILED_PRECONDITION``, see ``engine_compat``). Version switches, tier moves
and hand-edited reloads go through ``transitions``: what they need loaded is loaded before the
catalog commits, so a failure leaves the old version active.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged import __version__
from edged import errors as e
from edged.config import Budgets
from edged.manager import engine_compat, installs
from edged.manager.artifacts import MissingArtifacts
from edged.manager.events import EventBus
from edged.manager.transitions import Transition, apply_reload, plan_reload
from edged.manager.views import InstallSpec, LoadedView, StatusView, TierUsage

if TYPE_CHECKING:
    from edged.manager.residency import LoadSpec, Residency

TIERS = ("ram", "swap", "storage")
log = logging.getLogger("edged.manager")


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: tuple[int, ...]
    platform: str
    signature: Any


@dataclass(frozen=True)
class IndexRow:
    name: str
    version: int
    state: str
    reason: str


class ModelManager:
    def __init__(self, *, state_dir: Path, budgets: Budgets, sampler: Any, events: EventBus,
                 catalog: Any = None, residency: Residency | None = None, store: Any = None,
                 engine_options: Callable[[Any], Any] | None = None,
                 inspect: Callable[[Path, str | None], Any] | None = None,
                 serving: Any = None, clock: Callable[[], float] = time.time,
                 allow_local_paths: bool = True,
                 tensorrt_version: Callable[[], str | None] =
                 engine_compat.installed_tensorrt_version) -> None:
        self.state_dir = state_dir
        self.budgets = budgets
        self.sampler = sampler
        self.events = events
        self.catalog = catalog
        self.residency = residency
        self.store = store
        self.serving = serving
        self._engine_options = engine_options
        self._inspect = inspect
        self._clock = clock
        self._allow_local = allow_local_paths
        self._started = time.monotonic()
        self._state = "starting"
        # a start-up fallback from invalid manifests is shown like a rejected reload
        self._manifest_error = str(getattr(getattr(catalog, "manifests", None),
                                           "fallback_note", "") or "")
        self._switch_lock = threading.Lock()
        self._specs: dict[tuple[str, int, str | None], tuple[Any, Any]] = {}
        self._missing = MissingArtifacts(store)
        self._trt_probe = tensorrt_version
        self._trt: list[str | None] = []  # the installed TensorRT, looked up once

    # -- lifecycle -----------------------------------------------------------------------
    def set_state(self, state: str) -> None:
        self._state = state

    @property
    def state(self) -> str:
        return self._state

    def start(self) -> list[str]:
        """Load the ram tier (pinned). Returns problems; a model that fails is reported, and so
        is every version whose artifact is missing (it stays installed, never served)."""
        problems = []
        state = self._catalog().state
        for (name, version), artifact in sorted(self._missing.of(state).items()):
            msg = str(self._missing.error(name, version, artifact))
            log.error("%s", msg)
            self.events.publish("artifact_missing", name, version, msg, artifact=artifact[:12])
        for entry in self._catalog().list():
            if entry.tier != "ram":
                continue
            try:
                self._res().load(self.load_spec(entry, entry.active))
            except e.EdgedError as exc:
                problems.append(f"{entry.name}: {exc}")
                self.events.publish("load_failed", entry.name, entry.active, str(exc))
        return problems

    def close(self) -> None:
        if self.residency is not None:
            self.residency.close()

    # -- status --------------------------------------------------------------------------
    def status(self) -> StatusView:
        snap = self.sampler.snapshot()
        loaded = self.loaded()
        return StatusView(
            version=__version__, uptime_s=time.monotonic() - self._started, state=self._state,
            state_dir=str(self.state_dir), snapshot=snap, reserve_bytes=self.budgets.reserve,
            tiers=self._tier_usage(loaded), loaded=tuple(loaded),
            models_installed=len(self.catalog.list()) if self.catalog is not None else 0,
            manifest_error=self._manifest_error)

    def loaded(self) -> list[LoadedView]:
        views = self.residency.views() if self.residency is not None else []
        if self.serving is None:
            return views
        count = self.serving.lane_count
        return [replace(v, lanes=count(f"{v.name}:{v.version}")) for v in views]

    def _tier_usage(self, loaded: list[LoadedView]) -> tuple[TierUsage, ...]:
        counts = dict.fromkeys(TIERS, 0)
        disk = 0
        for model in self.catalog.list() if self.catalog is not None else []:
            counts[model.tier] += 1
            disk += sum(v.size_bytes for v in model.versions.values())
        budgets = {"ram": self.budgets.ram, "swap": self.budgets.swap,
                   "storage": self.budgets.storage}
        usage = []
        for tier in TIERS:
            # a victim on its way out is not counted: its bytes went to the load it made
            # room for (counting both would show a tier over its budget for a moment)
            mine = [m for m in loaded if m.tier == tier and not m.evicting]
            used = disk if tier == "storage" else sum(m.footprint_bytes for m in mine)
            usage.append(TierUsage(tier, budgets[tier], used, counts[tier], len(mine)))
        return tuple(usage)

    def reload(self) -> tuple[bool, str, int]:
        """Re-read hand-edited manifests; an invalid edit — or one that does not fit the tier
        budgets — keeps the old state in force. An accepted one is applied to what is loaded:
        models that left ram become evictable (or unload, to storage), new ram models load
        in the background (the main loop that calls this must keep feeding the watchdog)."""
        with self._switch_lock:
            old = self._catalog().state
            try:
                state = self._catalog().reload(
                    before_commit=lambda new: plan_reload(self, old, new))
            except e.EdgedError as exc:
                if self.residency is not None:  # moves plan_reload planned: not committed
                    for view in self.residency.views():
                        self.residency.cancel_move(f"{view.name}:{view.version}")
                self._manifest_error = str(exc)
                self.events.publish("manifest_reload", message=f"rejected: {exc}", ok="false")
                return False, str(exc), len(self._catalog().list())
            self._manifest_error = ""
            to_load = apply_reload(self, old, state)
        if to_load:
            threading.Thread(target=self._load_all, args=(to_load,), name="reload-ram",
                             daemon=True).start()
        count = len(state.models)
        self.events.publish("manifest_reload", message=f"{count} models", ok="true")
        return True, "", count

    def _load_all(self, entries: list[Any]) -> None:
        for entry in entries:
            try:
                self._res().load(self.load_spec(entry, entry.active))
            except e.EdgedError as exc:
                log.warning("ram tier after reload: %s: %s", entry.name, exc)

    # -- parts ---------------------------------------------------------------------------
    def _catalog(self) -> Any:
        if self.catalog is None:
            raise e.Unimplemented("the model store is not available in this edged build")
        return self.catalog

    def _res(self) -> Residency:
        if self.residency is None:
            raise e.Unimplemented("engines are not available in this edged build")
        return self.residency

    def load_spec(self, entry: Any, version: int, tier: str | None = None) -> LoadSpec:
        """The load spec of one version; cached per catalog entry (entries are immutable, a
        change makes a new one), because the inference path asks for it on every request."""
        key = (entry.name, version, tier)
        hit = self._specs.get(key)
        if hit is not None and hit[0] is entry:
            return hit[1]  # type: ignore[no-any-return]
        spec = self._make_spec(entry, version, tier)
        self._specs[key] = (entry, spec)
        return spec

    def unservable(self, entry: Any, version: int) -> e.EdgedError | None:
        """What ``load_spec`` would refuse ``version`` with (a missing artifact, another
        TensorRT), or None — for callers that skip such versions (selection, preloads)."""
        try:
            self.load_spec(entry, version)
        except e.EdgedError as exc:
            return exc
        return None

    def _make_spec(self, entry: Any, version: int, tier: str | None) -> LoadSpec:
        v = entry.versions.get(version)
        if v is None:
            raise e.NotFound(f"model '{entry.name}' has no version {version}", field="version")
        if self._engine_options is None or self.store is None:
            raise e.Unimplemented("engines are not available in this edged build")
        from edged.manager.residency import LoadSpec

        self._missing.check(entry.name, version, v)
        if v.format == "tensorrt":
            if not self._trt:
                self._trt.append(self._trt_probe())
            engine_compat.check_tensorrt(entry.name, version, v.engine_info, self._trt[0])
        options = self._engine_options(v)
        tier = tier or (entry.tier if version == entry.active and entry.tier != "storage"
                        else "swap")
        return LoadSpec(name=entry.name, version=version, tier=tier,
                        artifact=self.store.path(v.store_id), fmt=v.format, options=options,
                        group=v.group, bytes=v.measured_bytes or v.estimated_bytes,
                        gpu=bool(getattr(options, "uses_gpu", False))
                        or engine_compat.uses_gpu(v.format, v.providers),
                        peak=self._load_peak(v, tier))

    def _load_peak(self, v: Any, tier: str) -> int:
        """An ONNX load holds one more copy of the weights for a moment (the parsed protobuf
        and the initialized tensors); the artifact's size stands for the weights. It never
        exceeds the larger of the footprint and the tier's budget, so a model that fits its
        tier once loaded is never refused for its load alone."""
        steady = v.measured_bytes or v.estimated_bytes
        if v.format != "onnx":
            return steady
        budget = self.budgets.ram if tier == "ram" else self.budgets.swap
        return min(steady + v.size_bytes, max(steady, budget))

    def _with_loaded(self, entry: Any) -> tuple[Any, LoadedView | None]:
        view = self.residency.view(f"{entry.name}:{entry.active}") if self.residency else None
        return self._missing.annotate(self._catalog().state, entry), view

    # -- models --------------------------------------------------------------------------
    def list_models(self, tier: str | None = None,
                    task: str | None = None) -> list[tuple[Any, LoadedView | None]]:
        rows = []
        for entry in self._catalog().list():
            if tier and entry.tier != tier:
                continue
            if task and task not in entry.versions[entry.active].tasks:
                continue
            rows.append(self._with_loaded(entry))
        return rows

    def get_model(self, name: str) -> tuple[Any, LoadedView | None]:
        return self._with_loaded(self._catalog().get(name))

    def install_stream(self, spec: InstallSpec,
                       parts: Iterator[tuple[Any, Iterator[bytes]]]) -> installs.InstallResult:
        return installs.from_stream(self, spec, parts)

    def install_from(self, spec: InstallSpec, source: str, sha256: str | None,
                     size: int | None, progress: Callable[[int, int, str], None]
                     ) -> installs.InstallResult:
        return installs.from_source(self, spec, source, sha256, size, progress,
                                    allow_local=self._allow_local)

    def remove(self, name: str, version: int | None, force: bool = False) -> list[int]:
        """Remove one version (1 or more), or every version when ``version`` is None."""
        entry = self._catalog().get(name)
        targets = [version] if version is not None else sorted(entry.versions)
        in_use = {v.version for v in self.loaded() if v.name == name and v.in_flight}
        removed = self._catalog().remove(name, version, force=force,
                                         in_use=lambda key: int(key.split(":")[1]) in in_use)
        for number in targets:
            if self.residency is not None and self.residency.view(f"{name}:{number}"):
                self.residency.unload(f"{name}:{number}")
        left = self._catalog().state.models.get(name)
        if left is not None and left.tier == "ram" and left.active != entry.active:
            self._load_all([left])  # the ram tier is always loaded
        self.events.publish("remove", name, version or 0, f"versions {targets}")
        return list(removed) if removed is not None else targets

    def set_tier(self, name: str, tier: str) -> tuple[Any, LoadedView | None]:
        """Move a model: into ram it is planned and loaded before the move is committed."""
        before = self._catalog().get(name)
        entry = self._transition(name, lambda prepare: self._catalog().set_tier(
            name, tier, before_commit=prepare))
        self.events.publish("tier", name, entry.active, f"{before.tier} -> {entry.tier}")
        return self._with_loaded(entry)

    def activate(self, name: str, version: int,
                 allow_signature_change: bool = False) -> tuple[Any, LoadedView | None]:
        return self._switch(name, lambda prepare: self._catalog().activate(
            name, version, allow_signature_change=allow_signature_change,
            before_commit=prepare))

    def rollback(self, name: str) -> tuple[Any, LoadedView | None]:
        return self._switch(name, lambda prepare: self._catalog().rollback(
            name, before_commit=prepare))

    def _switch(self, name: str, change: Callable[[Any], Any]) -> tuple[Any, LoadedView | None]:
        """Version switch: the new version loads first (when the old one is loaded or the
        tier is ram) and the manifest is committed only once it has; then the old version is
        retired once its requests finish. A failed load leaves the old version active."""
        before = self._catalog().get(name)
        entry = self._transition(name, change)
        if entry.active != before.active:
            self.events.publish("version_switch", name, entry.active,
                                f"v{before.active} -> v{entry.active}")
        return self._with_loaded(entry)

    def _transition(self, name: str, change: Callable[[Any], Any]) -> Any:
        with self._switch_lock:
            t = Transition(self, self._catalog().get(name))
            try:
                entry = change(t.prepare)
            except BaseException:
                t.abort()
                raise
            t.settle(entry)
            if t.load_result is not None:
                view, seconds = t.load_result
                self._catalog().record_measurement(name, entry.active, view.footprint_bytes,
                                                   seconds)
            return self._catalog().get(name)

    # -- serving: loads, capacity checks, selection, inference (edged.manager.serving) ------
    def _serving(self) -> Any:
        if self.serving is None:
            raise e.Unimplemented("engines are not available in this edged build")
        return self.serving

    def load(self, name: str, version: int | None = None) -> tuple[LoadedView, list[str], float]:
        return self._serving().load(name, version)  # type: ignore[no-any-return]

    def unload(self, name: str, version: int | None = None) -> int:
        return self._serving().unload(name, version)  # type: ignore[no-any-return]

    def check(self, *, name: str | None, artifact_path: str | None, tier: str | None) -> Any:
        return self._serving().check(name=name, artifact_path=artifact_path, tier=tier)

    def select(self, task: str, priority: str, *, max_bytes: int | None,
               max_latency_ms: float | None, mode: str | None = None,
               pinned: str | None = None) -> Any:
        return self._serving().select(task, priority, max_bytes=max_bytes,
                                      max_latency_ms=max_latency_ms, mode=mode, pinned=pinned)

    def infer(self, name: str, version: int | None, inputs: Mapping[str, Any],
              outputs: list[str] | None, output_shm: Mapping[str, Any],
              timeout_s: float | None = None) -> tuple[int, dict[str, Any]]:
        return self._serving().infer(  # type: ignore[no-any-return]
            name, version, inputs, outputs, output_shm, timeout_s=timeout_s)

    def is_ready(self, name: str, version: int | None) -> bool:
        return bool(self._serving().is_ready(name, version))

    def model_metadata(self, name: str, version: int | None) -> ModelMetadata:
        return self._serving().model_metadata(name, version)  # type: ignore[no-any-return]

    def repository_index(self, ready_only: bool = False) -> list[IndexRow]:
        return self._serving().repository_index(ready_only)  # type: ignore[no-any-return]

    def shm_register(self, name: str, key: str, offset: int, byte_size: int,
                     peer: str = "") -> None:
        self._serving().shm_register(name, key, offset, byte_size, peer=peer)

    def shm_unregister(self, name: str) -> None:
        self._serving().shm_unregister(name)

    def open_lane(self, name: str, version: int | None, pid: int, size: int,
                  timeout_s: float | None = None) -> tuple[int, Any]:
        return self._serving().open_lane(  # type: ignore[no-any-return]
            name, version, pid, size, timeout_s)

    def lane_requests(self, records: list[tuple[float, str, float, bool]]) -> None:
        if self.serving is not None:
            self.serving.lane_requests(records)

    def shm_status(self, name: str = "") -> list[Any]:
        return self._serving().shm_status(name)  # type: ignore[no-any-return]
