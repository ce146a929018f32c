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
from edged.manager import installs
from edged.manager.catalog import engine_compat
from edged.manager.catalog.artifacts import MissingArtifacts
from edged.manager.events import EventBus
from edged.manager.memory import variants
from edged.manager.transitions import Transition, apply_reload, plan_reload
from edged.units import format_size
from edged.views import InstallSpec, LoadedView, StatusView, StoreUsage, TierUsage

if TYPE_CHECKING:
    from edged.manager.memory.residency import LoadSpec, Residency

TIERS = ("ram", "swap", "storage")
# A variant job's memory budget is the swap tier's, but at least this: the converter's own
# Python, numpy and ONNX Runtime take ~150 MB before the model does.
JOB_MIN_BYTES = 512 << 20
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
                 engine_compat.installed_tensorrt_version,
                 max_quality_drop: float = variants.DEFAULT_MAX_QUALITY_DROP) -> None:
        self.state_dir = state_dir
        self.budgets = budgets
        self.sampler = sampler
        self.events = events
        self.catalog = catalog
        self.residency = residency
        self.store = store
        self.serving = serving
        # This device's measured worker costs for status (set by the daemon); None: unknown.
        self.fixed_costs: Callable[[], Mapping[str, Any]] | None = None
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
        self._specs: dict[tuple[str, int, str | None, str], tuple[Any, Any]] = {}
        self._missing = MissingArtifacts(store)
        self._trt_probe = tensorrt_version
        self._trt: list[str | None] = []  # the installed TensorRT, looked up once
        self._max_quality_drop = max_quality_drop

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
        dropped = self._catalog().manifests.dropped_note
        if dropped:
            self.events.publish("manifest_dropped", message=dropped)
        for (name, version), artifact in sorted(self._missing.of(state).items()):
            msg = str(self._missing.error(name, version, artifact))
            log.error("%s", msg)
            self.events.publish("artifact_missing", name, version, msg, artifact=artifact[:12])
        for entry in self._catalog().list():
            if entry.tier != "ram":
                continue
            try:
                self._res().load(self.serving_spec(entry, entry.active))
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
            manifest_error=self._manifest_error,
            fixed_costs=self.fixed_costs() if self.fixed_costs is not None else None,
            gpu_budget=self._gpu_budget(loaded), **self._store_status())

    def _store_status(self) -> dict[str, Any]:
        """The store's line of status and the notes an operator must act on."""
        if self.catalog is None:
            return {}
        loose = self.catalog.unreferenced()
        store = StoreUsage(self.catalog.stored_bytes(), self.budgets.storage, len(loose),
                           sum(loose.values()))
        notes = [n for n in (self.catalog.manifests.dropped_note,) if n]
        if loose:
            notes.append(f"{len(loose)} artifact(s) that no manifest references are kept "
                         f"({format_size(store.unreferenced_bytes)}): `edged fsck` lists them, "
                         "`edged fsck --gc` deletes them")
        return {"notes": tuple(notes), "store": store}

    def _gpu_budget(self, loaded: list[LoadedView]) -> tuple[int, int, int] | None:
        """(budget, used by loaded GPU models, device total) of a discrete GPU, else None."""
        budget = getattr(self.budgets, "gpu", 0)
        if not budget:
            return None
        used = sum(m.footprint_bytes for m in loaded if not m.evicting
                   and any(p != "CPUExecutionProvider" for p in m.providers))
        return budget, used, getattr(self.budgets, "gpu_total", 0)

    def loaded(self) -> list[LoadedView]:
        views = self.residency.views() if self.residency is not None else []
        if self.serving is None:
            return views
        count = self.serving.lane_count
        return [replace(v, lanes=count(f"{v.name}:{v.version}")) for v in views]

    def _tier_usage(self, loaded: list[LoadedView]) -> tuple[TierUsage, ...]:
        counts = dict.fromkeys(TIERS, 0)
        held: dict[str, int] = {}  # what the storage tier holds: its models, older versions
        for model in self.catalog.list() if self.catalog is not None else []:
            counts[model.tier] += 1
            for number, v in model.versions.items():
                if model.tier == "storage" or number != model.active:
                    held.update(v.artifacts)
        disk = sum(held.values())
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
            dropped = self._catalog().manifests.dropped_note
            if dropped:
                self.events.publish("manifest_dropped", message=dropped)
        if to_load:
            threading.Thread(target=self._load_all, args=(to_load,), name="reload-ram",
                             daemon=True).start()
        count = len(state.models)
        self.events.publish("manifest_reload", message=f"{count} models", ok="true")
        return True, "", count

    def _load_all(self, entries: list[Any]) -> None:
        for entry in entries:
            try:
                self._res().load(self.serving_spec(entry, entry.active))
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

    def load_spec(self, entry: Any, version: int, tier: str | None = None,
                  variant: str = "") -> LoadSpec:
        """The load spec of one version (in one of its variants; "": the version itself, or
        the one pinned); cached per catalog entry (entries are immutable, a change makes a
        new one), because the inference path asks for it on every request."""
        key = (entry.name, version, tier, variant)
        hit = self._specs.get(key)
        if hit is not None and hit[0] is entry:
            return hit[1]  # type: ignore[no-any-return]
        spec = self._make_spec(entry, version, tier, variant)
        self._specs[key] = (entry, spec)
        return spec

    def serving_spec(self, entry: Any, version: int, tier: str | None = None,
                     announce: bool = True) -> LoadSpec:
        """The spec a request or a load of ``version`` uses: its loaded variant if it is
        loaded, else the variant ``variants.choose`` picks now (an event says which, when
        it is not the version itself). Without variants: ``load_spec`` (the request path
        pays nothing for them)."""
        v = entry.versions.get(version)
        if v is None or not v.variants:
            return self.load_spec(entry, version, tier)
        res = self._res()
        view = res.view(f"{entry.name}:{version}")
        if view is not None:
            return self.load_spec(entry, version, tier, view.variant)
        if v.serve:
            return replace(self.load_spec(entry, version, tier, v.serve),
                           variant_reason=f"variant {v.serve} is pinned")
        specs = {n: self.load_spec(entry, version, tier, n) for n in v.variant_names}
        choice = variants.choose(specs, {n: v.variant(n).quality for n in specs},
                                 v.variant_name, res.plan,
                                 max_quality_drop=self._max_quality_drop)
        if announce and choice.spec.variant != v.variant_name:
            self.events.publish("variant", entry.name, version,
                                f"serving {choice.spec.variant}: {choice.reason}",
                                variant=choice.spec.variant)
        return replace(choice.spec, variant_reason=choice.reason)

    def unservable(self, entry: Any, version: int) -> e.EdgedError | None:
        """What ``load_spec`` would refuse ``version`` with (a missing artifact, another
        TensorRT), or None — for callers that skip such versions (selection, preloads)."""
        try:
            self.load_spec(entry, version)
        except e.EdgedError as exc:
            return exc
        return None

    def _make_spec(self, entry: Any, version: int, tier: str | None,
                   variant: str = "") -> LoadSpec:
        top = entry.versions.get(version)
        if top is None:
            raise e.NotFound(f"model '{entry.name}' has no version {version}", field="version")
        v = top.variant(variant or top.serve)
        if self._engine_options is None or self.store is None:
            raise e.Unimplemented("engines are not available in this edged build")
        from edged.manager.memory.residency import LoadSpec

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
                        peak=self._load_peak(v, tier), variant=v.variant_name)

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
        if entry.tier != before.tier:  # already there: nothing moved, nothing to report
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

    # -- variants (edged.manager.memory.variants) ----------------------------------------
    def make_variant(self, name: str, version: int | None, kind: str, *,
                     accept_change: float | None, quality: float | None = None,
                     progress: Callable[[str], None] = lambda stage: None) -> tuple[Any, Any]:
        """Make the ``kind`` variant of a version in a child process (``engines.convert``;
        its memory budget is the swap tier's, see ``JOB_MIN_BYTES``), and install it only if
        its relative output
        change on the warm-up inputs is within ``accept_change`` (None: report only).
        Returns ``(report, entry or None)``. A failed, refused or killed job leaves nothing:
        the file lives in the store's tmp directory until installed."""
        import tempfile

        from edged.engines import convert

        entry = self._catalog().get(name)
        number = version or entry.active
        v = entry.versions.get(number)
        if v is None:
            raise e.NotFound(f"model '{name}' has no version {number}", field="version")
        if kind in v.variant_names:
            raise e.AlreadyExists(f"model '{name}' version {number} already has a variant "
                                  f"{kind!r}", field="kind")
        if v.format != "onnx":
            raise e.FailedPrecondition(f"variants are made from ONNX models; '{name}' v{number} "
                                       f"is {v.format}", field="kind")
        src = self.store.path(v.store_id)

        def step(stage: str) -> None:
            self.events.publish("variant_job", name, number, f"{kind}: {stage}", stage=stage)
            progress(stage)

        with tempfile.TemporaryDirectory(prefix="variant-", dir=self.store.tmp) as tmp:
            dst = Path(tmp) / "model.onnx"
            report = convert.run_job(kind, src, dst, shapes=dict(v.warmup_shapes),
                                     memory_limit_bytes=max(self.budgets.swap, JOB_MIN_BYTES),
                                     on_progress=step)
            change = report.worst_rel
            if accept_change is None or change > accept_change:
                why = (f"not installed: output change {change:.4g} is more than the accepted "
                       f"{accept_change:g}" if accept_change is not None else
                       "not installed: pass --accept CHANGE to install it")
                self.events.publish("variant_job", name, number, f"{kind}: {why}",
                                    stage="refused")
                return report, None
            blob = self.store.put_file(dst)
        derived = round(v.quality * (1 - min(1.0, change)), 4)
        made = self._catalog().add_variant(
            name, number, kind, blob, precision=kind,
            quality=derived if quality is None else quality,
            notes=f"made on the device from {v.variant_name}: max output change "
                  f"{change:.4g} (relative) on the warm-up inputs")
        self.events.publish("variant_made", name, number,
                            f"{kind}: {blob.size_bytes} bytes, output change {change:.4g}",
                            variant=kind)
        return report, made

    def set_variant(self, name: str, version: int | None, variant: str) -> Any:
        entry = self._catalog().set_serve(name, version, variant)
        self.events.publish("variant", name, version or entry.active,
                            f"pinned to {variant}" if variant not in ("", "auto")
                            else "edged chooses the variant")
        return entry

    def remove_variant(self, name: str, version: int | None, variant: str) -> Any:
        number = version or self._catalog().get(name).active
        view = self.residency.view(f"{name}:{number}") if self.residency is not None else None
        if view is not None and view.variant == variant:
            self.residency.unload(f"{name}:{number}")  # type: ignore[union-attr]
        return self._catalog().remove_variant(name, version, variant)

    def recommend(self, *, name: str | None, artifact_path: str | None,
                  shapes: Mapping[str, tuple[int, ...]] | None = None) -> Any:
        return self._serving().recommend(name=name, artifact_path=artifact_path,
                                         shapes=shapes, max_quality_drop=self._max_quality_drop)

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
