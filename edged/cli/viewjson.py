"""The views of ``edged.views`` → the JSON documents ``edgectl --json`` prints.

The views carry the wire's field names (``edged.v1``), so a document is mostly the view's
fields as they are: integers as integers, tuples as lists. What is not, is said here, so that
scripts written against ``--json`` when the CLI printed the protos keep working: tiers, states
and formats are names where the CLI always named them and numbers where it printed the raw
message (a variant's ``format``; the model inside ``variant make --json``); a status's device
and memory come from its telemetry snapshot; a message the daemon did not set (a select without
a choice, a status without a GPU budget) is left out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from edged.views import (
    CheckView,
    EventView,
    LoadedView,
    ModelView,
    RecommendView,
    SelectView,
    StatusView,
    VariantJobView,
    VersionView,
)

# The wire's enum numbers (edged/v1/models.proto), for the documents that always carried them.
TIER_NUMBERS = {"": 0, "ram": 1, "swap": 2, "storage": 3}
STATE_NUMBERS = {"": 0, "unloaded": 1, "loading": 2, "ready": 3, "unloading": 4, "failed": 5}
FORMAT_NUMBERS = {"": 0, "onnx": 1, "tensorrt": 2}


def plain(view: Any, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A view's fields, nested views as dicts, tuples as lists; None (an unset message) left
    out. ``skip``: fields that do not travel."""
    return {f.name: _value(v) for f in dataclasses.fields(view)
            if f.name not in skip and (v := getattr(view, f.name)) is not None}


def _value(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return plain(v)
    if isinstance(v, tuple | list):
        return [_value(x) for x in v]
    if isinstance(v, Mapping):
        return dict(v)
    return v


def loaded_dict(x: LoadedView, *, numbers: bool = False) -> dict[str, Any]:
    d = plain(x, skip=("evicting",))  # a daemon-side state of a victim, not on the wire
    if numbers:
        d.update(tier=TIER_NUMBERS[x.tier], state=STATE_NUMBERS[x.state])
    return d


def status_dict(s: StatusView) -> dict[str, Any]:
    snap = s.snapshot
    dev, mem = snap.device, snap.memory
    d: dict[str, Any] = {
        "version": s.version, "uptime_s": s.uptime_s,
        "device": {
            **plain(dev, skip=("gpus",)), "l4t_release": dev.l4t_release or "",
            "jetpack": dev.jetpack or "",
            "gpus": [{**plain(g), "load_percent": -1.0 if g.load_percent is None
                      else g.load_percent, "freq_hz": g.freq_hz or 0,
                      "memory_total_bytes": g.memory_total_bytes or 0,
                      "memory_used_bytes": g.memory_used_bytes or 0} for g in dev.gpus],
            "cpu_percent": snap.cpu_percent},
        "memory": {**plain(mem), "nvmap_used_bytes": mem.nvmap_used_bytes or 0,
                   "reserve_bytes": s.reserve_bytes, "daemon_rss_bytes": snap.process_rss_bytes},
        "tiers": {t.tier: plain(t, skip=("tier",)) for t in s.tiers},
        "loaded": [loaded_dict(x) for x in s.loaded],
        "telemetry_sources": list(snap.sources), "telemetry_errors": list(snap.errors),
        "state": s.state, "manifest_error": s.manifest_error, "state_dir": s.state_dir,
        "models_installed": s.models_installed, "notes": list(s.notes),
    }
    if s.fixed_costs is not None:
        d["fixed_costs"] = dict(s.fixed_costs)
    if s.gpu_budget is not None:
        d["gpu_budget"] = dict(zip(("budget_bytes", "used_bytes", "device_total_bytes"),
                                   s.gpu_budget, strict=True))
    if s.store is not None:
        d["store"] = plain(s.store)
    return d


def version_dict(v: VersionView, *, numbers: bool = False) -> dict[str, Any]:
    d = plain(v)
    for x in d["variants"]:
        x["format"] = FORMAT_NUMBERS[x["format"]]  # always a number in the variants
    if numbers:
        d.update(format=FORMAT_NUMBERS[v.format], tier=TIER_NUMBERS[v.tier])
    return d


def model_dict(m: ModelView) -> dict[str, Any]:
    return {"name": m.name, "active_version": m.active_version, "tier": m.tier,
            "state": m.state, "versions": [version_dict(v) for v in m.versions],
            "loaded": loaded_dict(m.loaded) if m.loaded is not None else None}


def model_numbers(m: ModelView) -> dict[str, Any]:
    """A model as the raw message printed it: enums by number, ``loaded`` left out when not
    loaded (the model inside ``variant make --json``)."""
    d: dict[str, Any] = {"name": m.name, "active_version": m.active_version,
                         "tier": TIER_NUMBERS[m.tier], "state": STATE_NUMBERS[m.state],
                         "versions": [version_dict(v, numbers=True) for v in m.versions]}
    if m.loaded is not None:
        d["loaded"] = loaded_dict(m.loaded, numbers=True)
    return d


def check_dict(r: CheckView) -> dict[str, Any]:
    return plain(r)


def select_dict(r: SelectView) -> dict[str, Any]:
    return plain(r)


def recommend_dict(r: RecommendView) -> dict[str, Any]:
    return plain(r)


def variant_job_dict(j: VariantJobView) -> dict[str, Any]:
    d = plain(j, skip=("model",))
    if j.model is not None:
        d["model"] = model_numbers(j.model)
    return d


def event_dict(ev: EventView) -> dict[str, Any]:
    return plain(ev)
