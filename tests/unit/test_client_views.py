"""The client's views and the CLI's JSON, checked against the wire.

1. A manager-side view sent through the service layer's converter (``edged.service.messages``)
   and read back by the client's (``edged.client.convert``) is the same view: the client returns
   the manager's types, with the manager's values.
2. ``edgectl --json`` prints what it printed when it rendered the protos itself: the old
   renderer (``MessageToDict`` plus the CLI's fix-ups, kept below as the reference) and the new
   one (``edged.cli.viewjson``, from the views) give the same JSON, compared as text with sorted
   keys so that ``1`` and ``1.0`` differ, on fully populated messages and on sparse ones.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from edged.cli import viewjson
from edged.client import convert
from edged.engines.base import Signature, TensorSpec
from edged.errors import CapacityNumbers
from edged.manager.catalog.tier_yaml import ModelEntry, VersionEntry
from edged.service import messages
from edged.telemetry.snapshot import DeviceInfo, GpuInfo, MemoryInfo, Snapshot, frozen_map
from edged.v1 import errors_pb2, system_pb2
from edged.v1 import models_pb2 as mpb
from edged.views import CheckView, LoadedView, StatusView, StoreUsage, TierUsage


# -- 1. manager view -> proto -> client view ---------------------------------------------------
def _loaded(name: str = "det", **kw: Any) -> LoadedView:
    base: dict[str, Any] = dict(name=name, version=3, tier="swap", state="ready",
                                footprint_bytes=123 << 20, in_flight=2, requests=41,
                                worker_pid=4242, loaded_at=1700000000.25,
                                last_used=1700000100.5, providers=("CPUExecutionProvider",),
                                preloaded=True, variant="int8", variant_reason="fits",
                                lanes=2)
    base.update(kw)
    return LoadedView(**base)


def _status(**kw: Any) -> StatusView:
    snap = Snapshot(
        taken_at=0.0,
        memory=MemoryInfo(8 << 30, 5 << 30, 2 << 30, 1 << 30, 300 << 20, True),
        device=DeviceInfo("jetson", "Orin Nano", "36.3.0", "6.0", "ARMv8", 6,
                          (GpuInfo("ga10b", 12.5, 624750000, None, None, "sysfs"),
                           GpuInfo("other", None, None, 8 << 30, 1 << 30, "nvml")),
                          frozen_map({"cpu": 48.5}), frozen_map({"VDD_IN": 4200.0})),
        cpu_percent=17.25, process_rss_bytes=55 << 20, sources=("procfs", "sysfs"),
        errors=("jtop: not installed",))
    base: dict[str, Any] = dict(
        version="1.2.3", uptime_s=12.5, state="serving", state_dir="/var/lib/edged",
        snapshot=snap, reserve_bytes=512 << 20,
        tiers=(TierUsage("ram", 1 << 30, 10, 1, 1), TierUsage("swap", 2 << 30, 20, 2, 1),
               TierUsage("storage", 4 << 30, 30, 3, 0)),
        loaded=(_loaded(), _loaded("rec", tier="ram", variant="", variant_reason="")),
        models_installed=6, manifest_error="swap.yaml line 3: bad", notes=("a note",),
        store=StoreUsage(7 << 20, 4 << 30, 1, 99),
        fixed_costs={"device": "cpu onnxruntime 1.20", "worker_bytes": 40 << 20,
                     "gpu_context_bytes": 0, "source": "first load", "measured_at": 1.5,
                     "gpu_context_override": False},
        gpu_budget=(3 << 30, 1 << 30, 16 << 30))
    base.update(kw)
    return StatusView(**base)


@pytest.mark.parametrize("view", [
    _status(),
    _status(manifest_error="", notes=(), store=None, fixed_costs=None, gpu_budget=None,
            loaded=()),
], ids=["full", "sparse"])
def test_the_status_the_client_reads_is_the_managers(view: StatusView) -> None:
    assert convert.status(messages.status_pb(view)) == view


def test_a_loaded_model_the_client_reads_is_the_managers() -> None:
    view = _loaded()
    assert convert.loaded(messages.loaded_pb(view)) == view
    evicting = _loaded(evicting=True)  # the one field that does not travel
    assert convert.loaded(messages.loaded_pb(evicting)) == dataclasses.replace(
        evicting, evicting=False)


def _entries() -> list[ModelEntry]:
    sig = Signature((TensorSpec("x", "FP32", (-1, 3, 64, 64)),), (TensorSpec("y", "INT64", (-1,)),))
    v1 = VersionEntry(sha256="a" * 64, size_bytes=10)
    v2 = VersionEntry(
        sha256="b" * 64, size_bytes=20, format="tensorrt", tasks=("t",), quality=0.5,
        providers=("CPUExecutionProvider",), precision="fp16", notes="n", signature=sig,
        estimated_bytes=30, measured_bytes=28, load_seconds=0.5, installed_at="2026-01-01",
        warmup_shapes={"x": (1, 3, 64, 64)}, group="g", engine_info={"gpu": "Orin"},
        variants={"int8": VersionEntry(sha256="c" * 64, size_bytes=5, precision="int8",
                                       quality=0.4, notes="made"),
                  "bare": VersionEntry(sha256="d" * 64, size_bytes=6, precision="")},
        serve="int8", inherited=("tasks",), inherited_from=1)
    v3 = VersionEntry(sha256="e" * 64, size_bytes=7, quality=1, precision="", group=None)
    return [ModelEntry("m", "swap", 2, {1: v1, 2: v2, 3: v3}), ModelEntry("m", "ram", 3, {3: v3})]


@pytest.mark.parametrize("loaded", [None, _loaded("m"), _loaded("m", state="loading")])
def test_a_model_the_client_reads_is_the_services_view(loaded: LoadedView | None) -> None:
    for entry in _entries():
        view = messages.model_view(entry, loaded)
        assert convert.model(messages.model_pb(entry, loaded)) == view
        assert view.state == (loaded.state if loaded else "unloaded")
        assert [v.tier for v in view.versions if not v.active] == ["storage"] * (
            len(view.versions) - 1)


@pytest.mark.parametrize("decision", ["admit", "admit_after_evicting", "reject"])
def test_a_check_the_client_reads_is_the_managers(decision: str) -> None:
    view = CheckView(decision=decision, evict=("a", "b"),
                     numbers=CapacityNumbers("swap", 100, 90, 80, 10, 5, ("a", "b")),
                     reason="why", estimated_bytes=100)
    assert convert.check(messages.check_pb(view)) == view


# -- 2. the CLI's JSON: the old renderer of the protos, kept as the reference --------------------
OLD_TIERS = {mpb.TIER_RAM: "ram", mpb.TIER_SWAP: "swap", mpb.TIER_STORAGE: "storage",
             mpb.TIER_UNSPECIFIED: ""}
OLD_STATES = {v: mpb.LoadState.Name(v).removeprefix("LOAD_STATE_").lower()
              for v in mpb.LoadState.values()}
OLD_FORMATS = {mpb.MODEL_FORMAT_ONNX: "onnx", mpb.MODEL_FORMAT_TENSORRT: "tensorrt",
               mpb.MODEL_FORMAT_UNSPECIFIED: ""}
OLD_DECISIONS = {v: mpb.Decision.Name(v).removeprefix("DECISION_").lower()
                 for v in mpb.Decision.values()}


def old_plain(msg: Any) -> dict[str, Any]:
    d: dict[str, Any] = MessageToDict(msg, preserving_proto_field_name=True,
                                      always_print_fields_with_no_presence=True,
                                      use_integers_for_enums=True)
    return _old_ints(d, msg)


def _old_ints(d: Any, msg: Any) -> Any:
    if isinstance(d, dict) and hasattr(msg, "DESCRIPTOR"):
        for f in msg.DESCRIPTOR.fields:
            if f.name not in d:
                continue
            value = getattr(msg, f.name)
            if f.message_type is not None and f.message_type.GetOptions().map_entry:
                if f.message_type.fields_by_name["value"].message_type is None:
                    d[f.name] = dict(value)
                continue
            if f.message_type is not None:
                if f.is_repeated:
                    d[f.name] = [_old_ints(x, m) for x, m in zip(d[f.name], value, strict=True)]
                else:
                    d[f.name] = _old_ints(d[f.name], value)
            elif f.is_repeated:
                d[f.name] = list(value)
            else:
                d[f.name] = value
    return d


def old_loaded(x: mpb.LoadedModel) -> dict[str, Any]:
    d = old_plain(x)
    d["tier"], d["state"] = OLD_TIERS.get(x.tier, ""), OLD_STATES.get(x.state, "")
    return d


def old_status(st: system_pb2.StatusResponse) -> dict[str, Any]:
    d = old_plain(st)
    d["tiers"] = {OLD_TIERS[t.tier]: {"budget_bytes": t.budget_bytes, "used_bytes": t.used_bytes,
                                      "models": t.models, "loaded": t.loaded} for t in st.tiers}
    d["loaded"] = [old_loaded(x) for x in st.loaded]
    return d


def old_model(m: mpb.Model) -> dict[str, Any]:
    def version(v: mpb.ModelVersion) -> dict[str, Any]:
        d = old_plain(v)
        d["tier"], d["format"] = OLD_TIERS.get(v.tier, ""), OLD_FORMATS.get(v.format, "")
        return d

    return {"name": m.name, "active_version": m.active_version,
            "tier": OLD_TIERS.get(m.tier, ""), "state": OLD_STATES.get(m.state, ""),
            "versions": [version(v) for v in m.versions],
            "loaded": old_loaded(m.loaded) if m.HasField("loaded") else None}


def same_json(new: Any, old: Any) -> None:
    assert json.dumps(new, sort_keys=True, indent=1) == json.dumps(old, sort_keys=True, indent=1)


def _model_pb(loaded: bool = True) -> mpb.Model:
    sig = mpb.Signature(inputs=[mpb.TensorSpec(name="x", datatype="FP32", shape=[-1, 3, 64, 64])],
                        outputs=[mpb.TensorSpec(name="y", datatype="INT64", shape=[-1])])
    v1 = mpb.ModelVersion(version=1, sha256="a" * 64, size_bytes=1000,
                          format=mpb.MODEL_FORMAT_ONNX, tier=mpb.TIER_STORAGE,
                          signature=mpb.Signature())
    v2 = mpb.ModelVersion(
        version=2, sha256="b" * 64, size_bytes=2000, format=mpb.MODEL_FORMAT_TENSORRT,
        tier=mpb.TIER_SWAP, active=True, tasks=["ocr.detect"], quality=0.5,
        providers=["CUDAExecutionProvider"], precision="fp16", notes="n", signature=sig,
        estimated_bytes=3000, measured_bytes=2900, load_seconds=0.75,
        installed_at="2026-01-01T00:00:00Z", engine_info={"gpu": "Orin"},
        warmup_shapes={"x": "1x3x64x64"}, group="g", inherited=["tasks"], inherited_from=1,
        variants=[mpb.Variant(name="int8", sha256="c" * 64, size_bytes=500,
                              format=mpb.MODEL_FORMAT_ONNX, precision="int8", quality=0.25,
                              notes="made", estimated_bytes=600, measured_bytes=0,
                              load_seconds=0.0, installed_at="2026-01-02T00:00:00Z"),
                  mpb.Variant(name="bare")],
        serve="int8")
    m = mpb.Model(name="det", active_version=2, tier=mpb.TIER_SWAP, versions=[v1, v2],
                  state=mpb.LOAD_STATE_READY if loaded else mpb.LOAD_STATE_UNLOADED)
    if loaded:
        m.loaded.CopyFrom(messages.loaded_pb(_loaded()))
    return m


@pytest.mark.parametrize("view", [_status(), _status(
    manifest_error="", notes=(), store=None, fixed_costs=None, gpu_budget=None, loaded=(),
    snapshot=dataclasses.replace(_status().snapshot, errors=(), device=DeviceInfo(
        "cpu", "", None, None, "x86", 2, (), frozen_map({}), frozen_map({}))))],
    ids=["full", "sparse"])
def test_status_json_is_unchanged(view: StatusView) -> None:
    pb = messages.status_pb(view)
    same_json(viewjson.status_dict(convert.status(pb)), old_status(pb))


@pytest.mark.parametrize("loaded", [True, False])
def test_model_json_is_unchanged(loaded: bool) -> None:
    pb = _model_pb(loaded)
    same_json(viewjson.model_dict(convert.model(pb)), old_model(pb))


def test_load_check_select_json_is_unchanged() -> None:
    load = mpb.LoadResponse(model=messages.loaded_pb(_loaded()), evicted=["a"], seconds=1.5)
    r = convert.load(load)
    same_json({"model": viewjson.loaded_dict(r.model), "evicted": list(r.evicted),
               "seconds": r.seconds},
              {"model": old_loaded(load.model), "evicted": list(load.evicted),
               "seconds": load.seconds})
    check = mpb.CheckResponse(decision=mpb.DECISION_ADMIT_AFTER_EVICTING, evict=["a"],
                              numbers=errors_pb2.CapacityRejection(
                                  tier="swap", needed_bytes=5, budget_bytes=4, used_bytes=3,
                                  free_bytes=1, reserve_bytes=2, evict_candidates=["a"]),
                              reason="r", estimated_bytes=5)
    old = old_plain(check)
    old["decision"] = OLD_DECISIONS[check.decision]
    same_json(viewjson.check_dict(convert.check(check)), old)
    for sel in (mpb.SelectResponse(reasons=["nothing"], mode="auto"),
                mpb.SelectResponse(
                    choice=mpb.SelectCandidate(name="a", version=2, reason="best", score=0.5),
                    reasons=["best"], mode="hybrid",
                    runners_up=[mpb.SelectCandidate(name="b", version=1, reason="slower")])):
        same_json(viewjson.select_dict(convert.select(sel)), old_plain(sel))


def test_variant_and_event_json_is_unchanged() -> None:
    fit = mpb.VariantFit(variant="int8", tier=mpb.TIER_SWAP, decision="admit", evict=["x"],
                         estimated_bytes=10, measured_bytes=9, load_seconds=0.5, quality=0.7,
                         max_batch=-1, reason="fits", latency_ms=1.25)
    for rec in (mpb.RecommendResponse(name="det", fits=[fit], choice=fit, reason="int8"),
                mpb.RecommendResponse(name="det", reason="nothing fits")):
        old = old_plain(rec)
        for f in [*old.get("fits", []), *([old["choice"]] if old.get("choice") else [])]:
            f["tier"] = OLD_TIERS.get(f["tier"], "")
        same_json(viewjson.recommend_dict(convert.recommend(rec)), old)
    for model in (_model_pb(True), _model_pb(False), None):
        job = mpb.MakeVariantProgress(
            stage="done" if model else "refused", installed=model is not None,
            size_bytes=5, source_bytes=10, seconds=2.5, worst_change=0.01,
            changes=[mpb.OutputChange(output="y", max_abs=0.1, mean_abs=0.01, max_rel=0.02,
                                      argmax_agreement=-1.0)],
            model=model, message="" if model else "too far")
        same_json(viewjson.variant_job_dict(convert.variant_job(job)), old_plain(job))
    ev = system_pb2.Event(seq=7, time=1700000000.5, kind="load", model="det", version=2,
                          message="loaded", details={"footprint_bytes": "123"})
    same_json(viewjson.event_dict(convert.event(ev)), old_plain(ev))
    same_json(viewjson.event_dict(convert.event(system_pb2.Event())),
              old_plain(system_pb2.Event()))
