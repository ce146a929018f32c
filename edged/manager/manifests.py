"""The tier manifests: ``ram.yaml``, ``swap.yaml``, ``storage.yaml`` — human-editable, validated.

They live in ``STATE/tiers``, a symlink to ``STATE/tiers.d/gen-NNNNNNNN/``. The daemon never
edits a generation in place: a change writes a new generation directory (every file fsynced),
then swaps the symlink with one ``rename`` — so every change to any tier (install, tier move,
activate, rollback, remove) is a single atomic switch, and a crash at any instant leaves the old
generation or the new one. Operators edit ``STATE/tiers/*.yaml`` and send SIGHUP: ``reload``
validates the files; an invalid edit raises ``ManifestError`` (file, line, key, reason) and the
in-memory state stays in force.

A model's *active* version is in the file of its tier (with ``active: N``); its other versions
are kept in ``storage.yaml`` for rollback.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from edged import errors as e
from edged.engines.base import Signature, TensorSpec
from edged.manager.names import MODEL_NAME_RE
from edged.manager.store import fsync_dir, is_sha256

TIERS = ("ram", "swap", "storage")
SCHEMA = 1
KEEP_GENERATIONS = 3
_GEN_RE = re.compile(r"^gen-(\d{8})$")


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


# -- YAML <-> entries ------------------------------------------------------------------------
def _version_yaml(v: VersionEntry) -> dict[str, Any]:
    sig = {kind: [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                  for t in getattr(v.signature, kind)] for kind in ("inputs", "outputs")}
    return {"sha256": v.sha256, "size_bytes": v.size_bytes, "format": v.format,
            "tasks": list(v.tasks), "quality": v.quality, "providers": list(v.providers),
            "precision": v.precision, "notes": v.notes, "signature": sig,
            "estimated_bytes": v.estimated_bytes, "measured_bytes": v.measured_bytes,
            "load_seconds": v.load_seconds, "installed_at": v.installed_at,
            "warmup_shapes": {k: list(s) for k, s in v.warmup_shapes.items()},
            "group": v.group, "engine_info": dict(v.engine_info)}


def render(state: TierState) -> dict[str, str]:
    """The three files' text for a state."""
    docs: dict[str, dict[str, Any]] = {t: {} for t in TIERS}
    for name in sorted(state.models):
        m = state.models[name]
        act = m.versions[m.active]
        entry: dict[str, Any] = {"active": m.active, "versions": {m.active: _version_yaml(act)}}
        if m.previous:
            entry["previous"] = m.previous
        docs[m.tier][name] = entry
        others = {n: _version_yaml(v) for n, v in sorted(m.versions.items()) if n != m.active}
        if others:
            if m.tier == "storage":
                docs["storage"][name]["versions"].update(others)
            else:
                docs["storage"][name] = {"versions": others}
    header = "# edged tier manifest: edit, then `systemctl reload edged` (SIGHUP) to apply.\n"
    return {t: header + yaml.safe_dump({"version": SCHEMA, "tier": t, "models": docs[t]},
                                       sort_keys=False, default_flow_style=None, width=100)
            for t in TIERS}


class _Doc:
    """One parsed manifest with a line number for every key path."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.lines: dict[tuple[Any, ...], int] = {}
        try:
            node = yaml.compose(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise ManifestError(file, mark.line + 1 if mark else None, "(yaml)",
                                str(getattr(exc, "problem", exc))) from None
        self.data = self._value(node, ()) if node is not None else {}

    def _value(self, node: yaml.Node, path: tuple[Any, ...]) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for k, v in node.value:
                key = yaml.safe_load(yaml.serialize(k))
                if key in out:
                    self.fail((*path, key), "duplicate key", k.start_mark.line + 1)
                self.lines[(*path, key)] = k.start_mark.line + 1
                out[key] = self._value(v, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._value(v, (*path, i)) for i, v in enumerate(node.value)]
        return yaml.safe_load(yaml.serialize(node))

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
    return VersionEntry(
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
        group=d.get("group") or None, engine_info=dict(d.get("engine_info") or {}))


def parse(files: Mapping[str, str], generation: int = 0,
          blob_exists: Callable[[str], bool] | None = None) -> TierState:
    """Validate the three files' text into a state (raises ManifestError)."""
    models: dict[str, dict[str, Any]] = {}
    for tier in TIERS:
        fname = f"{tier}.yaml"
        doc = _Doc(fname, files.get(tier, ""))
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
            if not isinstance(name, str) or not MODEL_NAME_RE.match(name):
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
                if blob_exists is not None and not blob_exists(entry.sha256):
                    doc.fail((*vp, "sha256"), f"artifact {entry.sha256[:12]} is not in the store")
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


class Manifests:
    def __init__(self, state_dir: Path, blob_exists: Callable[[str], bool] | None = None,
                 crash_hook: Callable[[str], None] | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.link = self.state_dir / "tiers"
        self.gens = self.state_dir / "tiers.d"
        self._blob_exists = blob_exists
        self.crash_hook = crash_hook
        self._current: TierState | None = None

    @property
    def current(self) -> TierState:
        if self._current is None:
            self._current = self.load()
        return self._current

    def _generation(self) -> int:
        try:
            target = os.readlink(self.link)
        except FileNotFoundError:
            return 0
        m = _GEN_RE.match(Path(target).name)
        return int(m.group(1)) if m else 0

    def _read(self) -> TierState:
        gen = self._generation()
        files = {t: (self.link / f"{t}.yaml").read_text() for t in TIERS
                 if (self.link / f"{t}.yaml").exists()}
        return parse(files, gen, self._blob_exists)

    def load(self) -> TierState:
        self.gens.mkdir(parents=True, exist_ok=True)
        if not self.link.exists():
            self._current = TierState({}, 0)
            self._current = self.commit(self._current)
        else:
            self._current = self._read()
        return self._current

    def reload(self) -> TierState:
        new = self._read()  # raises ManifestError; the old state stays in force
        self._current = new
        return new

    def _hook(self, point: str) -> None:
        if self.crash_hook is not None:
            self.crash_hook(point)

    def commit(self, new: TierState) -> TierState:
        gen = max(self._generation(), self._newest_gen()) + 1
        gdir = self.gens / f"gen-{gen:08d}"
        tmpdir = self.gens / f".tmp-gen-{gen:08d}"
        shutil.rmtree(tmpdir, ignore_errors=True)
        tmpdir.mkdir(parents=True)
        for tier, text in render(new).items():
            with (tmpdir / f"{tier}.yaml").open("w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        fsync_dir(tmpdir)
        os.rename(tmpdir, gdir)
        fsync_dir(self.gens)
        self._hook("manifests.after_gen_write")
        tmp_link = self.state_dir / ".tiers.tmp"
        tmp_link.unlink(missing_ok=True)
        os.symlink(os.path.join("tiers.d", gdir.name), tmp_link)
        self._hook("manifests.before_symlink_swap")
        os.replace(tmp_link, self.link)
        fsync_dir(self.state_dir)
        self._hook("manifests.after_symlink_swap")
        self._current = replace(new, generation=gen)
        self._prune(gen)
        return self._current

    def _newest_gen(self) -> int:
        nums = [int(m.group(1)) for p in self.gens.iterdir() if (m := _GEN_RE.match(p.name))]
        return max(nums, default=0)

    def _prune(self, current: int) -> None:
        for p in self.gens.iterdir():
            m = _GEN_RE.match(p.name)
            if p.name.startswith(".tmp-gen-") or (m and int(m.group(1)) <= current -
                                                  KEEP_GENERATIONS):
                shutil.rmtree(p, ignore_errors=True)
