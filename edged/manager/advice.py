"""Advice: what would fit (``check``), which variant suits this device (``recommend``) and
which model to use for a task (``select``). Nothing here loads or runs a model: it asks the
residency's planner and reads the catalog and the measured latencies (latency.py), so that an
operator or a robot can decide before anything is evicted.

Built on the parts it reads (the catalog as ``specs.CatalogReader``, the specs bridge, the
residency), never on the manager.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edged import errors as e
from edged.manager import selection
from edged.manager.catalog.manifests import ModelEntry, VersionEntry
from edged.manager.latency import Latencies
from edged.manager.memory import planner, variants
from edged.manager.memory.residency import LoadSpec, Residency
from edged.manager.specs import CatalogReader, Specs
from edged.values import MEMORY_TIERS, ModelKey, Tier
from edged.views import CheckView

if TYPE_CHECKING:
    from edged.engines.base import Inspection

_FIT = {"admit": "now", "evict": "evict", "reject": "no"}


class Advice:
    def __init__(self, *, catalog: CatalogReader, specs: Specs, residency: Residency,
                 inspect: Callable[[Path, str | None], Inspection], latencies: Latencies,
                 select_mode: str = "hybrid", pins: Mapping[str, str] | None = None,
                 estimate_at: Callable[[Path, Mapping[str, Sequence[int]]], int] | None = None
                 ) -> None:
        """``estimate_at``: an artifact's estimate at given input shapes (recommend's batch
        sizes); None: the estimate at install (the same for every batch: no batch answer)."""
        self._catalog = catalog
        self._specs = specs
        self._res = residency
        self._inspect = inspect
        self._latencies = latencies
        self._select_mode = select_mode
        self._pins = dict(pins or {})
        self._estimate_at = estimate_at

    def _device_file(self, artifact_path: str) -> tuple[Path, Inspection]:
        """A model file on the device (not installed) that check / recommend were asked about,
        inspected."""
        path = Path(artifact_path)
        if not path.is_absolute() or not path.is_file():
            raise e.InvalidArgument(f"{artifact_path} is not a file on the device",
                                    field="artifact_path")
        return path, self._inspect(path, None)

    # -- capacity dry run ----------------------------------------------------------------
    def check(self, *, name: str | None, artifact_path: str | None,
              tier: str | None) -> CheckView:
        if artifact_path:
            path, info = self._device_file(artifact_path)
            spec = LoadSpec(name="(artifact)", version=1, tier=tier or "swap", artifact=path,
                            fmt=info.format, options=None, group=None,
                            bytes=info.estimate_bytes)
            estimated = info.estimate_bytes
        else:
            entry = self._catalog.get(str(name))
            if entry.tier == "storage" and not tier:
                # check answers what `load` would do: load refuses a storage-tier model
                raise e.FailedPrecondition(
                    f"model '{name}' is in the storage tier: load refuses it until it is "
                    f"promoted (edgectl tier {name} swap); `edgectl check {name} --tier swap` "
                    "says whether the promotion fits", reason="STORAGE_TIER")
            target = tier or entry.tier
            spec = self._specs.serving_spec(entry, entry.active, tier=target, announce=False)
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

    # -- what fits this device: every variant in every tier (edged.manager.memory.variants) --------
    def recommend(self, *, name: str | None, artifact_path: str | None,
                  shapes: Mapping[str, tuple[int, ...]] | None,
                  max_quality_drop: float) -> variants.Recommendation:
        # (variant, spec, its catalog entry (None: a file), loaded now, warm-up shapes, path)
        rows: list[tuple[str, LoadSpec, VersionEntry | None, bool,
                         Mapping[str, tuple[int, ...]], Path]] = []
        if artifact_path:
            path, info = self._device_file(artifact_path)
            label, own, home = path.name, "file", Tier.SWAP
            for tier in MEMORY_TIERS:
                rows.append(("file", LoadSpec(
                    name="(artifact)", version=1, tier=tier, artifact=path, fmt=info.format,
                    options=None, group=None, bytes=info.estimate_bytes), None, False,
                    dict(shapes or {}), path))
        else:
            entry = self._catalog.get(str(name))
            top = entry.versions[entry.active]
            label, own = entry.name, top.variant_name
            home = entry.tier if entry.tier != Tier.STORAGE else Tier.SWAP
            loaded = self._res.view(ModelKey(entry.name, entry.active))
            for vname in top.variant_names:
                v = top.variant(vname)
                for tier in MEMORY_TIERS:
                    spec = self._specs.load_spec(entry, entry.active, tier, vname)
                    here = loaded is not None and loaded.variant == vname and \
                        loaded.tier == tier
                    rows.append((vname, spec, v, here, dict(top.warmup_shapes),
                                 spec.artifact))
        budgets = self._res.budgets
        fits = []
        for vname, spec, ver, already, warm, path in rows:
            budget = budgets.of(spec.tier)
            decision, evict, why = variants.fit_of(self._res.plan(spec), budget, spec.load_bytes)
            if already:
                decision, evict, why = "admit", (), "loaded now"
            measured = ver.measured_bytes if ver is not None else None
            batch = self._max_batch(path, warm, measured, budget)
            fits.append(variants.Fit(
                variant=vname, tier=spec.tier, decision=decision, evict=evict,
                estimated_bytes=ver.estimated_bytes if ver is not None else spec.bytes,
                measured_bytes=measured,
                load_seconds=ver.load_seconds if ver is not None else None,
                quality=ver.quality if ver is not None else 0.0, max_batch=batch, reason=why,
                latency_ms=self._latencies.of_variant(label, vname)))
        choice, reason = variants.pick(fits, own, max_quality_drop, home)
        return variants.Recommendation(label, tuple(fits), choice, reason)

    def _max_batch(self, path: Path, warm: Mapping[str, tuple[int, ...]],
                   measured: int | None, budget: int) -> int | None:
        """The largest batch within ``budget`` by the estimate at batched warm-up shapes,
        moved by what a real load measured beyond the estimate (when one did)."""
        estimate_at = self._estimate_at
        if estimate_at is None or not warm:
            return None
        offset = (measured - estimate_at(path, warm)) if measured else 0
        return variants.max_batch(lambda shapes: estimate_at(path, shapes) + offset, warm,
                                  budget)

    # -- selection -----------------------------------------------------------------------
    def select(self, task: str, priority: str, *, max_bytes: int | None,
               max_latency_ms: float | None, mode: str | None = None,
               pinned: str | None = None) -> selection.Selection:
        """Rank the models that can do ``task``; ``mode``/``pinned`` default to the
        configuration's (``selection.mode``, ``selection.pins``)."""
        loaded = self._res.loaded_keys()
        rows: list[tuple[ModelEntry, VersionEntry, str, str]] = []  # (entry, version, key, problem)
        able: list[LoadSpec] = []
        for entry in self._catalog.list():
            v = entry.versions[entry.active]
            if task not in v.tasks:  # selection only ever mentions models that do the task
                continue
            key, problem = ModelKey(entry.name, entry.active), ""
            if entry.tier != "storage" and key not in loaded:
                try:
                    able.append(self._specs.serving_spec(entry, entry.active, announce=False))
                except e.EdgedError as exc:  # a missing artifact, another TensorRT
                    problem = exc.message
            rows.append((entry, v, key, problem))
        fits = self._res.fits(able)  # one telemetry reading for every candidate
        cands = [selection.Candidate(
            name=entry.name, version=entry.active, tasks=v.tasks, quality=v.quality,
            latency_ms=self._latencies.of(entry.name),
            footprint_bytes=v.measured_bytes or v.estimated_bytes, loaded=key in loaded,
            fit="now" if key in loaded else _FIT[fits.get(key, "reject")], tier=entry.tier,
            problem=problem) for entry, v, key, problem in rows]
        return selection.select(task, priority, cands, max_bytes=max_bytes,
                                max_latency_ms=max_latency_ms, mode=mode or self._select_mode,
                                pinned=pinned or self._pins.get(task))
