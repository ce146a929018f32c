"""The tier manifests' schema: version/model entries, their YAML text, and its validation.

``parse`` reads the three files into a ``TierState`` and names the file, line and key of the
first problem (``ManifestError``), because operators edit these files by hand; ``render`` writes
a state back. Kept apart from ``manifests`` (the atomic generations on disk) so each reads on
its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from edged import errors as e
from edged.engines.base import Signature, TensorSpec
from edged.manager.catalog.names import is_valid_name
from edged.manager.catalog.store import is_sha256

TIERS = ("ram", "swap", "storage")
SCHEMA = 1
VARIANT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,30}")
# (model, version, artifact id) -> True when a missing artifact is tolerated (reported instead)
Tolerate = Callable[[str, int, str], bool]


class ManifestError(e.InvalidArgument):
    def __init__(self, file: str, line: int | None, key: str, reason: str) -> None:
        where = f" line {line}" if line else ""
        super().__init__(f"{file}{where}: {key}: {reason}", reason="MANIFEST_INVALID")
        self.file, self.line, self.key = file, line, key


@dataclass(frozen=True)
class VersionEntry:
    sha256: str
    size_bytes: int
    format: str = "onnx"
    tasks: tuple[str, ...] = ()
    quality: float = 0.0
    providers: tuple[str, ...] = ()
    precision: str = "fp32"
    notes: str = ""
    signature: Signature = field(default_factory=lambda: Signature((), ()))
    estimated_bytes: int = 0
    measured_bytes: int | None = None
    load_seconds: float | None = None
    installed_at: str = ""
    warmup_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    group: str | None = None
    engine_info: Mapping[str, str] = field(default_factory=dict)
    artifact: str = ""  # the store's artifact id when it differs from sha256 (external data)
    # Other forms of this version (e.g. int8, fp16 of an fp32 model), by name: each holds
    # what differs from this entry (artifact, size, precision, quality, footprint); the rest
    # (tasks, signature, warm-up shapes, providers) is the version's. The version itself is
    # the variant named by its precision. An entry without variants is one variant: state
    # directories from before variants read unchanged.
    variants: Mapping[str, VersionEntry] = field(default_factory=dict)
    serve: str = ""  # the variant pinned for serving ("": edged chooses, see manager.variants)
    # the metadata fields this version took from the version active when it was installed
    # (an install that did not say them), and that version's number: ``show`` says so
    inherited: tuple[str, ...] = ()
    inherited_from: int = 0

    @property
    def store_id(self) -> str:
        """The name of this version's directory in the store."""
        return self.artifact or self.sha256

    @property
    def variant_name(self) -> str:
        return self.precision or "fp32"

    @property
    def variant_names(self) -> tuple[str, ...]:
        return (self.variant_name, *sorted(self.variants))

    def variant(self, name: str | None) -> VersionEntry:
        """The version as it is served in variant ``name`` (None or "": this entry)."""
        if not name or name == self.variant_name:
            return self
        v = self.variants.get(name)
        if v is None:
            raise e.NotFound(f"no variant {name!r} (variants: "
                             f"{', '.join(self.variant_names)})", field="variant")
        return replace(self, **{k: getattr(v, k) for k in VARIANT_FIELDS}, variants={},
                       serve="")

    @property
    def artifacts(self) -> dict[str, int]:
        """Every artifact this version uses (its own and its variants'), with its bytes."""
        return {self.store_id: self.size_bytes,
                **{v.store_id: v.size_bytes for v in self.variants.values()}}


# What a variant holds of its own (the rest is its version's).
VARIANT_FIELDS = ("sha256", "artifact", "size_bytes", "format", "precision", "quality", "notes",
                  "estimated_bytes", "measured_bytes", "load_seconds", "installed_at")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    tier: str
    active: int
    versions: Mapping[int, VersionEntry]
    previous: int | None = None  # the version active before the last switch (for rollback)


@dataclass(frozen=True)
class TierState:
    models: Mapping[str, ModelEntry]
    generation: int = 0

    def artifacts(self) -> dict[str, int]:
        """Every artifact the manifests reference (versions and their variants), once each,
        with its bytes."""
        out: dict[str, int] = {}
        for m in self.models.values():
            for v in m.versions.values():
                out.update(v.artifacts)
        return out


# -- YAML <-> entries ------------------------------------------------------------------------
def _version_yaml(v: VersionEntry) -> dict[str, Any]:
    sig = {kind: [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                  for t in getattr(v.signature, kind)] for kind in ("inputs", "outputs")}
    ident = {"artifact": v.artifact} if v.artifact and v.artifact != v.sha256 else {}
    return {"sha256": v.sha256, **ident, "size_bytes": v.size_bytes, "format": v.format,
            "tasks": list(v.tasks), "quality": v.quality, "providers": list(v.providers),
            "precision": v.precision, "notes": v.notes, "signature": sig,
            "estimated_bytes": v.estimated_bytes, "measured_bytes": v.measured_bytes,
            "load_seconds": v.load_seconds, "installed_at": v.installed_at,
            "warmup_shapes": {k: list(s) for k, s in v.warmup_shapes.items()},
            "group": v.group, "engine_info": dict(v.engine_info),
            **({"inherited": list(v.inherited), "inherited_from": v.inherited_from}
               if v.inherited else {}),
            # written only when there are any: a manifest without variants reads as before
            **({"variants": {n: _variant_yaml(x) for n, x in sorted(v.variants.items())}}
               if v.variants else {}),
            **({"serve": v.serve} if v.serve else {})}


def _variant_yaml(v: VersionEntry) -> dict[str, Any]:
    d = {k: getattr(v, k) for k in VARIANT_FIELDS}
    if not v.artifact or v.artifact == v.sha256:
        d.pop("artifact")
    return d


def _model_docs(m: ModelEntry) -> dict[str, dict[str, Any]]:
    """A model's entry in each file it appears in: its tier's file (the active version), and
    ``storage.yaml`` for its other versions (in the same entry when its tier is storage)."""
    act = m.versions[m.active]
    entry: dict[str, Any] = {"active": m.active, "versions": {m.active: _version_yaml(act)}}
    if m.previous:
        entry["previous"] = m.previous
    docs = {m.tier: entry}
    others = {n: _version_yaml(v) for n, v in sorted(m.versions.items()) if n != m.active}
    if others:
        if m.tier == "storage":
            entry["versions"].update(others)
        else:
            docs["storage"] = {"versions": others}
    return docs


_HEADER = "# edged tier manifest: edit, then `systemctl reload edged` (SIGHUP) to apply.\n"
# libyaml's emitter when pyyaml has it (3x faster, the same text); else the pure-Python one
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_DUMPER, sort_keys=False, default_flow_style=None, width=100)


class Renderer:
    """``render`` that keeps each model's YAML between calls.

    Every commit writes all three files, but changes one model: dumping every entry again
    grew an install from ~13 ms with 10 models to ~200 ms with 200 (pyyaml's emitter is slow).
    A model's part of a file is dumped on its own, nested under ``models:`` exactly as in the
    whole document, so the joined text is the same as dumping the whole document; a part is
    reused while its ``ModelEntry`` is the same (or an equal) object. ``dumped`` counts the
    models dumped, for tests."""

    def __init__(self) -> None:
        self._parts: dict[str, tuple[ModelEntry, dict[str, str]]] = {}
        self.dumped = 0

    def _parts_of(self, m: ModelEntry) -> tuple[ModelEntry, dict[str, str]]:
        hit = self._parts.get(m.name)
        if hit is not None and (hit[0] is m or hit[0] == m):
            return hit
        self.dumped += 1
        return m, {t: _dump({"models": {m.name: d}}).split("\n", 1)[1]
                   for t, d in _model_docs(m).items()}

    def __call__(self, state: TierState) -> dict[str, str]:
        parts = {name: self._parts_of(state.models[name]) for name in sorted(state.models)}
        self._parts = parts  # only the models of this state stay cached
        out = {}
        for t in TIERS:
            body = "".join(p[1].get(t, "") for p in parts.values())
            out[t] = (f"{_HEADER}version: {SCHEMA}\ntier: {t}\n"
                      + ("models:\n" + body if body else "models: {}\n"))
        return out


def render(state: TierState) -> dict[str, str]:
    """The three files' text for a state (``Renderer`` keeps parts between calls)."""
    return Renderer()(state)


class _Doc:
    """One parsed manifest with a line number for every key path.

    Composed with libyaml when pyyaml has it, and each scalar built by one constructor: going
    through ``safe_load(serialize(node))`` for every scalar took ~2.7 s for 200 models, at
    every start and every reload."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.lines: dict[tuple[Any, ...], int] = {}
        self._construct = yaml.constructor.SafeConstructor()
        try:
            node = yaml.compose(text, Loader=_LOADER)
            self.empty = node is None  # no YAML document at all (blank or comments only)
            self.data = self._value(node, ()) if node is not None else {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise ManifestError(file, mark.line + 1 if mark else None, "(yaml)",
                                str(getattr(exc, "problem", None) or exc)) from None

    def _value(self, node: yaml.Node, path: tuple[Any, ...]) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for k, v in node.value:
                if not isinstance(k, yaml.ScalarNode):
                    self.fail(path, "keys must be plain values", k.start_mark.line + 1)
                key = self._construct.construct_object(k)
                if key in out:
                    self.fail((*path, key), "duplicate key", k.start_mark.line + 1)
                self.lines[(*path, key)] = k.start_mark.line + 1
                out[key] = self._value(v, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._value(v, (*path, i)) for i, v in enumerate(node.value)]
        return self._construct.construct_object(node)

    def fail(self, path: tuple[Any, ...], reason: str, line: int | None = None) -> Any:
        key = ".".join(str(p) for p in path) or "(top level)"
        raise ManifestError(self.file, line or self.lines.get(path), key, reason)


_VERSION_KEYS = set(VersionEntry.__dataclass_fields__)


def _check(doc: _Doc, path: tuple[Any, ...], value: Any, kind: type | tuple[type, ...],
           what: str, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        doc.fail(path, f"must be {what}, got {value!r}")
    return value


def _parse_version(doc: _Doc, p: tuple[Any, ...], d: Any) -> VersionEntry:
    if not isinstance(d, dict):
        doc.fail(p, "must be a mapping of version fields")
    for k in d:
        if k not in _VERSION_KEYS:
            doc.fail((*p, k), f"unknown key (known: {', '.join(sorted(_VERSION_KEYS))})")
    if "sha256" not in d or not is_sha256(str(d["sha256"])):
        doc.fail((*p, "sha256") if "sha256" in d else p, "must be 64 hex characters")
    if "artifact" in d and not is_sha256(str(d["artifact"])):
        doc.fail((*p, "artifact"), "must be 64 hex characters (the store's artifact id)")
    size = _check(doc, (*p, "size_bytes"), d.get("size_bytes"), int, "an integer")
    if size < 0:
        doc.fail((*p, "size_bytes"), "must not be negative")
    sig = d.get("signature") or {}
    specs: dict[str, tuple[TensorSpec, ...]] = {}
    for kind in ("inputs", "outputs"):
        items = []
        for i, t in enumerate(sig.get(kind) or []):
            tp = (*p, "signature", kind, i)
            if not isinstance(t, dict) or not isinstance(t.get("name"), str):
                doc.fail(tp, "must be {name, datatype, shape}")
            shape = t.get("shape") or []
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in shape):
                doc.fail((*tp, "shape"), "must be a list of integers (-1 for dynamic)")
            items.append(TensorSpec(t["name"], str(t.get("datatype", "")), tuple(shape)))
        specs[kind] = tuple(items)
    warm = d.get("warmup_shapes") or {}
    if not isinstance(warm, dict) or not all(
            isinstance(s, list) and all(isinstance(x, int) and x > 0 for x in s)
            for s in warm.values()):
        doc.fail((*p, "warmup_shapes"), "must map input names to lists of positive integers")
    variants: dict[str, VersionEntry] = {}
    raw_variants = d.get("variants") or {}
    if not isinstance(raw_variants, dict):
        doc.fail((*p, "variants"), "must map variant names to their fields")
    for vname, vd in raw_variants.items():
        vp = (*p, "variants", vname)
        if not isinstance(vname, str) or not VARIANT_NAME_RE.fullmatch(vname):
            doc.fail(vp, "a variant name is 1-31 characters of a-z, 0-9, '.', '_', '-'")
        if not isinstance(vd, dict):
            doc.fail(vp, "must be a mapping of variant fields")
        for k in vd:
            if k not in VARIANT_FIELDS:
                doc.fail((*vp, k), f"unknown key (known: {', '.join(VARIANT_FIELDS)})")
        variants[vname] = _parse_version(doc, vp, vd)
    serve = str(d.get("serve") or "")
    return VersionEntry(
        variants=variants, serve=serve,
        sha256=str(d["sha256"]), size_bytes=size,
        format=_check(doc, (*p, "format"), d.get("format", "onnx"), str, "onnx or tensorrt"),
        tasks=tuple(_check(doc, (*p, "tasks"), d.get("tasks") or [], list, "a list")),
        quality=float(_check(doc, (*p, "quality"), d.get("quality", 0.0), (int, float),
                             "a number")),
        providers=tuple(_check(doc, (*p, "providers"), d.get("providers") or [], list,
                               "a list")),
        precision=str(d.get("precision") or "fp32"), notes=str(d.get("notes") or ""),
        signature=Signature(specs["inputs"], specs["outputs"]),
        estimated_bytes=_check(doc, (*p, "estimated_bytes"), d.get("estimated_bytes", 0), int,
                               "an integer"),
        measured_bytes=_check(doc, (*p, "measured_bytes"), d.get("measured_bytes"), int,
                              "an integer or null", optional=True),
        load_seconds=_check(doc, (*p, "load_seconds"), d.get("load_seconds"), (int, float),
                            "a number or null", optional=True),
        installed_at=str(d.get("installed_at") or ""),
        warmup_shapes={str(k): tuple(v) for k, v in warm.items()},
        group=d.get("group") or None, engine_info=dict(d.get("engine_info") or {}),
        artifact=str(d.get("artifact") or ""),
        inherited=tuple(str(x) for x in _check(doc, (*p, "inherited"), d.get("inherited") or [],
                                               list, "a list of field names")),
        inherited_from=_check(doc, (*p, "inherited_from"), d.get("inherited_from", 0), int,
                              "an integer"))


def parse(files: Mapping[str, str], generation: int = 0,
          blob_exists: Callable[[str], bool] | None = None,
          tolerate: Tolerate | None = None) -> TierState:
    """Validate the three files' text into a state (raises ManifestError).

    A version whose artifact ``blob_exists`` does not find is an error unless ``tolerate``
    accepts it (then the caller reports it instead)."""
    models: dict[str, dict[str, Any]] = {}
    for tier in TIERS:
        fname = f"{tier}.yaml"
        doc = _Doc(fname, files.get(tier, ""))
        if tier in files and doc.empty:
            # edged never writes an empty file (an empty tier is `models: {}`): an empty one is
            # a truncated file or a slip of the editor, and reading it as "no models" would
            # drop every model of the tier at the next start (issue 14)
            raise ManifestError(fname, None, "(file)",
                                "the file is empty: a tier with no models is written "
                                "`models: {}`")
        data = doc.data or {}
        if not isinstance(data, dict):
            doc.fail((), "must be a mapping with version, tier and models")
        for k in data:
            if k not in ("version", "tier", "models"):
                doc.fail((k,), "unknown key (known: version, tier, models)")
        if data.get("version", SCHEMA) != SCHEMA:
            doc.fail(("version",), f"unsupported manifest version (this edged reads {SCHEMA})")
        if data.get("tier", tier) != tier:
            doc.fail(("tier",), f"this file is {fname}: tier must be {tier!r}")
        for name, m in (data.get("models") or {}).items():
            p = ("models", name)
            if not is_valid_name(name):
                doc.fail(p, "not a valid model name")
            if not isinstance(m, dict):
                doc.fail(p, "must be a mapping with active and versions")
            for k in m:
                if k not in ("active", "versions", "previous"):
                    doc.fail((*p, k), "unknown key (known: active, versions, previous)")
            slot = models.setdefault(name, {"tier": None, "active": None, "versions": {},
                                            "previous": None})
            if "active" in m:
                if slot["tier"] is not None:
                    doc.fail((*p, "active"), f"model is already active in {slot['tier']}.yaml")
                slot["tier"] = tier
                slot["active"] = _check(doc, (*p, "active"), m["active"], int, "a version")
                slot["previous"] = m.get("previous")
            elif tier != "storage":
                doc.fail(p, "needs an active version here (inactive versions belong in "
                            "storage.yaml)")
            for num, v in (m.get("versions") or {}).items():
                vp = (*p, "versions", num)
                if not isinstance(num, int) or isinstance(num, bool) or num < 1:
                    doc.fail(vp, "version numbers must be positive integers")
                if num in slot["versions"]:
                    doc.fail(vp, "version listed twice")
                entry = _parse_version(doc, vp, v)
                if entry.variant_name in entry.variants:
                    doc.fail((*vp, "variants", entry.variant_name),
                             "is the version's own precision: the version is that variant")
                if entry.serve and entry.serve not in entry.variant_names:
                    doc.fail((*vp, "serve"), f"no variant {entry.serve!r} (variants: "
                                             f"{', '.join(entry.variant_names)})")
                for where, x in [((), entry), *(((("variants", n)), w)
                                                for n, w in entry.variants.items())]:
                    if blob_exists is not None and not blob_exists(x.store_id) and not (
                            tolerate is not None and tolerate(name, num, x.store_id)):
                        doc.fail((*vp, *where, "artifact" if x.artifact else "sha256"),
                                 f"artifact {x.store_id[:12]} is not in the store")
                slot["versions"][num] = entry
            if "active" in m and slot["active"] not in slot["versions"]:
                doc.fail((*p, "active"), f"version {slot['active']} is not listed here")
    out = {}
    for name, s in models.items():
        if s["tier"] is None:
            raise ManifestError("storage.yaml", None, f"models.{name}",
                                "has versions but no active version in any tier")
        out[name] = ModelEntry(name, s["tier"], s["active"], dict(s["versions"]), s["previous"])
    return TierState(out, generation)


