"""Protos → plain JSON-ready dicts with integers as integers and tiers by name.

``MessageToDict`` writes 64-bit integers as strings and enums as their long names; scripts want
``"used_bytes": 123`` and ``"tier": "swap"``, so the CLI's JSON is shaped here.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from edged.v1 import models_pb2 as mpb
from edged.v1 import system_pb2

TIER_NAMES = {mpb.TIER_RAM: "ram", mpb.TIER_SWAP: "swap", mpb.TIER_STORAGE: "storage",
              mpb.TIER_UNSPECIFIED: ""}
STATE_NAMES = {v: mpb.LoadState.Name(v).removeprefix("LOAD_STATE_").lower()
               for v in mpb.LoadState.values()}
FORMAT_NAMES = {mpb.MODEL_FORMAT_ONNX: "onnx", mpb.MODEL_FORMAT_TENSORRT: "tensorrt",
                mpb.MODEL_FORMAT_UNSPECIFIED: ""}
DECISIONS = {v: mpb.Decision.Name(v).removeprefix("DECISION_").lower()
             for v in mpb.Decision.values()}


def plain(msg: Any) -> dict[str, Any]:
    """Generic: field names as in the proto, ints as ints, enums as numbers."""
    d: dict[str, Any] = MessageToDict(msg, preserving_proto_field_name=True,
                                      always_print_fields_with_no_presence=True,
                                      use_integers_for_enums=True)
    return _ints(d, msg)


def _ints(d: Any, msg: Any) -> Any:
    if isinstance(d, dict) and hasattr(msg, "DESCRIPTOR"):
        for f in msg.DESCRIPTOR.fields:
            if f.name not in d:
                continue
            value = getattr(msg, f.name)
            if f.message_type is not None and f.message_type.GetOptions().map_entry:
                vf = f.message_type.fields_by_name["value"]
                if vf.message_type is None:
                    d[f.name] = dict(value)
                continue
            if f.message_type is not None:
                if f.label == f.LABEL_REPEATED:
                    d[f.name] = [_ints(x, m) for x, m in zip(d[f.name], value, strict=True)]
                else:
                    d[f.name] = _ints(d[f.name], value)
            elif f.label == f.LABEL_REPEATED:
                d[f.name] = list(value)
            else:
                d[f.name] = value
    return d


def loaded_dict(x: mpb.LoadedModel) -> dict[str, Any]:
    d = plain(x)
    d["tier"] = TIER_NAMES.get(x.tier, "")
    d["state"] = STATE_NAMES.get(x.state, "")
    return d


def status_dict(st: system_pb2.StatusResponse) -> dict[str, Any]:
    d = plain(st)
    d["tiers"] = {TIER_NAMES[t.tier]: {"budget_bytes": t.budget_bytes, "used_bytes": t.used_bytes,
                                       "models": t.models, "loaded": t.loaded} for t in st.tiers}
    d["loaded"] = [loaded_dict(x) for x in st.loaded]
    return d


def version_dict(v: mpb.ModelVersion) -> dict[str, Any]:
    d = plain(v)
    d["tier"] = TIER_NAMES.get(v.tier, "")
    d["format"] = FORMAT_NAMES.get(v.format, "")
    return d


def model_dict(m: mpb.Model) -> dict[str, Any]:
    return {
        "name": m.name,
        "active_version": m.active_version,
        "tier": TIER_NAMES.get(m.tier, ""),
        "state": STATE_NAMES.get(m.state, ""),
        "versions": [version_dict(v) for v in m.versions],
        "loaded": loaded_dict(m.loaded) if m.HasField("loaded") else None,
    }


def event_dict(ev: system_pb2.Event) -> dict[str, Any]:
    return plain(ev)
