"""The daemon's answers (protos) → the views of ``edged.views``: the one place in the client
that reads generated message types, so that callers (the CLI, scripts, the contract suite) see
the same types the manager hands to the service layer.

What the wire leaves out comes back as the manager's "unknown": a GPU number sent as 0 (or a
load of -1) is None, an empty L4T release is None. The snapshot's ``taken_at`` does not
travel: it is 0.0 here. A ``LoadedView``'s ``evicting`` does not travel either (False).
"""

from __future__ import annotations

from edged.errors import CapacityNumbers
from edged.telemetry.snapshot import DeviceInfo, GpuInfo, MemoryInfo, Snapshot, frozen_map
from edged.v1 import errors_pb2, system_pb2
from edged.v1 import models_pb2 as mpb
from edged.views import (
    CandidateView,
    CheckView,
    EventView,
    FitView,
    InstallView,
    LoadedView,
    LoadView,
    ModelView,
    OutputChangeView,
    RecommendView,
    ReloadView,
    SelectView,
    SignatureView,
    StatusView,
    StoreUsage,
    TensorView,
    TierUsage,
    VariantJobView,
    VariantView,
    VersionView,
)

TIER_NAMES: dict[int, str] = {mpb.TIER_RAM: "ram", mpb.TIER_SWAP: "swap",
                              mpb.TIER_STORAGE: "storage"}
STATE_NAMES: dict[int, str] = {mpb.LOAD_STATE_UNLOADED: "unloaded",
                               mpb.LOAD_STATE_LOADING: "loading",
                               mpb.LOAD_STATE_READY: "ready",
                               mpb.LOAD_STATE_UNLOADING: "unloading",
                               mpb.LOAD_STATE_FAILED: "failed"}
FORMAT_NAMES: dict[int, str] = {mpb.MODEL_FORMAT_ONNX: "onnx",
                                mpb.MODEL_FORMAT_TENSORRT: "tensorrt"}
DECISION_NAMES: dict[int, str] = {mpb.DECISION_ADMIT: "admit",
                                  mpb.DECISION_ADMIT_AFTER_EVICTING: "admit_after_evicting",
                                  mpb.DECISION_REJECT: "reject"}


def loaded(x: mpb.LoadedModel) -> LoadedView:
    return LoadedView(
        name=x.name, version=x.version, tier=TIER_NAMES.get(x.tier, ""),
        state=STATE_NAMES.get(x.state, ""), footprint_bytes=x.footprint_bytes,
        in_flight=x.in_flight, requests=x.requests, worker_pid=x.worker_pid,
        loaded_at=x.loaded_at, last_used=x.last_used, providers=tuple(x.providers),
        preloaded=x.preloaded, variant=x.variant, variant_reason=x.variant_reason,
        lanes=x.lanes)


def status(s: system_pb2.StatusResponse) -> StatusView:
    dev, mem = s.device, s.memory
    snapshot = Snapshot(
        taken_at=0.0,
        memory=MemoryInfo(total_bytes=mem.total_bytes, available_bytes=mem.available_bytes,
                          swap_total_bytes=mem.swap_total_bytes,
                          swap_free_bytes=mem.swap_free_bytes,
                          nvmap_used_bytes=mem.nvmap_used_bytes or None,
                          simulated=mem.simulated),
        device=DeviceInfo(kind=dev.kind, model=dev.model, l4t_release=dev.l4t_release or None,
                          jetpack=dev.jetpack or None, cpu_model=dev.cpu_model,
                          cpu_count=dev.cpu_count, gpus=tuple(_gpu(g) for g in dev.gpus),
                          temperatures_c=frozen_map(dev.temperatures_c),
                          power_mw=frozen_map(dev.power_mw)),
        cpu_percent=dev.cpu_percent, process_rss_bytes=mem.daemon_rss_bytes,
        sources=tuple(s.telemetry_sources), errors=tuple(s.telemetry_errors))
    fc, gb, st = s.fixed_costs, s.gpu_budget, s.store
    return StatusView(
        version=s.version, uptime_s=s.uptime_s, state=s.state, state_dir=s.state_dir,
        snapshot=snapshot, reserve_bytes=mem.reserve_bytes,
        tiers=tuple(TierUsage(tier=TIER_NAMES.get(t.tier, ""), budget_bytes=t.budget_bytes,
                              used_bytes=t.used_bytes, models=t.models, loaded=t.loaded)
                    for t in s.tiers),
        loaded=tuple(loaded(x) for x in s.loaded), models_installed=s.models_installed,
        manifest_error=s.manifest_error, notes=tuple(s.notes),
        store=StoreUsage(installed_bytes=st.installed_bytes, budget_bytes=st.budget_bytes,
                         unreferenced_artifacts=st.unreferenced_artifacts,
                         unreferenced_bytes=st.unreferenced_bytes)
        if s.HasField("store") else None,
        fixed_costs={"device": fc.device, "worker_bytes": fc.worker_bytes,
                     "gpu_context_bytes": fc.gpu_context_bytes, "source": fc.source,
                     "measured_at": fc.measured_at,
                     "gpu_context_override": fc.gpu_context_override}
        if s.HasField("fixed_costs") else None,
        gpu_budget=(gb.budget_bytes, gb.used_bytes, gb.device_total_bytes)
        if s.HasField("gpu_budget") else None)


def _gpu(g: system_pb2.GpuStatus) -> GpuInfo:
    return GpuInfo(name=g.name, load_percent=None if g.load_percent < 0 else g.load_percent,
                   freq_hz=g.freq_hz or None, memory_total_bytes=g.memory_total_bytes or None,
                   memory_used_bytes=g.memory_used_bytes or None, source=g.source)


def _signature(sig: mpb.Signature) -> SignatureView:
    return SignatureView(
        inputs=tuple(TensorView(t.name, t.datatype, tuple(t.shape)) for t in sig.inputs),
        outputs=tuple(TensorView(t.name, t.datatype, tuple(t.shape)) for t in sig.outputs))


def _variant(x: mpb.Variant) -> VariantView:
    return VariantView(
        name=x.name, sha256=x.sha256, size_bytes=x.size_bytes,
        format=FORMAT_NAMES.get(x.format, ""), precision=x.precision, quality=x.quality,
        notes=x.notes, estimated_bytes=x.estimated_bytes, measured_bytes=x.measured_bytes,
        load_seconds=x.load_seconds, installed_at=x.installed_at)


def _version(v: mpb.ModelVersion) -> VersionView:
    return VersionView(
        version=v.version, sha256=v.sha256, size_bytes=v.size_bytes,
        format=FORMAT_NAMES.get(v.format, ""), tier=TIER_NAMES.get(v.tier, ""),
        active=v.active, tasks=tuple(v.tasks), quality=v.quality,
        providers=tuple(v.providers), precision=v.precision, notes=v.notes,
        signature=_signature(v.signature), estimated_bytes=v.estimated_bytes,
        measured_bytes=v.measured_bytes, load_seconds=v.load_seconds,
        installed_at=v.installed_at, engine_info=dict(v.engine_info),
        warmup_shapes=dict(v.warmup_shapes), group=v.group, inherited=tuple(v.inherited),
        inherited_from=v.inherited_from, variants=tuple(_variant(x) for x in v.variants),
        serve=v.serve)


def model(m: mpb.Model) -> ModelView:
    return ModelView(
        name=m.name, active_version=m.active_version, tier=TIER_NAMES.get(m.tier, ""),
        versions=tuple(_version(v) for v in m.versions), state=STATE_NAMES.get(m.state, ""),
        loaded=loaded(m.loaded) if m.HasField("loaded") else None)


def install(r: mpb.InstallResponse) -> InstallView:
    return InstallView(model=model(r.model), version=r.version, sha256=r.sha256,
                       size_bytes=r.size_bytes, seconds=r.seconds)


def load(r: mpb.LoadResponse) -> LoadView:
    return LoadView(model=loaded(r.model), evicted=tuple(r.evicted), seconds=r.seconds)


def numbers(n: errors_pb2.CapacityRejection) -> CapacityNumbers:
    return CapacityNumbers(n.tier, n.needed_bytes, n.budget_bytes, n.used_bytes,
                           n.free_bytes, n.reserve_bytes, tuple(n.evict_candidates))


def check(r: mpb.CheckResponse) -> CheckView:
    """The wire clamps ``free_bytes`` at 0 (a uint64); the manager's view may be negative."""
    return CheckView(decision=DECISION_NAMES.get(r.decision, ""), evict=tuple(r.evict),
                     numbers=numbers(r.numbers), reason=r.reason,
                     estimated_bytes=r.estimated_bytes)


def _candidate(c: mpb.SelectCandidate) -> CandidateView:
    return CandidateView(name=c.name, version=c.version, reason=c.reason, score=c.score)


def select(r: mpb.SelectResponse) -> SelectView:
    return SelectView(choice=_candidate(r.choice) if r.HasField("choice") else None,
                      reasons=tuple(r.reasons),
                      runners_up=tuple(_candidate(c) for c in r.runners_up), mode=r.mode)


def _fit(f: mpb.VariantFit) -> FitView:
    return FitView(variant=f.variant, tier=TIER_NAMES.get(f.tier, ""), decision=f.decision,
                   evict=tuple(f.evict), estimated_bytes=f.estimated_bytes,
                   measured_bytes=f.measured_bytes, load_seconds=f.load_seconds,
                   quality=f.quality, max_batch=f.max_batch, reason=f.reason,
                   latency_ms=f.latency_ms)


def recommend(r: mpb.RecommendResponse) -> RecommendView:
    return RecommendView(name=r.name, fits=tuple(_fit(f) for f in r.fits),
                         choice=_fit(r.choice) if r.HasField("choice") else None,
                         reason=r.reason)


def variant_job(p: mpb.MakeVariantProgress) -> VariantJobView:
    return VariantJobView(
        stage=p.stage, installed=p.installed, size_bytes=p.size_bytes,
        source_bytes=p.source_bytes, seconds=p.seconds,
        changes=tuple(OutputChangeView(output=c.output, max_abs=c.max_abs,
                                       mean_abs=c.mean_abs, max_rel=c.max_rel,
                                       argmax_agreement=c.argmax_agreement)
                      for c in p.changes),
        worst_change=p.worst_change, model=model(p.model) if p.HasField("model") else None,
        message=p.message)


def event(ev: system_pb2.Event) -> EventView:
    return EventView(seq=ev.seq, time=ev.time, kind=ev.kind, model=ev.model,
                     version=ev.version, message=ev.message, details=dict(ev.details))


def reload(r: system_pb2.ReloadResponse) -> ReloadView:
    return ReloadView(ok=r.ok, error=r.error, models=r.models)
