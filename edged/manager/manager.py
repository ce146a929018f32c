"""The model manager: the one facade the service layer (and the OTA tool) talks to.

It owns no policy of its own; it composes the catalog (what is installed, in which tier), the
residency (what is loaded, reference counts, capacity decisions), telemetry and events, so that
every caller goes through the same decisions. Methods return domain objects; the service layer
turns them into protos. It is built from its parts, every one required (the daemon's
``build_parts`` builds them in order); none of them holds the manager.

A version that cannot run here is refused when its load spec is made (``specs``), before any
worker starts. Version switches, tier moves
and hand-edited reloads go through ``transitions``: what they need loaded is loaded before the
catalog commits, so a failure leaves the old version active.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged import __version__
from edged import errors as e
from edged.manager import installs
from edged.manager.advice import Advice
from edged.manager.catalog.artifacts import MissingArtifacts
from edged.manager.catalog.catalog import Catalog
from edged.manager.catalog.manifests import ModelEntry
from edged.manager.catalog.store import Store
from edged.manager.events import EventBus
from edged.manager.memory import variants
from edged.manager.memory.residency import Residency
from edged.manager.seams import Sampler
from edged.manager.selection import Selection
from edged.manager.serving import IndexRow, ModelMetadata, Serving
from edged.manager.shm import Region
from edged.manager.specs import Specs
from edged.manager.transitions import Transition, apply_reload, plan_reload
from edged.units import format_size
from edged.values import TIERS, Budgets, ModelKey
from edged.views import (
    CheckView,
    InstallSpec,
    LoadedView,
    StatusView,
    StoreUsage,
    TierUsage,
)

if TYPE_CHECKING:
    from edged.engines.convert import VariantReport
    from edged.engines.lanes import LaneGrant

__all__ = ["IndexRow", "ModelManager", "ModelMetadata"]  # the metadata types live in serving

# A catalog change that commits after its ``before_commit`` (``Transition.prepare``) ran.
Change = Callable[[Callable[[ModelEntry], None]], ModelEntry]

# A variant job's memory budget is the swap tier's, but at least this: the converter's own
# Python, numpy and ONNX Runtime take ~150 MB before the model does.
JOB_MIN_BYTES = 512 << 20
log = logging.getLogger("edged.manager")


class ModelManager:
    def __init__(self, *, state_dir: Path, budgets: Budgets, sampler: Sampler,
                 events: EventBus, store: Store, catalog: Catalog, missing: MissingArtifacts,
                 residency: Residency, specs: Specs, serving: Serving, advice: Advice,
                 installer: installs.Installer,
                 fixed_costs: Callable[[], Mapping[str, object]]) -> None:
        """``fixed_costs``: this device's measured worker costs, for status
        (``engines.fixed_costs.FixedCostsBook.status``)."""
        self.state_dir = state_dir
        self.budgets = budgets
        self.sampler = sampler
        self.events = events
        self.store = store
        self.catalog = catalog
        self.residency = residency
        self.specs = specs
        self.serving = serving
        self.advice = advice
        self.installer = installer
        self.fixed_costs = fixed_costs
        self._missing = missing
        self._started = time.monotonic()
        self._state = "starting"
        # a start-up fallback from invalid manifests is shown like a rejected reload
        self._manifest_error = catalog.manifests.fallback_note
        self._switch_lock = threading.Lock()

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
        state = self.catalog.state
        dropped = self.catalog.manifests.dropped_note
        if dropped:
            self.events.publish("manifest_dropped", message=dropped)
        for (name, version), artifact in sorted(self._missing.of(state).items()):
            msg = str(self._missing.error(name, version, artifact))
            log.error("%s", msg)
            self.events.publish("artifact_missing", name, version, msg, artifact=artifact[:12])
        for entry in self.catalog.list():
            if entry.tier != "ram":
                continue
            try:
                self.residency.load(self.specs.serving_spec(entry, entry.active))
            except e.EdgedError as exc:
                problems.append(f"{entry.name}: {exc}")
                self.events.publish("load_failed", entry.name, entry.active, str(exc))
        return problems

    def close(self) -> None:
        self.residency.close()

    # -- status --------------------------------------------------------------------------
    def status(self) -> StatusView:
        snap = self.sampler.snapshot()
        loaded = self.loaded()
        notes, store = self._store_status()
        return StatusView(
            version=__version__, uptime_s=time.monotonic() - self._started, state=self._state,
            state_dir=str(self.state_dir), snapshot=snap, reserve_bytes=self.budgets.reserve,
            tiers=self._tier_usage(loaded), loaded=tuple(loaded),
            models_installed=len(self.catalog.list()), manifest_error=self._manifest_error,
            fixed_costs=self.fixed_costs(),
            gpu_budget=self._gpu_budget(loaded), notes=notes, store=store)

    def _store_status(self) -> tuple[tuple[str, ...], StoreUsage]:
        """The store's line of status and the notes an operator must act on."""
        loose = self.catalog.unreferenced()
        store = StoreUsage(self.catalog.stored_bytes(), self.budgets.storage, len(loose),
                           sum(loose.values()))
        notes = [n for n in (self.catalog.manifests.dropped_note,) if n]
        if loose:
            notes.append(f"{len(loose)} artifact(s) that no manifest references are kept "
                         f"({format_size(store.unreferenced_bytes)}): `edged fsck` lists them, "
                         "`edged fsck --gc` deletes them")
        return tuple(notes), store

    def _gpu_budget(self, loaded: list[LoadedView]) -> tuple[int, int, int] | None:
        """(budget, used by loaded GPU models, device total) of a discrete GPU, else None."""
        budget = self.budgets.gpu
        if not budget:
            return None
        used = sum(m.footprint_bytes for m in loaded if not m.evicting
                   and any(p != "CPUExecutionProvider" for p in m.providers))
        return budget, used, self.budgets.gpu_total

    def loaded(self) -> list[LoadedView]:
        views = self.residency.views()
        count = self.serving.lane_count
        return [replace(v, lanes=count(ModelKey(v.name, v.version))) for v in views]

    def _tier_usage(self, loaded: list[LoadedView]) -> tuple[TierUsage, ...]:
        counts = dict.fromkeys(TIERS, 0)
        held: dict[str, int] = {}  # what the storage tier holds: its models, older versions
        for model in self.catalog.list():
            counts[model.tier] += 1
            for number, v in model.versions.items():
                if model.tier == "storage" or number != model.active:
                    held.update(v.artifacts)
        disk = sum(held.values())
        usage = []
        for tier in TIERS:
            # a victim on its way out is not counted: its bytes went to the load it made
            # room for (counting both would show a tier over its budget for a moment)
            mine = [m for m in loaded if m.tier == tier and not m.evicting]
            used = disk if tier == "storage" else sum(m.footprint_bytes for m in mine)
            usage.append(TierUsage(tier, self.budgets.of(tier), used, counts[tier], len(mine)))
        return tuple(usage)

    def reload(self) -> tuple[bool, str, int]:
        """Re-read hand-edited manifests; an invalid edit — or one that does not fit the tier
        budgets — keeps the old state in force. An accepted one is applied to what is loaded:
        models that left ram become evictable (or unload, to storage), new ram models load
        in the background (the main loop that calls this must keep feeding the watchdog)."""
        with self._switch_lock:
            old = self.catalog.state
            try:
                state = self.catalog.reload(
                    before_commit=lambda new: plan_reload(self.residency, old, new))
            except e.EdgedError as exc:
                for view in self.residency.views():  # moves plan_reload planned: not committed
                    self.residency.cancel_move(f"{view.name}:{view.version}")
                self._manifest_error = str(exc)
                self.events.publish("manifest_reload", message=f"rejected: {exc}", ok="false")
                return False, str(exc), len(self.catalog.list())
            self._manifest_error = ""
            to_load = apply_reload(self.residency, old, state)
            dropped = self.catalog.manifests.dropped_note
            if dropped:
                self.events.publish("manifest_dropped", message=dropped)
        if to_load:
            threading.Thread(target=self._load_all, args=(to_load,), name="reload-ram",
                             daemon=True).start()
        count = len(state.models)
        self.events.publish("manifest_reload", message=f"{count} models", ok="true")
        return True, "", count

    def _load_all(self, entries: list[ModelEntry]) -> None:
        for entry in entries:
            try:
                self.residency.load(self.specs.serving_spec(entry, entry.active))
            except e.EdgedError as exc:
                log.warning("ram tier after reload: %s: %s", entry.name, exc)

    def _with_loaded(self, entry: ModelEntry) -> tuple[ModelEntry, LoadedView | None]:
        view = self.residency.view(f"{entry.name}:{entry.active}")
        return self._missing.annotate(self.catalog.state, entry), view

    # -- models --------------------------------------------------------------------------
    def list_models(self, tier: str | None = None,
                    task: str | None = None) -> list[tuple[ModelEntry, LoadedView | None]]:
        rows = []
        for entry in self.catalog.list():
            if tier and entry.tier != tier:
                continue
            if task and task not in entry.versions[entry.active].tasks:
                continue
            rows.append(self._with_loaded(entry))
        return rows

    def get_model(self, name: str) -> tuple[ModelEntry, LoadedView | None]:
        return self._with_loaded(self.catalog.get(name))

    def install_stream(self, spec: InstallSpec,
                       parts: Iterator[tuple[Any, Iterator[bytes]]]) -> installs.InstallResult:
        return self.installer.from_stream(spec, parts)

    def install_from(self, spec: InstallSpec, source: str, sha256: str | None,
                     size: int | None, progress: Callable[[int, int, str], None]
                     ) -> installs.InstallResult:
        return self.installer.from_source(spec, source, sha256, size, progress)

    def remove(self, name: str, version: int | None, force: bool = False) -> list[int]:
        """Remove one version (1 or more), or every version when ``version`` is None."""
        entry = self.catalog.get(name)
        targets = [version] if version is not None else sorted(entry.versions)
        in_use = {v.version for v in self.loaded() if v.name == name and v.in_flight}
        removed = self.catalog.remove(name, version, force=force,
                                         in_use=lambda key: int(key.split(":")[1]) in in_use)
        for number in targets:
            if self.residency.view(f"{name}:{number}"):
                self.residency.unload(f"{name}:{number}")
        left = self.catalog.state.models.get(name)
        if left is not None and left.tier == "ram" and left.active != entry.active:
            self._load_all([left])  # the ram tier is always loaded
        self.events.publish("remove", name, version or 0, f"versions {targets}")
        return list(removed) if removed is not None else targets

    def set_tier(self, name: str, tier: str) -> tuple[ModelEntry, LoadedView | None]:
        """Move a model: into ram it is planned and loaded before the move is committed."""
        before = self.catalog.get(name)
        entry = self._transition(name, lambda prepare: self.catalog.set_tier(
            name, tier, before_commit=prepare))
        if entry.tier != before.tier:  # already there: nothing moved, nothing to report
            self.events.publish("tier", name, entry.active, f"{before.tier} -> {entry.tier}")
        return self._with_loaded(entry)

    def activate(self, name: str, version: int,
                 allow_signature_change: bool = False) -> tuple[ModelEntry, LoadedView | None]:
        return self._switch(name, lambda prepare: self.catalog.activate(
            name, version, allow_signature_change=allow_signature_change,
            before_commit=prepare))

    def rollback(self, name: str) -> tuple[ModelEntry, LoadedView | None]:
        return self._switch(name, lambda prepare: self.catalog.rollback(
            name, before_commit=prepare))

    def _switch(self, name: str, change: Change) -> tuple[ModelEntry, LoadedView | None]:
        """Version switch: the new version loads first (when the old one is loaded or the
        tier is ram) and the manifest is committed only once it has; then the old version is
        retired once its requests finish. A failed load leaves the old version active."""
        before = self.catalog.get(name)
        entry = self._transition(name, change)
        if entry.active != before.active:
            self.events.publish("version_switch", name, entry.active,
                                f"v{before.active} -> v{entry.active}")
        return self._with_loaded(entry)

    def _transition(self, name: str, change: Change) -> ModelEntry:
        with self._switch_lock:
            t = Transition(self.residency, self.specs, self.catalog.get(name))
            try:
                entry = change(t.prepare)
            except BaseException:
                t.abort()
                raise
            t.settle(entry)
            if t.load_result is not None:
                view, seconds = t.load_result
                self.catalog.record_measurement(name, entry.active, view.footprint_bytes,
                                                   seconds)
            return self.catalog.get(name)

    # -- variants (edged.manager.memory.variants) ----------------------------------------
    def make_variant(self, name: str, version: int | None, kind: str, *,
                     accept_change: float | None, quality: float | None = None,
                     progress: Callable[[str], None] = lambda stage: None
                     ) -> tuple[VariantReport, ModelEntry | None]:
        """Make the ``kind`` variant of a version in a child process (``engines.convert``;
        its memory budget is the swap tier's, see ``JOB_MIN_BYTES``), and install it only if
        its relative output
        change on the warm-up inputs is within ``accept_change`` (None: report only).
        Returns ``(report, entry or None)``. A failed, refused or killed job leaves nothing:
        the file lives in the store's tmp directory until installed."""
        import tempfile

        from edged.engines import convert

        number, v = self.catalog.version_of(name, version)
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
        made = self.catalog.add_variant(
            name, number, kind, blob, precision=kind,
            quality=derived if quality is None else quality,
            notes=f"made on the device from {v.variant_name}: max output change "
                  f"{change:.4g} (relative) on the warm-up inputs")
        self.events.publish("variant_made", name, number,
                            f"{kind}: {blob.size_bytes} bytes, output change {change:.4g}",
                            variant=kind)
        return report, made

    def set_variant(self, name: str, version: int | None, variant: str) -> ModelEntry:
        entry = self.catalog.set_serve(name, version, variant)
        self.events.publish("variant", name, version or entry.active,
                            f"pinned to {variant}" if variant not in ("", "auto")
                            else "edged chooses the variant")
        return entry

    def remove_variant(self, name: str, version: int | None, variant: str) -> ModelEntry:
        number = version or self.catalog.get(name).active
        view = self.residency.view(f"{name}:{number}")
        if view is not None and view.variant == variant:
            self.residency.unload(f"{name}:{number}")
        return self.catalog.remove_variant(name, version, variant)

    def recommend(self, *, name: str | None, artifact_path: str | None,
                  shapes: Mapping[str, tuple[int, ...]] | None = None
                  ) -> variants.Recommendation:
        return self.advice.recommend(name=name, artifact_path=artifact_path, shapes=shapes,
                                     max_quality_drop=self.specs.max_quality_drop)

    # -- serving (edged.manager.serving) and advice (edged.manager.advice) ----------------
    def load(self, name: str, version: int | None = None) -> tuple[LoadedView, list[str], float]:
        return self.serving.load(name, version)

    def unload(self, name: str, version: int | None = None) -> int:
        return self.serving.unload(name, version)

    def check(self, *, name: str | None, artifact_path: str | None,
              tier: str | None) -> CheckView:
        return self.advice.check(name=name, artifact_path=artifact_path, tier=tier)

    def select(self, task: str, priority: str, *, max_bytes: int | None,
               max_latency_ms: float | None, mode: str | None = None,
               pinned: str | None = None) -> Selection:
        return self.advice.select(task, priority, max_bytes=max_bytes,
                                  max_latency_ms=max_latency_ms, mode=mode, pinned=pinned)

    def infer(self, name: str, version: int | None, inputs: Mapping[str, Any],
              outputs: list[str] | None, output_shm: Mapping[str, Any],
              timeout_s: float | None = None) -> tuple[int, dict[str, Any]]:
        return self.serving.infer(name, version, inputs, outputs, output_shm,
                                  timeout_s=timeout_s)

    def is_ready(self, name: str, version: int | None) -> bool:
        return self.serving.is_ready(name, version)

    def model_metadata(self, name: str, version: int | None) -> ModelMetadata:
        return self.serving.model_metadata(name, version)

    def repository_index(self, ready_only: bool = False) -> list[IndexRow]:
        return self.serving.repository_index(ready_only)

    def shm_register(self, name: str, key: str, offset: int, byte_size: int,
                     peer: str = "") -> None:
        self.serving.shm_register(name, key, offset, byte_size, peer=peer)

    def shm_unregister(self, name: str) -> None:
        self.serving.shm_unregister(name)

    def open_lane(self, name: str, version: int | None, pid: int, size: int,
                  timeout_s: float | None = None) -> tuple[int, LaneGrant]:
        return self.serving.open_lane(name, version, pid, size, timeout_s)

    def shm_status(self, name: str = "") -> list[Region]:
        return self.serving.shm_status(name)
