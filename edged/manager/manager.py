"""The model manager: the one facade the service layer (and the OTA tool) talks to.

It owns no policy of its own; it composes the catalog (what is installed, in which tier), the
residency (what is loaded, reference counts, capacity decisions), telemetry and events, so that
every caller goes through the same decisions. Methods return domain objects; the service layer
turns them into protos.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged import __version__
from edged import errors as e
from edged.config import Budgets
from edged.manager import installs
from edged.manager.events import EventBus
from edged.manager.views import InstallSpec, LoadedView, StatusView, TierUsage

if TYPE_CHECKING:
    from edged.manager.residency import LoadSpec, Residency

TIERS = ("ram", "swap", "storage")


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
                 allow_local_paths: bool = True) -> None:
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
        self._manifest_error = ""
        self._switch_lock = threading.Lock()
        self._specs: dict[tuple[str, int, str | None], tuple[Any, Any]] = {}

    # -- lifecycle -----------------------------------------------------------------------
    def set_state(self, state: str) -> None:
        self._state = state

    @property
    def state(self) -> str:
        return self._state

    def start(self) -> list[str]:
        """Load the ram tier (pinned). Returns problems; a model that fails is reported."""
        problems = []
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
        return self.residency.views() if self.residency is not None else []

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
            mine = [m for m in loaded if m.tier == tier]
            used = disk if tier == "storage" else sum(m.footprint_bytes for m in mine)
            usage.append(TierUsage(tier, budgets[tier], used, counts[tier], len(mine)))
        return tuple(usage)

    def reload(self) -> tuple[bool, str, int]:
        """Re-read hand-edited manifests; an invalid edit keeps the old state in force."""
        try:
            state = self._catalog().reload()
        except e.EdgedError as exc:
            self._manifest_error = str(exc)
            self.events.publish("manifest_reload", message=f"rejected: {exc}", ok="false")
            return False, str(exc), len(self._catalog().list())
        self._manifest_error = ""
        count = len(state.models)
        self.events.publish("manifest_reload", message=f"{count} models", ok="true")
        return True, "", count

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

    def _make_spec(self, entry: Any, version: int, tier: str | None) -> LoadSpec:
        v = entry.versions.get(version)
        if v is None:
            raise e.NotFound(f"model '{entry.name}' has no version {version}", field="version")
        if self._engine_options is None or self.store is None:
            raise e.Unimplemented("engines are not available in this edged build")
        from edged.manager.residency import LoadSpec

        options = self._engine_options(v)
        return LoadSpec(name=entry.name, version=version,
                        tier=tier or (entry.tier if version == entry.active and entry.tier
                                      != "storage" else "swap"),
                        artifact=self.store.path(v.sha256), fmt=v.format, options=options,
                        group=v.group, bytes=v.measured_bytes or v.estimated_bytes,
                        gpu=bool(getattr(options, "uses_gpu", False)))

    def _with_loaded(self, entry: Any) -> tuple[Any, LoadedView | None]:
        view = self.residency.view(f"{entry.name}:{entry.active}") if self.residency else None
        return entry, view

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
        entry = self._catalog().get(name)
        targets = [version] if version else sorted(entry.versions)
        in_use = {v.version for v in self.loaded() if v.name == name and v.in_flight}
        removed = self._catalog().remove(name, version, force=force,
                                         in_use=lambda key: int(key.split(":")[1]) in in_use)
        for number in targets:
            if self.residency is not None and self.residency.view(f"{name}:{number}"):
                self.residency.unload(f"{name}:{number}")
        self.events.publish("remove", name, version or 0, f"versions {targets}")
        return list(removed) if removed is not None else targets

    def set_tier(self, name: str, tier: str) -> tuple[Any, LoadedView | None]:
        with self._switch_lock:
            before = self._catalog().get(name)
            entry = self._catalog().set_tier(name, tier)
            key = f"{name}:{entry.active}"
            if self.residency is not None and self.residency.view(key) is not None:
                if tier == "storage":
                    self.residency.unload(key)
                else:
                    self.residency.retier(key, tier)
            if tier == "ram" and self.residency is not None:
                self.residency.load(self.load_spec(entry, entry.active))
            self.events.publish("tier", name, entry.active, f"{before.tier} -> {tier}")
            return self._with_loaded(entry)

    def activate(self, name: str, version: int,
                 allow_signature_change: bool = False) -> tuple[Any, LoadedView | None]:
        return self._switch(name, lambda: self._catalog().activate(
            name, version, allow_signature_change=allow_signature_change))

    def rollback(self, name: str) -> tuple[Any, LoadedView | None]:
        return self._switch(name, lambda: self._catalog().rollback(name))

    def _switch(self, name: str, commit: Callable[[], Any]) -> tuple[Any, LoadedView | None]:
        """Version switch: warm the new version first (if the old one is loaded), commit the
        manifest atomically, then retire the old version once its requests finish."""
        with self._switch_lock:
            before = self._catalog().get(name)
            old_key = f"{name}:{before.active}"
            was_loaded = self.residency is not None and self.residency.view(old_key) is not None
            entry = commit()
            if was_loaded and entry.active != before.active and self.residency is not None:
                try:
                    self.residency.load(self.load_spec(entry, entry.active))
                except e.EdgedError:
                    pass  # loads on demand instead; the switch itself is committed
                self.residency.retire(old_key)
            self.events.publish("version_switch", name, entry.active,
                                f"v{before.active} -> v{entry.active}")
            return self._with_loaded(entry)

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
               max_latency_ms: float | None) -> Any:
        return self._serving().select(task, priority, max_bytes=max_bytes,
                                      max_latency_ms=max_latency_ms)

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

    def shm_status(self, name: str = "") -> list[Any]:
        return self._serving().shm_status(name)  # type: ignore[no-any-return]
