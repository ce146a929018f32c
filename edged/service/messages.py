"""Converters between the manager's views and the protos. No logic, no decisions.

A model goes through its view (``model_view``: catalog entry + loaded view → ``ModelView``),
so that the proto the client reads and the view the client rebuilds from it
(``edged.client.convert``) are the same thing by construction."""

from __future__ import annotations

from typing import Any

from edged.v1 import models_pb2, system_pb2
from edged.values import SlotState
from edged.views import (
    LoadedView,
    ModelView,
    SignatureView,
    StatusView,
    TensorView,
    VariantView,
    VersionView,
)

TIER_TO_PB: dict[str, models_pb2.Tier] = {"ram": models_pb2.TIER_RAM, "swap": models_pb2.TIER_SWAP,
              "storage": models_pb2.TIER_STORAGE}
TIER_FROM_PB: dict[int, str] = {v: k for k, v in TIER_TO_PB.items()}
STATE_TO_PB: dict[str, models_pb2.LoadState] = {
    "unloaded": models_pb2.LOAD_STATE_UNLOADED, SlotState.LOADING: models_pb2.LOAD_STATE_LOADING,
    SlotState.READY: models_pb2.LOAD_STATE_READY,
    SlotState.UNLOADING: models_pb2.LOAD_STATE_UNLOADING,
    SlotState.FAILED: models_pb2.LOAD_STATE_FAILED,
}
FORMAT_TO_PB: dict[str, models_pb2.ModelFormat] = {
    "onnx": models_pb2.MODEL_FORMAT_ONNX, "tensorrt": models_pb2.MODEL_FORMAT_TENSORRT}


def loaded_pb(v: LoadedView) -> models_pb2.LoadedModel:
    return models_pb2.LoadedModel(
        name=v.name, version=v.version,
        tier=TIER_TO_PB.get(v.tier, models_pb2.TIER_UNSPECIFIED),
        state=STATE_TO_PB.get(v.state, models_pb2.LOAD_STATE_UNSPECIFIED),
        footprint_bytes=v.footprint_bytes,
        in_flight=v.in_flight, requests=v.requests, worker_pid=v.worker_pid,
        loaded_at=v.loaded_at, last_used=v.last_used, providers=list(v.providers),
        preloaded=v.preloaded, variant=v.variant, lanes=v.lanes,
        variant_reason=v.variant_reason)


def status_pb(s: StatusView) -> system_pb2.StatusResponse:
    snap = s.snapshot
    mem, dev = snap.memory, snap.device
    return system_pb2.StatusResponse(
        version=s.version,
        uptime_s=s.uptime_s,
        state=s.state,
        state_dir=s.state_dir,
        manifest_error=s.manifest_error,
        models_installed=s.models_installed,
        device=system_pb2.DeviceStatus(
            kind=dev.kind, model=dev.model, l4t_release=dev.l4t_release or "",
            jetpack=dev.jetpack or "", cpu_model=dev.cpu_model, cpu_count=dev.cpu_count,
            gpus=[_gpu_pb(g) for g in dev.gpus],
            temperatures_c=dict(dev.temperatures_c), power_mw=dict(dev.power_mw),
            cpu_percent=snap.cpu_percent),
        memory=system_pb2.MemoryStatus(
            total_bytes=mem.total_bytes, available_bytes=mem.available_bytes,
            swap_total_bytes=mem.swap_total_bytes, swap_free_bytes=mem.swap_free_bytes,
            nvmap_used_bytes=mem.nvmap_used_bytes or 0, simulated=mem.simulated,
            reserve_bytes=s.reserve_bytes, daemon_rss_bytes=snap.process_rss_bytes),
        tiers=[system_pb2.TierStatus(tier=TIER_TO_PB[t.tier], budget_bytes=t.budget_bytes,
                                     used_bytes=t.used_bytes, models=t.models, loaded=t.loaded)
               for t in s.tiers],
        loaded=[loaded_pb(v) for v in s.loaded],
        telemetry_sources=list(snap.sources),
        telemetry_errors=list(snap.errors),
        notes=list(s.notes),
        store=None if s.store is None else system_pb2.StoreStatus(
            installed_bytes=s.store.installed_bytes, budget_bytes=s.store.budget_bytes,
            unreferenced_artifacts=s.store.unreferenced_artifacts,
            unreferenced_bytes=s.store.unreferenced_bytes),
        fixed_costs=system_pb2.FixedCosts(**s.fixed_costs) if s.fixed_costs else None,
        gpu_budget=system_pb2.GpuBudget(budget_bytes=s.gpu_budget[0],
                                        used_bytes=s.gpu_budget[1],
                                        device_total_bytes=s.gpu_budget[2])
        if s.gpu_budget else None,
    )


def _gpu_pb(g: Any) -> system_pb2.GpuStatus:
    return system_pb2.GpuStatus(
        name=g.name, load_percent=-1.0 if g.load_percent is None else g.load_percent,
        freq_hz=g.freq_hz or 0, memory_total_bytes=g.memory_total_bytes or 0,
        memory_used_bytes=g.memory_used_bytes or 0, source=g.source)


def event_pb(ev: Any) -> system_pb2.Event:
    return system_pb2.Event(seq=ev.seq, time=ev.time, kind=ev.kind, model=ev.model,
                            version=ev.version, message=ev.message, details=dict(ev.details))


def _shape_text(dims: Any) -> str:
    return "x".join(str(int(d)) for d in dims)


def signature_view(sig: Any) -> SignatureView:
    if sig is None:
        return SignatureView()
    return SignatureView(*(tuple(TensorView(t.name, t.datatype, tuple(t.shape))
                                 for t in getattr(sig, kind)) for kind in ("inputs", "outputs")))


def version_view(number: int, v: Any, tier: str, active: bool) -> VersionView:
    """A catalog version record as the client sees it (numbers not measured yet: 0)."""
    return VersionView(
        version=number, sha256=v.sha256, size_bytes=v.size_bytes, format=v.format or "",
        tier=tier, active=active, tasks=tuple(v.tasks), quality=float(v.quality),
        providers=tuple(v.providers), precision=v.precision or "", notes=v.notes or "",
        signature=signature_view(v.signature), estimated_bytes=v.estimated_bytes or 0,
        measured_bytes=v.measured_bytes or 0, load_seconds=float(v.load_seconds or 0.0),
        installed_at=v.installed_at or "",
        engine_info=dict(getattr(v, "engine_info", None) or {}),
        warmup_shapes={k: _shape_text(s) for k, s in (v.warmup_shapes or {}).items()},
        group=v.group or "", inherited=tuple(getattr(v, "inherited", ())),
        inherited_from=getattr(v, "inherited_from", 0), serve=v.serve,
        variants=tuple(VariantView(
            name=n, sha256=x.sha256, size_bytes=x.size_bytes, format=x.format or "",
            precision=x.precision, quality=float(x.quality), notes=x.notes,
            estimated_bytes=x.estimated_bytes or 0, measured_bytes=x.measured_bytes or 0,
            load_seconds=float(x.load_seconds or 0.0), installed_at=x.installed_at or "")
            for n, x in sorted(v.variants.items())))


def model_view(entry: Any, loaded: LoadedView | None) -> ModelView:
    """A catalog entry and what is loaded of it, as ``get_model`` answers. Versions other
    than the active one are in storage."""
    return ModelView(
        name=entry.name, active_version=entry.active, tier=entry.tier,
        versions=tuple(version_view(n, entry.versions[n],
                                    entry.tier if n == entry.active else "storage",
                                    n == entry.active) for n in sorted(entry.versions)),
        state=loaded.state if loaded else "unloaded", loaded=loaded)


def _signature_pb(sig: SignatureView) -> models_pb2.Signature:
    out = models_pb2.Signature()
    for kind in ("inputs", "outputs"):
        for t in getattr(sig, kind):
            getattr(out, kind).add(name=t.name, datatype=t.datatype, shape=list(t.shape))
    return out


def _version_pb(v: VersionView) -> models_pb2.ModelVersion:
    return models_pb2.ModelVersion(
        version=v.version, sha256=v.sha256, size_bytes=v.size_bytes,
        format=FORMAT_TO_PB.get(v.format, models_pb2.MODEL_FORMAT_UNSPECIFIED),
        tier=TIER_TO_PB.get(v.tier, models_pb2.TIER_UNSPECIFIED), active=v.active,
        tasks=list(v.tasks), quality=v.quality, providers=list(v.providers),
        precision=v.precision, notes=v.notes, signature=_signature_pb(v.signature),
        estimated_bytes=v.estimated_bytes, measured_bytes=v.measured_bytes,
        load_seconds=v.load_seconds, installed_at=v.installed_at,
        engine_info=dict(v.engine_info), warmup_shapes=dict(v.warmup_shapes), group=v.group,
        inherited=list(v.inherited), inherited_from=v.inherited_from, serve=v.serve,
        variants=[models_pb2.Variant(
            name=x.name, sha256=x.sha256, size_bytes=x.size_bytes,
            format=FORMAT_TO_PB.get(x.format, models_pb2.MODEL_FORMAT_UNSPECIFIED),
            precision=x.precision, quality=x.quality, notes=x.notes,
            estimated_bytes=x.estimated_bytes, measured_bytes=x.measured_bytes,
            load_seconds=x.load_seconds, installed_at=x.installed_at) for x in v.variants])


def variant_fit_pb(f: Any) -> models_pb2.VariantFit:
    return models_pb2.VariantFit(
        variant=f.variant, tier=TIER_TO_PB[f.tier], decision=f.decision, evict=list(f.evict),
        estimated_bytes=f.estimated_bytes, measured_bytes=f.measured_bytes or 0,
        load_seconds=f.load_seconds or 0.0, quality=f.quality,
        max_batch=-1 if f.max_batch is None else f.max_batch, reason=f.reason,
        latency_ms=f.latency_ms or 0.0)


def recommend_pb(r: Any) -> models_pb2.RecommendResponse:
    resp = models_pb2.RecommendResponse(name=r.name, fits=[variant_fit_pb(f) for f in r.fits],
                                        reason=r.reason)
    if r.choice is not None:
        resp.choice.CopyFrom(variant_fit_pb(r.choice))
    return resp


def variant_report_pb(report: Any, model: Any | None,
                      message: str) -> models_pb2.MakeVariantProgress:
    return models_pb2.MakeVariantProgress(
        stage="done" if model is not None else "refused", installed=model is not None,
        size_bytes=report.size_bytes, source_bytes=report.source_bytes, seconds=report.seconds,
        changes=[models_pb2.OutputChange(
            output=d.output, max_abs=d.max_abs, mean_abs=d.mean_abs, max_rel=d.max_rel,
            argmax_agreement=-1.0 if d.argmax_agreement is None else d.argmax_agreement)
            for d in report.diffs],
        worst_change=report.worst_rel, message=message,
        model=model_pb(model, None) if model is not None else None)


def model_pb(entry: Any, loaded: LoadedView | None) -> models_pb2.Model:
    return model_view_pb(model_view(entry, loaded))


def model_view_pb(v: ModelView) -> models_pb2.Model:
    m = models_pb2.Model(name=v.name, active_version=v.active_version,
                         tier=TIER_TO_PB.get(v.tier, models_pb2.TIER_UNSPECIFIED),
                         state=STATE_TO_PB[v.state],
                         versions=[_version_pb(x) for x in v.versions])
    if v.loaded is not None:
        m.loaded.CopyFrom(loaded_pb(v.loaded))
    return m


def install_pb(result: Any) -> models_pb2.InstallResponse:
    return models_pb2.InstallResponse(
        model=model_pb(result.entry, None), version=result.version, sha256=result.sha256,
        size_bytes=result.size_bytes, seconds=result.seconds)


DECISION_TO_PB = {"admit": models_pb2.DECISION_ADMIT,
                  "admit_after_evicting": models_pb2.DECISION_ADMIT_AFTER_EVICTING,
                  "reject": models_pb2.DECISION_REJECT}


def check_pb(view: Any) -> models_pb2.CheckResponse:
    from edged.v1 import errors_pb2

    n = view.numbers
    return models_pb2.CheckResponse(
        decision=DECISION_TO_PB[view.decision], evict=list(view.evict), reason=view.reason,
        estimated_bytes=view.estimated_bytes,
        numbers=errors_pb2.CapacityRejection(
            tier=n.tier, needed_bytes=n.needed_bytes, budget_bytes=n.budget_bytes,
            used_bytes=n.used_bytes, free_bytes=max(0, n.free_bytes),
            reserve_bytes=n.reserve_bytes, evict_candidates=list(n.evict_candidates)))


def select_pb(sel: Any) -> models_pb2.SelectResponse:
    resp = models_pb2.SelectResponse(reasons=list(sel.reasons), mode=sel.mode)
    scores = dict(sel.scores)
    if sel.choice is not None:
        resp.choice.CopyFrom(models_pb2.SelectCandidate(
            name=sel.choice.name, version=sel.choice.version,
            reason="; ".join(sel.reasons[:1]) if sel.reasons else "best match",
            score=scores.get(sel.choice.key, 0.0)))
    for cand, why in sel.runners_up:
        resp.runners_up.add(name=cand.name, version=cand.version, reason=why,
                            score=scores.get(cand.key, 0.0))
    return resp
